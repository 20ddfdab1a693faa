use std::fmt;

use super::ValidationError;

/// The names of the tasks celeritas ships (`tasks/`): known to every coordinator, so they
/// need no route to be submitted.
pub const BUILTIN_TASK_NAMES: &[&str] = &[
    "cleanup_smtp_connections",
    "cleanup_stuck_campaigns",
    "emit_records",
    "fail",
    "fan_out",
    "import_contacts_async",
    "monitor_campaign_progress",
    "noop",
    "send_campaign",
    "send_email_batch",
    "send_single_email",
    "sleep",
    "test_celery",
    "validate_contact_batch",
];

/// Checks a name of 1 to `max` characters drawn from letters, digits and `allowed_punctuation`.
pub(super) fn parse_name(
    field: &str,
    text: &str,
    max: usize,
    allowed_punctuation: &[char],
    what: &str,
) -> Result<String, ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if text.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{what} is longer than {max} characters"),
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || allowed_punctuation.contains(c)))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "{what} {text:?} contains {bad:?}; use letters, digits and {}",
                allowed_punctuation
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(text.to_owned())
}

/// The name of a queue, such as `email`: 1 to 64 characters of letters, digits, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    /// Parses a queue name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        parse_name(field, text, 64, &['_', '-', '.'], "queue name").map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The registered name of a task, such as `send_campaign` or `apps.campaigns.tasks.send_campaign`:
/// 1 to 200 characters of letters, digits, `_`, `.`, `:`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName(String);

impl TaskName {
    /// Parses a task name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        parse_name(field, text, 200, &['_', '.', ':', '-'], "task name").map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_accept_the_seed_queues_and_refuse_spaces() {
        for name in ["import", "email", "campaigns", "default", "eu-west.email_2"] {
            assert_eq!(QueueName::parse("queue", name).unwrap().as_str(), name);
        }
        let error = QueueName::parse("tasks[2].queue", "my queue").unwrap_err();
        assert_eq!(error.field, "tasks[2].queue");
        assert!(error.message.contains("' '"), "{error}");
        assert!(QueueName::parse("queue", "").is_err());
        assert!(QueueName::parse("queue", &"q".repeat(65)).is_err());
    }

    #[test]
    fn task_names_accept_dotted_celery_style_names() {
        assert!(TaskName::parse("name", "apps.campaigns.tasks.send_campaign").is_ok());
        assert!(TaskName::parse("name", "send email").is_err());
        assert!(TaskName::parse("name", "émail").is_err());
    }
}
