//! Ending a stuck attempt from outside its worker: `RequeueTask` and `FailTask`. The attempt is
//! fenced by its number, recorded as failed with the operator's reason, and its worker told to
//! abort it the way a cancellation is.

use super::{Coordinator, CoordinatorError};
use crate::domain::{LeaseToken, TaskId, TaskRecord, TaskState, ValidationError};
use crate::store::Interruption;

/// The longest reason an operator may give for a requeue or a failure.
pub const MAX_REASON_CHARS: usize = 1_000;

/// What to do with an attempt that is ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervention {
    /// Put the task back on its queue (a failed attempt that counts a retry).
    Requeue,
    /// Fail the task for good.
    Fail,
}

impl Coordinator {
    /// Ends a leased or running task's attempt (`attempt`, or its current one): the worker is
    /// told to abort it, the attempt is recorded as failed with `reason`, and the task is
    /// requeued (while it has retries left) or failed as `intervention` says.
    pub async fn intervene(
        &self,
        id: TaskId,
        attempt: Option<u32>,
        intervention: Intervention,
        reason: &str,
    ) -> Result<TaskRecord, CoordinatorError> {
        if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ValidationError::new(
                "reason",
                format!("must be 1 to {MAX_REASON_CHARS} characters"),
            )
            .into());
        }
        crate::domain::check_text("reason", reason, usize::MAX)?;
        let task = self.task(id).await?;
        let attempt = attempt.unwrap_or(task.attempt);
        if !matches!(task.state, TaskState::Leased | TaskState::Running) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "task_id: task {id} is {}, not leased or running",
                task.state.as_str()
            )));
        }
        let token = LeaseToken {
            task_id: id,
            attempt,
        };
        let interruption = Interruption {
            requeue: intervention == Intervention::Requeue,
            kind: match intervention {
                Intervention::Requeue => "requeued",
                Intervention::Fail => "failed_by_request",
            }
            .to_owned(),
            message: reason.to_owned(),
        };
        let Some(state) = self
            .store
            .interrupt(token, &interruption, self.clock.now())
            .await?
        else {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "attempt: task {id} is not leased or running on attempt {attempt} any more"
            )));
        };
        tracing::info!(task = %id, attempt, state = state.as_str(), %reason, "ended an attempt from outside");
        let told = format!(
            "attempt ended from outside ({}): {reason}",
            interruption.kind
        );
        self.tell_holder_to_stop(token, true, &told).await;
        if state == TaskState::Pending {
            self.signal.wake();
            self.announce();
        }
        self.dirty_trees.mark(task.root_id);
        self.waiters.wake(id);
        // The task as the interruption left it: the dispatcher may lease it again at once.
        let mut task = self.task(id).await?;
        if task.attempt == attempt {
            return Ok(task);
        }
        task.state = state;
        Ok(task)
    }
}
