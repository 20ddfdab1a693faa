//! Cancelling tasks and purging queues.
//!
//! Cancelling a task cancels its unfinished descendants too. A cancelled task is marked
//! cancelled in the store at once, so it never starts and any later
//! result for it is refused. If a worker holds it, the worker is told (directly when it is
//! connected here, through an announcement otherwise) and stops it; its place is freed when the
//! worker gives the lease back or reports the (refused) result.

use super::{Coordinator, CoordinatorError};
use crate::domain::{QueueName, TaskId, TaskRecord, ValidationError};
use crate::store::Announcement;

impl Coordinator {
    /// Cancels a task; `terminate` aborts it instead of asking it to stop. A task that already
    /// finished is returned unchanged.
    pub async fn cancel(
        &self,
        id: TaskId,
        terminate: bool,
    ) -> Result<TaskRecord, CoordinatorError> {
        let cancelled = self
            .store
            .cancel(id, self.clock.now())
            .await?
            .ok_or_else(|| {
                CoordinatorError::NotFound(ValidationError::new("task_id", format!("no task {id}")))
            })?;
        for token in cancelled.leases {
            if self.sessions.tell_holder_to_cancel(token, terminate).await {
                continue;
            }
            let announcement = Announcement::Cancel { token, terminate };
            if let Err(error) = self.store.announce(&announcement).await {
                tracing::warn!(%error, task = %token.task_id, "cannot tell other coordinators of a cancellation; the worker's result will be refused");
            }
        }
        let task = self.task(id).await?;
        self.dirty_trees.mark(task.root_id);
        self.waiters.wake(id);
        Ok(task)
    }

    /// Cancels every pending and scheduled task of a queue; returns how many.
    pub async fn purge(&self, queue: &QueueName) -> Result<u64, CoordinatorError> {
        if self.routing.queue_priority(queue).is_none() {
            return Err(ValidationError::new(
                "queue",
                format!(
                    "unknown queue {:?}; the coordinator has {}",
                    queue.as_str(),
                    self.queue_list()
                ),
            )
            .into());
        }
        Ok(self.store.purge(queue, self.clock.now()).await?)
    }
}
