//! Keeping trees' events up to date. Whatever changes a tree here (a child submitted, progress,
//! records, a task of the tree finishing) marks its root dirty; every quarter second the dirty
//! trees get their events written, so a stream sees at most a few updates a second however large
//! the fan-out. Every few seconds all unfinished trees are looked at too, which covers changes
//! made elsewhere (the reaper, another coordinator, a coordinator that died).

use std::collections::HashSet;
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
            for root in roots {
                match self.store.update_tree(root, self.clock.now()).await {
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
