use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{JsonText, QueueName, TaskId, TaskName, ValidationError, WorkerId};

/// Where a task is in its life. A task ends in exactly one terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Ready to run, waiting for a worker with capacity.
    Pending,
    /// Waiting for its ETA or a retry's backoff.
    Scheduled,
    /// Handed to a worker that has not started it.
    Leased,
    /// Running on a worker.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error and no retry left.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Not started before its expiry.
    Expired,
    /// A callback waiting for its parent and the parent's children to finish.
    Waiting,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 9] = [
        TaskState::Pending,
        TaskState::Scheduled,
        TaskState::Waiting,
        TaskState::Leased,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Expired,
    ];

    /// The state's name, as stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Scheduled => "scheduled",
            TaskState::Leased => "leased",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
            TaskState::Waiting => "waiting",
        }
    }

    /// The state with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Whether the task has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Expired
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A task's priority within its queue, 0 to 255; higher runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Priority(u8);

impl Priority {
    /// Parses a priority; `field` names it in the error.
    pub fn parse(field: &str, value: u32) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .map(Self)
            .map_err(|_| ValidationError::new(field, format!("{value} is out of range 0 to 255")))
    }

    /// The priority as a number.
    pub fn value(&self) -> u8 {
        self.0
    }
}

/// How long a running attempt may take before it is asked to stop (soft) and aborted (hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// After this long the task is asked to stop and clean up.
    pub soft: Duration,
    /// After this long the task is aborted and the attempt fails.
    pub hard: Duration,
}

impl TimeLimits {
    /// Checks that both limits are positive and the soft one is not after the hard one.
    pub fn new(soft: Duration, hard: Duration, field: &str) -> Result<Self, ValidationError> {
        if soft.is_zero() {
            return Err(ValidationError::new(
                format!("{field}soft_time_limit"),
                "must be positive",
            ));
        }
        if hard.is_zero() {
            return Err(ValidationError::new(
                format!("{field}hard_time_limit"),
                "must be positive",
            ));
        }
        if soft > hard {
            return Err(ValidationError::new(
                format!("{field}soft_time_limit"),
                format!(
                    "{} is longer than the hard time limit {}",
                    humantime::format_duration(soft),
                    humantime::format_duration(hard)
                ),
            ));
        }
        Ok(Self { soft, hard })
    }
}

/// Exponential backoff with full jitter: retry `n` (counting from 0) waits a random time up to
/// `min(cap, base × 2ⁿ)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's ceiling.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retries_used`, given a uniform random number in [0, 1).
    pub fn delay(&self, retries_used: u32, unit_random: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(2u32.saturating_pow(retries_used.min(31)))
            .unwrap_or(self.cap)
            .min(self.cap);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }
}

/// A task ready to be written by the store, every default already applied.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Its id.
    pub id: TaskId,
    /// Its registered name.
    pub name: TaskName,
    /// The queue it goes on.
    pub queue: QueueName,
    /// Its priority in that queue.
    pub priority: Priority,
    /// Its arguments.
    pub args: JsonText,
    /// The earliest moment it may run.
    pub run_at: DateTime<Utc>,
    /// When it is never to start.
    pub expires_at: Option<DateTime<Utc>>,
    /// Retries allowed.
    pub max_retries: u32,
    /// Its time limits.
    pub time_limits: TimeLimits,
    /// The idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The task that submitted it.
    pub parent_id: Option<TaskId>,
    /// The root of its tree; its own id when it has no parent.
    pub root_id: TaskId,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// For a callback: the parent whose children it waits for.
    pub waits_for: Option<TaskId>,
    /// The credential that submitted it through the API (`token:NAME`, `certificate:NAME`), when
    /// the coordinator knows callers; a child's is its root's.
    pub submitted_by: Option<String>,
    /// Its rate keys and costs.
    pub rate_keys: super::RateKeys,
    /// Whether the governed claim leases it: a configured limit covers one of its keys (the
    /// claim takes its costs from their buckets), it has a group or a concurrency limit, or its
    /// tree is paused (the store decides that last one).
    pub governed: bool,
    /// Its fairness group.
    pub group_key: Option<super::GroupKey>,
    /// At most this many tasks of its name and group run at once.
    pub max_concurrency: Option<u32>,
    /// Its place in its queue's fair order, for a governed task; the store assigns it.
    pub fair_position: Option<i64>,
}

