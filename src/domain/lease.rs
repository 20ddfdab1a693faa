use std::fmt;

use super::{TaskId, ValidationError};

/// Identifies one lease of one task: the task and its attempt number.
///
/// Every lease of a task gets a new attempt number, so a worker holding an old token cannot
/// report on the attempt that replaced it: the store refuses any update whose token is not the
/// task's current one (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseToken {
    /// The leased task.
    pub task_id: TaskId,
    /// The lease number.
    pub attempt: u32,
}

impl LeaseToken {
    /// Parses a token from its parts; `field` names it in the error.
    pub fn parse(field: &str, task_id: &str, attempt: u32) -> Result<Self, ValidationError> {
        let task_id = TaskId::parse(&format!("{field}.task_id"), task_id)?;
        if attempt == 0 {
            return Err(ValidationError::new(
                format!("{field}.attempt"),
                "must be at least 1",
            ));
        }
        Ok(Self { task_id, attempt })
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}#{}", self.task_id, self.attempt)
    }
}
