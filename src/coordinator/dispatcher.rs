//! Where leases are granted. One loop per coordinator: when woken (a submit, credit from a
//! worker, a settled lease, another coordinator's announcement) it claims work for every
//! connected worker with room, in one short statement per worker, and pushes the leases down
//! their streams. Polling is only a backstop, and the moment to promote ETA tasks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::sessions::Sessions;
use crate::clock::{SharedClock, after};
use crate::domain::WorkerId;
use crate::store::{Claim, Store, StoreError};

/// The most leases one claim statement hands out.
const MAX_CLAIM: u32 = 512;
/// The most scheduled tasks one promotion moves.
const MAX_PROMOTE: u32 = 5_000;
/// How long to wait after the store failed before trying again.
const STORE_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The handle others use to wake the dispatcher.
#[derive(Debug, Default)]
pub struct DispatcherSignal {
    wake: Notify,
    next_due: Mutex<Option<DateTime<Utc>>>,
}

impl DispatcherSignal {
    /// Something changed: look for work now. Wakes that arrive while a round runs are kept, so
    /// none is lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A scheduled task becomes due at `at`: promote it then.
    pub fn wake_at(&self, at: DateTime<Utc>) {
        let mut next_due = self
            .next_due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if next_due.is_none_or(|current| at < current) {
            *next_due = Some(at);
        }
        drop(next_due);
        self.wake();
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        *self
            .next_due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_next_due(&self, at: Option<DateTime<Utc>>) {
        *self
            .next_due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = at;
    }
}

/// What the dispatcher works with.
pub struct Dispatcher {
    /// Its wake-up handle.
    pub signal: Arc<DispatcherSignal>,
    /// The connected workers.
    pub sessions: Arc<Sessions>,
    /// Where the work is.
    pub store: Arc<dyn Store>,
    /// The time.
    pub clock: SharedClock,
    /// The backstop poll interval.
    pub poll_interval: Duration,
    /// How long a new lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Called when the dispatcher made work pending that other coordinators may serve.
    pub announce: Arc<dyn Fn() + Send + Sync>,
    /// The rate limits the claims of rate-limited tasks keep to.
    pub rate_limits: Arc<super::rate_limits::RateLimitBook>,
}

impl Dispatcher {
    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut next_poll = tokio::time::Instant::now();
        // Workers whose queues came up dry since the last wake: not asked again until one.
        let mut dry: HashSet<WorkerId> = HashSet::new();
        loop {
            let now = self.clock.now();
            let polling = tokio::time::Instant::now() >= next_poll;
            if polling || self.signal.next_due().is_some_and(|due| due <= now) {
                next_poll = tokio::time::Instant::now() + self.poll_interval;
                dry.clear();
                if let Err(error) = self.promote(now).await {
                    tracing::warn!(%error, "cannot promote scheduled tasks");
                    if pause_or_stop(&stop).await {
                        return;
                    }
                    continue;
                }
            }
            let busy = match self.dispatch_round(&mut dry).await {
                Ok(busy) => busy,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim work");
                    if pause_or_stop(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            if busy {
                // A worker got a full batch: there may be more right away.
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            let until_due = self
                .signal
                .next_due()
                .map(|due| (due - self.clock.now()).to_std().unwrap_or(Duration::ZERO));
            let sleep_until = match until_due {
                Some(until_due) => next_poll.min(tokio::time::Instant::now() + until_due),
                None => next_poll,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.signal.wake.notified() => dry.clear(),
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
    }

    /// Makes due scheduled tasks pending and remembers when the next is due.
    async fn promote(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        loop {
            let promoted = self.store.promote_due(now, MAX_PROMOTE).await?;
            self.signal.set_next_due(promoted.next_due);
            if promoted.count > 0 {
                (self.announce)();
            }
            if promoted.count < u64::from(MAX_PROMOTE) {
                return Ok(());
            }
        }
    }

    /// Claims work for every worker with room. True when some worker's claim came back full.
    async fn dispatch_round(&self, dry: &mut HashSet<WorkerId>) -> Result<bool, StoreError> {
        let mut busy = false;
        for session in self.sessions.snapshot() {
            if dry.contains(session.worker()) {
                continue;
            }
            let wanted = session.available().min(MAX_CLAIM);
            if wanted == 0 {
                continue;
            }
            let now = self.clock.now();
            let claimed = self
                .store
                .claim(&Claim {
                    worker: session.worker().clone(),
                    session: session.id,
                    queues: session.queues.clone(),
                    names: session.hello.task_names.clone(),
                    limit: wanted,
                    now,
                    lease_expires_at: after(now, self.lease_ttl),
                    rate_limits: self.rate_limits.current(),
                })
                .await?;
            if let Some(at) = claimed.limited_until {
                // Rate-limited work waits for its buckets to refill: look again then.
                self.signal.wake_at(at);
            }
            if claimed.expired > 0 {
                tracing::info!(
                    count = claimed.expired,
                    "tasks expired before they could start"
                );
            }
            if claimed.consumed() < wanted {
                dry.insert(session.worker().clone());
            } else {
                busy = true;
            }
            if claimed.tasks.is_empty() {
                continue;
            }
            tracing::debug!(worker = %session.worker(), count = claimed.tasks.len(), "leasing");
            let undelivered = session.deliver(claimed.tasks);
            if !undelivered.is_empty() {
                tracing::info!(
                    worker = %session.worker(),
                    count = undelivered.len(),
                    "worker stream is gone; releasing its new leases"
                );
                self.store.release(session.id, &undelivered).await?;
            }
        }
        Ok(busy)
    }
}

/// Waits a moment after a store failure; true when the coordinator is stopping.
async fn pause_or_stop(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(STORE_RETRY_PAUSE) => false,
    }
}
