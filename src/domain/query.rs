//! What a client asks when it lists tasks.

use std::time::Duration;

use super::{TaskId, TaskName, TaskState};

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