/// The outcome of inserting one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The task's id: the new one, or the existing task's for a repeated idempotency key.
    pub id: TaskId,
    /// False when the idempotency key matched an existing task.
    pub created: bool,
}

impl NewTask {
    /// The state it starts in: waiting for a callback, scheduled when it must wait for its
    /// time, pending otherwise.
    pub fn initial_state(&self) -> TaskState {
        if self.waits_for.is_some() {
            TaskState::Waiting
        } else if self.run_at > self.created_at {
            TaskState::Scheduled
        } else {
            TaskState::Pending
        }
    }
}

/// A failed attempt, as the worker reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short machine-readable kind.
    pub kind: String,
    /// A human-readable message.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// When the task asked to be retried, if it did.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// The failure of an attempt whose result no store can hold.
    pub fn invalid_result(error: &super::ValidationError) -> Self {
        Self {
            kind: "invalid_result".to_owned(),
            message: format!("the task's result cannot be stored: {error}"),
            retryable: false,
            retry_after: None,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded with this result.
    Succeeded(JsonText),
    /// It failed.
    Failed(Failure),
}

/// One failed attempt, as the task's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The attempt (lease number) that failed.
    pub attempt: u32,
    /// The worker it ran on.
    pub worker_id: Option<String>,
    /// The failure's kind.
    pub kind: String,
    /// The failure's message.
    pub message: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Everything the store knows about one task.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// Its registered name.
    pub name: TaskName,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// Its state.
    pub state: TaskState,
    /// Its arguments.
    pub args: JsonText,
    /// Its result, once succeeded.
    pub result: Option<JsonText>,
    /// The last failure's kind and message.
    pub error: Option<(String, String)>,
    /// Its lease number.
    pub attempt: u32,
    /// Retries used.
    pub retries: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// The earliest moment it may run.
    pub run_at: DateTime<Utc>,
    /// When its current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it expires if not started.
    pub expires_at: Option<DateTime<Utc>>,
    /// The worker holding, or last holding, its lease.
    pub worker_id: Option<WorkerId>,
    /// Its parent.
    pub parent_id: Option<TaskId>,
    /// The root of its tree.
    pub root_id: TaskId,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// Every failed attempt, oldest first.
    pub failures: Vec<AttemptFailure>,
    /// The last progress the task reported.
    pub progress: Option<super::ProgressReport>,
    /// The credential that submitted it through the API, when the coordinator knows callers.
    pub submitted_by: Option<String>,
    /// Its rate keys and costs.
    pub rate_keys: super::RateKeys,
    /// Its fairness group.
    pub group_key: Option<super::GroupKey>,
    /// Its concurrency limit.
    pub max_concurrency: Option<u32>,
    /// When its tree was paused, while it is.
    pub tree_paused_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::from_name("done"), None);
    }

    #[test]
    fn priority_refuses_values_over_255() {
        assert_eq!(Priority::parse("priority", 255).unwrap().value(), 255);
        let error = Priority::parse("tasks[1].priority", 256).unwrap_err();
        assert_eq!(error.field, "tasks[1].priority");
    }

    #[test]
    fn soft_limit_may_not_exceed_hard_limit() {
        let error =
            TimeLimits::new(Duration::from_secs(10), Duration::from_secs(5), "task.").unwrap_err();
        assert_eq!(error.field, "task.soft_time_limit");
        assert!(TimeLimits::new(Duration::from_secs(5), Duration::from_secs(5), "").is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        assert_eq!(policy.delay(0, 0.999_999).as_secs(), 0);
        assert_eq!(policy.delay(2, 1.0), Duration::from_secs(4));
        assert_eq!(policy.delay(10, 1.0), Duration::from_secs(10));
        assert_eq!(policy.delay(u32::MAX, 1.0), Duration::from_secs(10));
        assert_eq!(policy.delay(3, 0.0), Duration::ZERO);
    }
}
