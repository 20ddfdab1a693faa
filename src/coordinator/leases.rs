//! Lease upkeep: this coordinator renews the leases of its live workers in one statement, and
//! (like every coordinator) settles leases that ran out: their worker vanished, their
//! coordinator died, or a task outlived its hard time limit. Renewal runs before reaping, so a
//! coordinator that was cut off from the store renews its own leases before it judges anyone's.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dispatcher::DispatcherSignal;
use super::sessions::Sessions;
use crate::clock::SharedClock;
use crate::store::{Store, StoreError};

/// The most leases one reaping statement settles.
const MAX_REAP: u32 = 1_000;

/// What lease upkeep works with.
pub struct LeaseKeeper {
    /// The connected workers.
    pub sessions: Arc<Sessions>,
    /// Where the leases are.
    pub store: Arc<dyn Store>,
    /// The time.
    pub clock: SharedClock,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// A worker silent for longer is not renewed for.
    pub liveness: Duration,
    /// How often to reap.
    pub reap_interval: Duration,
    /// Woken when tasks became pending again.
    pub signal: Arc<DispatcherSignal>,
    /// Called when tasks became pending again, for other coordinators.
    pub announce: Arc<dyn Fn() + Send + Sync>,
}

impl LeaseKeeper {
    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let renew_every = self.lease_ttl / 3;
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let renew_due = last_renewal.is_none_or(|at| at.elapsed() >= renew_every);
            match self.pass(renew_due).await {
                Ok(renewed) => {
                    if renewed {
                        last_renewal = Some(tokio::time::Instant::now());
                    }
                }
                Err(error) => tracing::warn!(%error, "lease upkeep failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.reap_interval) => {}
            }
        }
    }

    /// One pass: renew (when due), then reap. True when the renewal ran.
    async fn pass(&self, renew: bool) -> Result<bool, StoreError> {
        let now = self.clock.now();
        if renew {
            let live: Vec<uuid::Uuid> = self
                .sessions
                .snapshot()
                .iter()
                .filter(|session| session.silent_for() < self.liveness)
                .map(|session| session.id)
                .collect();
            self.store.renew_leases(&live, now, self.lease_ttl).await?;
        }
        loop {
            let reaped = self.store.reap(now, MAX_REAP).await?;
            metrics::counter!("celeritas_lease_expiries_total")
                .increment(reaped.requeued + reaped.failed);
            if reaped.requeued > 0 || reaped.failed > 0 || reaped.expired > 0 {
                tracing::info!(
                    requeued = reaped.requeued,
                    failed = reaped.failed,
                    expired = reaped.expired,
                    "settled expired leases and tasks"
                );
            }
            if reaped.requeued > 0 {
                self.signal.wake();
                (self.announce)();
            }
            if reaped.requeued + reaped.failed < u64::from(MAX_REAP)
                && reaped.expired < u64::from(MAX_REAP)
            {
                return Ok(renew);
            }
        }
    }
}
