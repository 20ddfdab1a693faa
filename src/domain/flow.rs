//! Fairness and concurrency: the group a task belongs to (a tenant, a campaign) and how many
//! tasks of its name and group may run at once.
//!
//! Within a queue and priority, the governed claim serves groups in start-time fair order: a
//! group's next task starts where its previous one ended, or where the queue's service has
//! reached if that is later, so a group that arrives late waits behind no more than one task of
//! each group already waiting, and a group with a million tasks gets no more turns than one
//! with a hundred.

use super::ValidationError;

/// The longest group key, in bytes.
pub const MAX_GROUP_KEY_BYTES: usize = 200;
/// The largest `max_concurrency`.
pub const MAX_CONCURRENCY_LIMIT: u32 = 100_000;

/// A fairness group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(String);

impl GroupKey {
    /// Parses a group key: 1 to 200 bytes without control characters.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > MAX_GROUP_KEY_BYTES {
            return Err(ValidationError::new(
                field,
                format!("a group key must be 1 to {MAX_GROUP_KEY_BYTES} bytes"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "a group key holds no control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Parses a concurrency limit: 1 to `MAX_CONCURRENCY_LIMIT`.
pub fn parse_max_concurrency(field: &str, value: u32) -> Result<u32, ValidationError> {
    if value == 0 || value > MAX_CONCURRENCY_LIMIT {
        return Err(ValidationError::new(
            field,
            format!("{value} is not between 1 and {MAX_CONCURRENCY_LIMIT}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_are_bounded_printable_text() {
        assert_eq!(
            GroupKey::parse("group_key", "customer:42")
                .unwrap()
                .as_str(),
            "customer:42"
        );
        for bad in ["", "a\u{0}b", "tab\there"] {
            let error = GroupKey::parse("group_key", bad).unwrap_err();
            assert_eq!(error.field, "group_key", "{bad:?}");
        }
        assert!(GroupKey::parse("group_key", &"x".repeat(201)).is_err());
        assert!(GroupKey::parse("group_key", &"x".repeat(200)).is_ok());
    }

    #[test]
    fn concurrency_limits_are_positive_and_bounded() {
        assert_eq!(parse_max_concurrency("max_concurrency", 2).unwrap(), 2);
        assert!(parse_max_concurrency("max_concurrency", 0).is_err());
        assert!(parse_max_concurrency("max_concurrency", MAX_CONCURRENCY_LIMIT + 1).is_err());
    }
}
