//! What a client asks when it lists tasks or records, and the pages it gets back.

use std::time::Duration;

use super::{StoredRecord, TaskId, TaskName, TaskState};

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
