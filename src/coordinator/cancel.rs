//! Cancelling tasks, purging queues, and ending a stuck attempt from outside (requeue or fail).
//!
//! Cancelling a task cancels its unfinished descendants too. A cancelled task is marked
//! cancelled in the store at once, so it never starts and any later
//! result for it is refused. If a worker holds it, the worker is told (directly when it is
//! connected here, through an announcement otherwise) and stops it; its place is freed when the
//! worker gives the lease back or reports the (refused) result.

use super::{Coordinator, CoordinatorError};
use crate::domain::{
    LeaseToken, QueueName, TaskId, TaskQuery, TaskRecord, TaskState, ValidationError,
};
use crate::store::{Announcement, Interruption, TaskFilter};

/// The longest reason an operator may give for a requeue or a failure.
pub const MAX_REASON_CHARS: usize = 1_000;

/// The most tasks one answer lists with their args and results.
pub const MAX_LISTED_WITH_PAYLOADS: u32 = 100;

/// What to do with an attempt that is ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervention {
    /// Put the task back on its queue (a failed attempt that counts a retry).
    Requeue,
    /// Fail the task for good.
    Fail,
}

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
            if self
                .sessions
                .tell_holder_to_cancel(token, terminate, "cancelled on request")
                .await
            {
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
        Ok(Cancellation {
            task,
            descendants_cancelled,
        })
    }

    /// The tasks `query` asks for, longest quiet first; at most `MAX_LISTED_WITH_PAYLOADS`
    /// when their payloads are asked for.
    pub async fn list_tasks(&self, query: TaskQuery) -> Result<Vec<TaskRecord>, CoordinatorError> {
        let TaskQuery {
            root,
            names,
            states,
            quiet_for,
            limit,
            with_payloads,
        } = query;
        let states = if states.is_empty() {
            TaskState::ALL
                .into_iter()
                .filter(|state| !state.is_terminal())
                .collect()
        } else {
            states
        };
        let quiet_since = quiet_for
            .map(|quiet| {
                chrono::Duration::from_std(quiet)
                    .ok()
                    .and_then(|quiet| self.clock.now().checked_sub_signed(quiet))
                    .ok_or_else(|| ValidationError::new("quiet_for", "is too long"))
            })
            .transpose()?;
        let filter = TaskFilter {
            with_payloads,
            root,
            names,
            states,
            quiet_since,
            limit: if (1..=super::inspect::MAX_LISTED).contains(&limit) {
                if with_payloads {
                    limit.min(MAX_LISTED_WITH_PAYLOADS)
                } else {
                    limit
                }
            } else {
                return Err(ValidationError::new(
                    "limit",
                    format!("must be 1 to {}", super::inspect::MAX_LISTED),
                )
                .into());
            },
        };
        Ok(self.store.list_tasks(&filter).await?)
    }

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
        if !self
            .sessions
            .tell_holder_to_cancel(token, true, &told)
            .await
        {
            let announcement = Announcement::Cancel {
                token,
                terminate: true,
            };
            if let Err(error) = self.store.announce(&announcement).await {
                tracing::warn!(%error, task = %id, "cannot tell other coordinators to abort an attempt; its result will be refused");
            }
        }
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

    /// Cancels every pending and scheduled task of a queue; returns how many.
    pub async fn purge(&self, queue: &QueueName) -> Result<u64, CoordinatorError> {
        self.known_queue(queue)?;
        Ok(self.store.purge(queue, self.clock.now()).await?)
    }

    /// Refuses a queue the coordinator is not configured with.
    pub(super) fn known_queue(&self, queue: &QueueName) -> Result<(), CoordinatorError> {
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
        Ok(())
    }
}
