use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::ValidationError;

/// Parses a UUID that identifies a `what` (a task id, a file id); `field` names it in the error.
pub(super) fn parse_uuid(field: &str, text: &str, what: &str) -> Result<Uuid, ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    Uuid::from_str(text).map_err(|_| {
        ValidationError::new(
            field,
            format!("{} is not a {what} (a UUID)", super::quoted(text)),
        )
    })
}

/// The identity of a task: a UUID, time-ordered (v7) when celeritas creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a client-supplied id; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        parse_uuid(field, text, "task id").map(Self)
    }

    /// The UUID behind the id.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// The identity of a worker process, chosen by the worker and kept across its reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(String);

impl WorkerId {
    /// The longest id accepted.
    pub const MAX_LENGTH: usize = 200;

    /// Parses a worker id: 1 to 200 printable characters without whitespace.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if text.chars().count() > Self::MAX_LENGTH {
            return Err(ValidationError::new(
                field,
                format!("is longer than {} characters", Self::MAX_LENGTH),
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                field,
                format!("{text:?} contains whitespace or control characters"),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_names_the_field_when_it_is_not_a_uuid() {
        let error = TaskId::parse("task_id", "42").unwrap_err();
        assert_eq!(error.field, "task_id");
        assert!(error.message.contains("UUID"), "{error}");
        assert_eq!(
            TaskId::parse("task_id", "").unwrap_err().message,
            "is required"
        );
    }

    #[test]
    fn generated_task_ids_are_time_ordered() {
        let first = TaskId::generate();
        let second = TaskId::generate();
        assert!(first < second);
    }

    #[test]
    fn worker_ids_refuse_whitespace_and_excess_length() {
        assert!(WorkerId::parse("worker_id", "w 1").is_err());
        assert!(WorkerId::parse("worker_id", &"w".repeat(201)).is_err());
        assert_eq!(
            WorkerId::parse("worker_id", "w@host:1").unwrap().as_str(),
            "w@host:1"
        );
    }
}
