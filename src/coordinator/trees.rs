//! Keeping trees' events up to date. Whatever changes a tree here (a child submitted, progress,
//! records, a task of the tree finishing) marks its root dirty; every quarter second the dirty
//! trees get their events written, so a stream sees at most a few updates a second however large
//! the fan-out. Every few seconds all unfinished trees are looked at too, which covers changes
//! made elsewhere (the reaper, another coordinator, a coordinator that died).
//!
//! Looking at a tree counts its tasks and records, which for a tree of a million records (an
//! import, a campaign) takes a quarter of a second of the database's time. So a tree is looked
//! at again only after ten times as long as its last look took (at most `MAX_PACE` later):
//! however large a tree, its events cost the database a tenth of its time at most, and the
//! other trees are not kept waiting behind it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dispatcher::DispatcherSignal;
use super::waiters::Waiters;
use crate::clock::SharedClock;
use crate::domain::TaskId;
use crate::store::Store;

/// How often dirty trees get their events.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Every this many flushes, every unfinished tree is looked at.
const SWEEP_EVERY: u32 = 12;
/// The most unfinished trees one sweep looks at.
const MAX_SWEEP: u32 = 1_000;
/// A look at a tree shorter than this does not hold back the next.
const PACE_FROM: Duration = Duration::from_millis(20);
/// The next look at a tree waits this many times as long as the last took…
const PACE_FACTOR: u32 = 10;
/// …but never longer than this.
const MAX_PACE: Duration = Duration::from_secs(5);

/// The trees changed since their last events.
#[derive(Debug, Default)]
pub struct DirtyTrees {
    roots: Mutex<HashSet<TaskId>>,
}

impl DirtyTrees {
    /// The tree of `root` changed.
    pub fn mark(&self, root: TaskId) {
        self.roots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(root);
    }

    fn take(&self) -> Vec<TaskId> {
        self.roots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .collect()
    }
}

/// Writes the events of changed trees.
pub struct TreeFlusher {
    /// The changed trees.
    pub dirty: Arc<DirtyTrees>,
    /// Where the trees are.
    pub store: Arc<dyn Store>,
    /// The time.
    pub clock: SharedClock,
    /// Streams waiting on trees.
    pub waiters: Arc<Waiters>,
    /// Woken when callbacks became pending.
    pub signal: Arc<DispatcherSignal>,
    /// Called when callbacks became pending, for other coordinators.
    pub announce: Arc<dyn Fn() + Send + Sync>,
}

impl TreeFlusher {
    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks: u32 = 0;
        // Trees whose last look took long, and when they may be looked at again.
        let mut paced: HashMap<TaskId, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
            }
            ticks = ticks.wrapping_add(1);
            let mut roots: HashSet<TaskId> = self.dirty.take().into_iter().collect();
            if ticks.is_multiple_of(SWEEP_EVERY) {
                match self.store.unfinished_trees(MAX_SWEEP).await {
                    Ok(unfinished) => roots.extend(unfinished),
                    Err(error) => tracing::warn!(%error, "cannot list unfinished trees"),
                }
            }
            let now = tokio::time::Instant::now();
            paced.retain(|_, until| *until > now);
            for root in roots {
                if paced.contains_key(&root) {
                    // Looked at a moment ago: its change waits for the next look.
                    self.dirty.mark(root);
                    continue;
                }
                let started = tokio::time::Instant::now();
                let updated = self.store.update_tree(root, self.clock.now()).await;
                let took = started.elapsed();
                if took >= PACE_FROM {
                    paced.insert(root, tokio::time::Instant::now() + pace_after(took));
                }
                match updated {
                    Ok(update) => {
                        if update.events > 0 {
                            self.waiters.wake(root);
                        }
                        if update.callbacks_released > 0 {
                            tracing::info!(%root, count = update.callbacks_released, "callbacks released");
                            self.signal.wake();
                            (self.announce)();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%root, %error, "cannot update a tree's events; retrying");
                        self.dirty.mark(root);
                    }
                }
            }
        }
    }
}

/// How long after a look that took `took` the tree is looked at again.
fn pace_after(took: Duration) -> Duration {
    took.saturating_mul(PACE_FACTOR).min(MAX_PACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_trees_are_looked_at_less_often_up_to_a_bound() {
        assert_eq!(
            pace_after(Duration::from_millis(25)),
            Duration::from_millis(250)
        );
        assert_eq!(
            pace_after(Duration::from_millis(250)),
            Duration::from_millis(2500)
        );
        assert_eq!(pace_after(Duration::from_secs(2)), MAX_PACE);
    }
}
