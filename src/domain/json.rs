use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ValidationError;

/// The deepest nesting of arrays and objects accepted. Below the 128 levels at which serde_json
/// (the worker's parser) stops, so whatever is accepted reaches a task as it was sent.
pub const MAX_JSON_DEPTH: usize = 64;

/// JSON text that is known to parse and that every store can hold: as the client wrote it, or
/// serialised from a value that was checked (`checked_from_value`) or built from checked parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// Parses JSON text of at most `max_bytes` bytes; empty text means `{}`.
    pub fn parse(field: &str, text: &str, max_bytes: usize) -> Result<Self, ValidationError> {
        super::text::check_length(field, text, max_bytes)?;
        if text.trim().is_empty() {
            return Ok(Self::empty_object());
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Storable { depth: 0 }
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end())
            .map_err(|error| ValidationError::new(field, format!("is not valid JSON: {error}")))?;
        Ok(Self(text.to_owned()))
    }

    /// Serialises a value, refusing what `parse` refuses (a NUL character in a string, nesting
    /// deeper than `MAX_JSON_DEPTH`).
    pub fn checked_from_value(
        field: &str,
        value: &serde_json::Value,
    ) -> Result<Self, ValidationError> {
        storable_value(value, 0).map_err(|why| ValidationError::new(field, why))?;
        Ok(Self(value.to_string()))
    }

    /// `{}`.
    pub fn empty_object() -> Self {
        Self("{}".to_owned())
    }

    /// Serialises a value built from parts that were checked already (values that came out of
    /// `JsonText`, parsed names and numbers); anything else goes through `checked_from_value`.
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

/// Refuses in a built value what `Storable` refuses in text (a `Value`'s strings hold no lone
/// surrogates), without printing and parsing it again.
fn storable_value(value: &serde_json::Value, depth: usize) -> Result<(), String> {
    use serde_json::Value;
    let nested = || {
        if depth >= MAX_JSON_DEPTH {
            Err(format!("nested deeper than {MAX_JSON_DEPTH} levels"))
        } else {
            Ok(depth + 1)
        }
    };
    let text = |text: &str| {
        if text.contains('\0') {
            Err(
                "a string contains a NUL character (\\u0000), which the store cannot hold"
                    .to_owned(),
            )
        } else {
            Ok(())
        }
    };
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        Value::String(string) => text(string),
        Value::Array(items) => {
            let depth = nested()?;
            items
                .iter()
                .try_for_each(|item| storable_value(item, depth))
        }
        Value::Object(members) => {
            let depth = nested()?;
            members.iter().try_for_each(|(key, member)| {
                text(key)?;
                storable_value(member, depth)
            })
        }
    }
}

/// Walks JSON without building it, refusing what a store cannot hold: a NUL character in a
/// string or key (Postgres `jsonb` refuses `\u0000`), and nesting deeper than
/// `MAX_JSON_DEPTH`. serde_json itself refuses lone surrogates when it decodes a string.
struct Storable {
    depth: usize,
}

impl Storable {
    fn nested<E: serde::de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format!(
                "nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Storable {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Storable {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        if text.contains('\0') {
            return Err(E::custom(
                "a string contains a NUL character (\\u0000), which the store cannot hold",
            ));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let element = self.nested::<A::Error>()?;
        while seq
            .next_element_seed(Storable {
                depth: element.depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let member = self.nested::<A::Error>()?;
        while map
            .next_key_seed(Storable {
                depth: member.depth,
            })?
            .is_some()
        {
            map.next_value_seed(Storable {
                depth: member.depth,
            })?;
        }
        Ok(())
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
    fn refuses_what_a_store_cannot_hold() {
        let error = JsonText::parse("args_json", r#"{"to": "a\u0000b"}"#, 100).unwrap_err();
        assert!(error.message.contains("NUL"), "{error}");
        let error = JsonText::parse("args_json", r#"{"a\u0000": 1}"#, 100).unwrap_err();
        assert!(error.message.contains("NUL"), "{error}");
        // Lone surrogates: Postgres refuses them in jsonb, serde_json when it decodes.
        assert!(JsonText::parse("args_json", r#"["\ud800"]"#, 100).is_err());
        assert!(JsonText::parse("args_json", r#"["\udc00x"]"#, 100).is_err());
        assert!(JsonText::parse("args_json", r#"["\ud800\u0041"]"#, 100).is_err());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let error = JsonText::parse("args_json", &deep, usize::MAX).unwrap_err();
        assert!(error.message.contains("nested deeper"), "{error}");
        let fine = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        JsonText::parse("args_json", &fine, usize::MAX).unwrap();
        JsonText::parse(
            "args_json",
            r#"{"ok": ["\ud83d\ude00", 1.5e300, -1, null, true]}"#,
            100,
        )
        .unwrap();
        assert!(JsonText::parse("args_json", "[1] [2]", 100).is_err());
    }

    #[test]
    fn a_built_value_is_refused_as_its_text_would_be() {
        for text in [
            r#"{"to": "a\u0000b"}"#,
            r#"{"a\u0000": 1}"#,
            &format!(
                "{}{}",
                "[".repeat(MAX_JSON_DEPTH + 1),
                "]".repeat(MAX_JSON_DEPTH + 1)
            ),
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let from_value = JsonText::checked_from_value("result", &value).unwrap_err();
            let from_text = JsonText::parse("result", text, usize::MAX).unwrap_err();
            assert_eq!(from_value.field, "result");
            assert!(
                from_text.message.contains(&from_value.message),
                "{from_text} / {from_value}"
            );
        }
        let fine = serde_json::json!({"nested": [[{"ok": "yes"}]], "n": 1.5});
        assert_eq!(
            JsonText::checked_from_value("result", &fine)
                .unwrap()
                .to_value(),
            fine
        );
    }

    #[test]
    fn empty_text_means_an_empty_object() {
        assert_eq!(
            JsonText::parse("args_json", "  ", 10).unwrap().as_str(),
            "{}"
        );
    }
}
