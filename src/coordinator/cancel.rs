//! Cancelling tasks.
//!
//! Cancelling a task cancels its unfinished descendants too. A cancelled task is marked
//! cancelled in the store at once, so it never starts and any later
//! result for it is refused. If a worker holds it, the worker is told (directly when it is
//! connected here, through an announcement otherwise) and stops it; its place is freed when the
//! worker gives the lease back or reports the (refused) result.

use super::{Coordinator, CoordinatorError};
use crate::domain::{LeaseToken, TaskId, TaskRecord, ValidationError};
use crate::store::Announcement;

/// What a cancellation did: the task afterwards, and how many of its descendants it cancelled.
#[derive(Debug, Clone)]
pub struct Cancellation {
    /// The task; unchanged when it had already finished.
    pub task: TaskRecord,
    /// Unfinished descendants cancelled, the task itself not counted.
    pub descendants_cancelled: u64,
}

impl Coordinator {
    /// Cancels a task; `terminate` aborts it instead of asking it to stop. A task that already
    /// finished is returned unchanged.
    pub async fn cancel(
        &self,
        id: TaskId,
        terminate: bool,
    ) -> Result<Cancellation, CoordinatorError> {
        let cancelled = self
            .store
            .cancel(id, self.clock.now())
            .await?
            .ok_or_else(|| {
                CoordinatorError::NotFound(ValidationError::new("task_id", format!("no task {id}")))
            })?;
        // The store counts the task itself when it was still unfinished.
        let descendants_cancelled = cancelled
            .cancelled
            .saturating_sub(u64::from(!cancelled.previous.is_terminal()));
        for token in cancelled.leases {
            self.tell_holder_to_stop(token, terminate, "cancelled on request")
                .await;
        }
        let task = self.task(id).await?;
        self.dirty_trees.mark(task.root_id);
        self.waiters.wake(id);
        Ok(Cancellation {
            task,
            descendants_cancelled,
        })
    }

    /// Tells the worker holding `token` to stop its task: directly when its stream is here,
    /// through an announcement to the other coordinators otherwise. A worker that is not told
    /// has its result refused.
    pub(super) async fn tell_holder_to_stop(
        &self,
        token: LeaseToken,
        terminate: bool,
        reason: &str,
    ) {
        if self
            .sessions
            .tell_holder_to_cancel(token, terminate, reason)
            .await
        {
            return;
        }
        let announcement = Announcement::Cancel { token, terminate };
        if let Err(error) = self.store.announce(&announcement).await {
            tracing::warn!(%error, task = %token.task_id, "cannot tell other coordinators to stop a task; the worker's result will be refused");
        }
    }
}
