//! The coordinator's small background loops: the store's health, and the announcements that
//! wake the dispatchers of other coordinators on the same database.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatcher::DispatcherSignal;
use super::sessions::Sessions;
use crate::store::{Announcement, Store};

/// How often the store's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a health check may take before the store counts as down.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before listening again after the listener failed.
const LISTEN_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Pings the store every second; the receiver shows whether the last ping answered.
pub fn spawn_health_watch(
    tracker: &TaskTracker,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tracker.spawn(async move {
        loop {
            let healthy = matches!(
                tokio::time::timeout(HEALTH_TIMEOUT, store.ping()).await,
                Ok(Ok(()))
            );
            sender.send_if_modified(|current| {
                if *current == healthy {
                    return false;
                }
                if healthy {
                    tracing::info!("the store is reachable: serving");
                } else {
                    tracing::warn!("the store is unreachable: not serving");
                }
                *current = healthy;
                true
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
        }
    });
    receiver
}

/// Sends one announcement per burst of `announcements` (they coalesce), off the path of the
/// writes that caused them, so a NOTIFY never serialises task commits.
pub fn spawn_announcer(
    tracker: &TaskTracker,
    store: Arc<dyn Store>,
    coordinator_id: String,
    announcements: Arc<Notify>,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = announcements.notified() => {}
            }
            let work = Announcement::Work {
                from: coordinator_id.clone(),
            };
            if let Err(error) = store.announce(&work).await {
                tracing::debug!(%error, "cannot announce work to other coordinators");
            }
        }
    });
}

/// Acts on other coordinators' announcements: wakes the dispatcher for work, and passes
/// cancellations to the workers connected here.
pub fn spawn_listener(
    tracker: &TaskTracker,
    store: Arc<dyn Store>,
    coordinator_id: String,
    signal: Arc<DispatcherSignal>,
    sessions: Arc<Sessions>,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        loop {
            let listener = tokio::select! {
                _ = stop.cancelled() => return,
                listener = store.listen() => listener,
            };
            match listener {
                Ok(None) => return,
                Ok(Some(mut listener)) => {
                    // Announcements made while not listening are lost: look once.
                    signal.wake();
                    loop {
                        let next = tokio::select! {
                            _ = stop.cancelled() => return,
                            next = listener.next() => next,
                        };
                        match next {
                            Ok(Announcement::Work { from }) => {
                                if from != coordinator_id {
                                    signal.wake();
                                }
                            }
                            Ok(Announcement::Cancel { token, terminate }) => {
                                sessions
                                    .tell_holder_to_cancel(token, terminate, "cancelled on request")
                                    .await;
                            }
                            Ok(Announcement::Pause { token }) => {
                                sessions.tell_holder_to_pause(token).await;
                            }
                            Err(error) => {
                                tracing::debug!(%error, "listening for work announcements failed");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot listen for work announcements"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LISTEN_RETRY_PAUSE) => {}
            }
        }
    });
}

/// How often the gauges of unfinished tasks are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// Refreshes the gauges: workers connected here, unfinished tasks by queue and state.
pub fn spawn_gauges(
    tracker: &TaskTracker,
    store: Arc<dyn Store>,
    sessions: Arc<Sessions>,
    stop: CancellationToken,
) {
    tracker.spawn(async move {
        let mut reported: std::collections::HashSet<(String, String)> = Default::default();
        loop {
            metrics::gauge!("celeritas_workers_connected").set(sessions.snapshot().len() as f64);
            if let Ok(counts) = store.queue_counts().await {
                let mut now_reported = std::collections::HashSet::new();
                for (queue, state, count) in counts.by_state {
                    metrics::gauge!("celeritas_tasks", "queue" => queue.clone(), "state" => state.clone())
                        .set(count as f64);
                    now_reported.insert((queue, state));
                }
                // A queue and state with nothing left reads zero, not its last value.
                for (queue, state) in reported.difference(&now_reported) {
                    metrics::gauge!("celeritas_tasks", "queue" => queue.clone(), "state" => state.clone())
                        .set(0.0);
                }
                reported = now_reported;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
            }
        }
    });
}
