//! What a client asks when it lists tasks or records, and the pages it gets back.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{QueueName, StoredRecord, TaskId, TaskName, TaskState};

/// Which tasks a bulk operation (retry, cancel) acts on; every criterion given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSelector {
    /// Only these names; any when empty.
    pub names: Vec<TaskName>,
    /// Only these queues; any when empty.
    pub queues: Vec<QueueName>,
    /// Only tasks of this tree.
    pub root: Option<TaskId>,
    /// Only these states; each operation has its own default and allowed set.
    pub states: Vec<TaskState>,
    /// Only tasks whose last failure is of one of these kinds; any when empty.
    pub error_kinds: Vec<String>,
    /// Submitted in this range.
    pub created: TimeRange,
    /// Finished in this range.
    pub finished: TimeRange,
}

impl TaskSelector {
    /// True when it names no criterion at all: it would select everything.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.queues.is_empty()
            && self.root.is_none()
            && self.states.is_empty()
            && self.error_kinds.is_empty()
            && self.created == TimeRange::default()
            && self.finished == TimeRange::default()
    }
}

/// What a bulk operation (retry, cancel) found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Tasks that matched when the call began.
    pub matched: u64,
    /// Tasks it changed (none for a dry run).
    pub changed: u64,
}

/// Moments from `after` (included) to `before` (excluded); either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// At or after this moment.
    pub after: Option<DateTime<Utc>>,
    /// Before this moment.
    pub before: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// The range cut off at `moment`: it ends there at the latest.
    pub fn ending_by(self, moment: DateTime<Utc>) -> Self {
        Self {
            after: self.after,
            before: Some(self.before.map_or(moment, |before| before.min(moment))),
        }
    }
}

/// Which tasks a listing answers (`ListTasks`, `Coordinator::list_tasks`); every filter given
/// must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks of this tree.
    pub root: Option<TaskId>,
    /// Only these names; any when empty.
    pub names: Vec<TaskName>,
    /// Only these states; the unfinished ones when empty.
    pub states: Vec<TaskState>,
    /// Only tasks that showed no sign of life (progress, start, submission) for this long.
    pub quiet_for: Option<Duration>,
    /// The most tasks to answer, 1 to 10,000.
    pub limit: u32,
    /// Also answer each task's args and result.
    pub with_payloads: bool,
}

/// Which records to list, as a client asks.
#[derive(Debug, Clone)]
pub struct RecordsRequest {
    /// The task.
    pub task: TaskId,
    /// The task's whole tree.
    pub whole_tree: bool,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// How many, 0 for the default.
    pub page_size: u32,
    /// Where to continue.
    pub page_token: Option<String>,
}

/// A page of records.
#[derive(Debug, Clone)]
pub struct RecordsPage {
    /// The records, oldest first.
    pub records: Vec<StoredRecord>,
    /// Where to continue, when there is more.
    pub next_page_token: Option<String>,
}
