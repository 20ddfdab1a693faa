use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{GroupKey, JsonText, Priority, QueueName, RateKeys, TaskId, TaskName, ValidationError};

/// The most tasks one batch submission may carry.
pub const MAX_BATCH_SUBMIT: usize = 10_000;

/// The most retries a task may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 1000;

/// The longest idempotency key accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 256;

/// When a task may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// As soon as a worker is free.
    #[default]
    Now,
    /// This long after submission (Celery's countdown).
    After(Duration),
    /// At this moment (Celery's ETA); a moment in the past means now.
    At(DateTime<Utc>),
}

/// When a task that has not started is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiresAt {
    /// Never.
    #[default]
    Never,
    /// This long after submission.
    After(Duration),
    /// At this moment.
    At(DateTime<Utc>),
}

/// What a client asks to run, parsed; the coordinator applies routes and defaults.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The task's name.
    pub name: TaskName,
    /// Its arguments.
    pub args: JsonText,
    /// The queue, when the client names one.
    pub queue: Option<QueueName>,
    /// Its priority within the queue.
    pub priority: Priority,
    /// When it may first run.
    pub start: StartAt,
    /// When it is given up if not started.
    pub expires: ExpiresAt,
    /// Retries allowed, when the client overrides the policy.
    pub max_retries: Option<u32>,
    /// A key that makes a repeated submission return the first task.
    pub idempotency_key: Option<String>,
    /// The soft time limit, when the client overrides the policy.
    pub soft_time_limit: Option<Duration>,
    /// The hard time limit, when the client overrides the policy.
    pub hard_time_limit: Option<Duration>,
    /// The task that submitted this one.
    pub parent_id: Option<TaskId>,
    /// The rate keys it is limited by, with its cost for each.
    pub rate_keys: RateKeys,
    /// Its fairness group; a child without one takes its parent's.
    pub group_key: Option<GroupKey>,
    /// At most this many tasks of its name and group run at once.
    pub max_concurrency: Option<u32>,
}

impl TaskSpec {
    /// A spec with every option at its default.
    pub fn new(name: TaskName, args: JsonText) -> Self {
        Self {
            name,
            args,
            queue: None,
            priority: Priority::default(),
            start: StartAt::Now,
            expires: ExpiresAt::Never,
            max_retries: None,
            idempotency_key: None,
            soft_time_limit: None,
            hard_time_limit: None,
            parent_id: None,
            rate_keys: RateKeys::default(),
            group_key: None,
            max_concurrency: None,
        }
    }
}

/// Parses a retry count; `field` names it in the error.
pub fn parse_max_retries(field: &str, value: u32) -> Result<u32, ValidationError> {
    if value > MAX_RETRIES_LIMIT {
        return Err(ValidationError::new(
            field,
            format!("{value} is out of range 0 to {MAX_RETRIES_LIMIT}"),
        ));
    }
    Ok(value)
}

/// Parses an idempotency key; empty means none.
pub fn parse_idempotency_key(field: &str, text: &str) -> Result<Option<String>, ValidationError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_IDEMPOTENCY_KEY_LENGTH {
        return Err(ValidationError::new(
            field,
            format!("is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters"),
        ));
    }
    super::check_text(field, text, usize::MAX)?;
    Ok(Some(text.to_owned()))
}
