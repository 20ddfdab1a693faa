//! What an operator does to a whole queue: purge it, pause it, resume it.
//!
//! A pause lives in the store, which every claim reads, so it holds on every coordinator from
//! its commit on and across restarts; tasks already leased or running are not touched and
//! finish. A resume wakes this coordinator's dispatcher and announces work to the others.

use chrono::{DateTime, Utc};

use super::{Coordinator, CoordinatorError};
use crate::domain::{Caller, QueueName};
use crate::store::PausedQueue;

/// A queue's pause as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePause {
    /// The queue.
    pub queue: QueueName,
    /// Whether this call changed anything (false: it was paused, or running, already).
    pub changed: bool,
    /// Since when it is paused; none once resumed.
    pub paused_at: Option<DateTime<Utc>>,
}

impl Coordinator {
    /// Cancels every pending and scheduled task of a queue; returns how many.
    pub async fn purge(&self, queue: &QueueName) -> Result<u64, CoordinatorError> {
        self.queue_priority("queue", queue)?;
        Ok(self.store.purge(queue, self.clock.now()).await?)
    }

    /// Pauses a configured queue: no worker gets a new lease from it until it is resumed.
    pub async fn pause_queue(
        &self,
        caller: &Caller,
        queue: &QueueName,
    ) -> Result<QueuePause, CoordinatorError> {
        self.queue_priority("queue", queue)?;
        let paused = PausedQueue {
            queue: queue.clone(),
            paused_at: self.clock.now(),
            paused_by: caller.identity().map(str::to_owned),
        };
        let changed = self.store.pause_queue(&paused).await?;
        let paused_at = self
            .store
            .paused_queues()
            .await?
            .into_iter()
            .find(|paused| &paused.queue == queue)
            .map(|paused| paused.paused_at);
        tracing::info!(queue = queue.as_str(), by = ?paused.paused_by, changed, "paused a queue");
        Ok(QueuePause {
            queue: queue.clone(),
            changed,
            paused_at,
        })
    }

    /// Resumes a paused queue: its pending tasks are leased again at once, by every
    /// coordinator.
    pub async fn resume_queue(
        &self,
        caller: &Caller,
        queue: &QueueName,
    ) -> Result<QueuePause, CoordinatorError> {
        self.queue_priority("queue", queue)?;
        let changed = self.store.resume_queue(queue).await?;
        if changed {
            self.signal.wake();
            self.announce();
        }
        tracing::info!(queue = queue.as_str(), by = ?caller.identity(), changed, "resumed a queue");
        Ok(QueuePause {
            queue: queue.clone(),
            changed,
            paused_at: None,
        })
    }
}
