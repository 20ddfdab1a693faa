use std::fmt;

use super::ValidationError;

/// JSON text that is known to parse, kept as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// Parses JSON text of at most `max_bytes` bytes; empty text means `{}`.
    pub fn parse(field: &str, text: &str, max_bytes: usize) -> Result<Self, ValidationError> {
        if text.len() > max_bytes {
            return Err(ValidationError::new(
                field,
                format!(
                    "is {} bytes, more than the limit of {max_bytes} bytes",
                    text.len()
                ),
            ));
        }
        if text.trim().is_empty() {
            return Ok(Self::empty_object());
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|error| ValidationError::new(field, format!("is not valid JSON: {error}")))?;
        Ok(Self(text.to_owned()))
    }

    /// `{}`.
    pub fn empty_object() -> Self {
        Self("{}".to_owned())
    }

    /// Serialises a value that is known to be JSON.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(value.to_string())
    }

    /// Trusts text that came out of the store, which only ever holds parsed JSON.
    pub fn from_trusted(text: String) -> Self {
        Self(text)
    }

    /// The JSON as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON as a value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The text, consumed.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_text_that_is_not_json_and_names_the_field() {
        let error = JsonText::parse("task.args_json", "{not json", 100).unwrap_err();
        assert_eq!(error.field, "task.args_json");
        assert!(error.message.contains("not valid JSON"), "{error}");
    }

    #[test]
    fn refuses_text_over_the_limit() {
        let error = JsonText::parse("args_json", "[1,2,3]", 3).unwrap_err();
        assert!(error.message.contains("limit of 3 bytes"), "{error}");
    }

    #[test]
    fn empty_text_means_an_empty_object() {
        assert_eq!(
            JsonText::parse("args_json", "  ", 10).unwrap().as_str(),
            "{}"
        );
    }
}
