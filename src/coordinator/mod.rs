//! The coordinator: accepts tasks, grants leases to connected workers, records what they report.
//!
//! Invariants:
//! - All durable state is in the store. What is held here (sessions, credit, the dispatcher's
//!   next due time) is rebuilt from worker hellos and the store after a restart.
//! - Every background loop is spawned on the coordinator's `TaskTracker` and ends when its stop
//!   token fires (or, for the batchers, when the last handle is dropped after the queue drains).
//! - Nothing here knows the wire format; `grpc/` converts at the edge.

pub mod access;
mod background;
pub mod batcher;
mod beat;
mod bulk;
mod cancel;
pub mod dispatcher;
mod files;
pub(crate) mod inspect;
mod intervene;
mod leases;
mod progress;
mod queues;
mod rate_limits;
pub mod sessions;
mod submit;
mod tree_pause;
mod trees;
pub mod waiters;
pub mod worker_stream;

pub use cancel::Cancellation;
pub use files::{DownloadChunks, UploadHeader, UploadPart, UploadParts};
pub use inspect::{MAX_LISTED, MAX_LISTED_WITH_PAYLOADS};
pub use intervene::{Intervention, MAX_REASON_CHARS};
pub use queues::QueuePause;
pub use rate_limits::RateLimitChange;
pub use tree_pause::TreePaused;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::batcher::{Batcher, Isolation, Linger};
use self::dispatcher::{Dispatcher, DispatcherSignal};
use self::leases::LeaseKeeper;
use self::sessions::Sessions;
use self::trees::{DirtyTrees, TreeFlusher};
use self::waiters::Waiters;
use crate::clock::SharedClock;
use crate::config::{Config, CoordinatorSettings, FilesSettings, Routing};
use crate::domain::{
    ErrorKind, LeaseToken, QueueName, RequestError, TaskId, TaskName, TaskRecord, ValidationError,
};
use crate::store::{
    AttemptBatch, Completion, ProgressWrite, RecordWrite, Start, Store, StoreError,
};

/// The most items one start or completion statement writes.
const MAX_WRITE_BATCH: usize = 1024;
/// How long a task's start waits for its result, to be written with it in one commit. Short
/// enough that a longer task shows as running at once for any observer, long enough to cover
/// a no-op's round trip through the worker.
const START_LINGER: Duration = Duration::from_millis(5);
/// How long shutdown waits for background work to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What went wrong, in the terms a client is told.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request does not make sense; the error names the field.
    #[error("{0}")]
    Invalid(ValidationError),
    /// Something the request names does not exist; the error names the field.
    #[error("{0}")]
    NotFound(ValidationError),
    /// A position past the end of what the request reads (a file's offset); the error names
    /// the field.
    #[error("{0}")]
    OutOfRange(ValidationError),
    /// The request is valid but cannot be done in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller presented no token, or one the coordinator does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this; the message names the role it needs.
    #[error("{0}")]
    PermissionDenied(String),
    /// The store cannot be reached; the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken store; the detail is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordinatorError {
    /// The kind of failure a client is told this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordinatorError::Invalid(_) => ErrorKind::InvalidArgument,
            CoordinatorError::NotFound(_) => ErrorKind::NotFound,
            CoordinatorError::OutOfRange(_) => ErrorKind::OutOfRange,
            CoordinatorError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            CoordinatorError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            CoordinatorError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            CoordinatorError::Unavailable(_) => ErrorKind::Unavailable,
            CoordinatorError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// What a client or a worker is told: the error's own text, except for an internal error,
    /// whose detail is logged here and never shown.
    pub fn into_shown_message(self) -> String {
        match self {
            CoordinatorError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; the coordinator's log has the detail".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The same error, with its field seen from an enclosing message.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            CoordinatorError::Invalid(error) => CoordinatorError::Invalid(error.within(prefix)),
            CoordinatorError::NotFound(error) => CoordinatorError::NotFound(error.within(prefix)),
            CoordinatorError::OutOfRange(error) => {
                CoordinatorError::OutOfRange(error.within(prefix))
            }
            other => other,
        }
    }
}

/// A coordinator error as a task's request sees it: the store's troubles (and the coordinator's
/// own) are worth retrying, bad input is not.
impl From<CoordinatorError> for RequestError {
    fn from(error: CoordinatorError) -> Self {
        let retryable = matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::Internal);
        RequestError {
            message: error.into_shown_message(),
            retryable,
        }
    }
}

impl From<ValidationError> for CoordinatorError {
    fn from(error: ValidationError) -> Self {
        CoordinatorError::Invalid(error)
    }
}

impl From<StoreError> for CoordinatorError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => CoordinatorError::Unavailable(format!(
                "the database is unavailable ({cause}); retry, with an idempotency key to be safe"
            )),
            other => CoordinatorError::Internal(other.to_string()),
        }
    }
}

/// What running attempts report, written by the one attempts batcher so the writes never race
/// and a task's records always land before its result.
#[derive(Debug, Clone)]
pub enum AttemptUpdate {
    /// An attempt started.
    Started(Start),
    /// An attempt reported progress.
    Progress(ProgressWrite),
    /// An attempt emitted records.
    Records(RecordWrite),
    /// An attempt ended.
    Ended(Completion),
    /// An attempt whose result the store refused, recorded as failed instead; written even
    /// though the attempt's earlier writes failed.
    EndedInstead(Completion),
    /// Nothing to write: answers once everything queued before it is written.
    Barrier,
}

impl AttemptUpdate {
    /// The attempt the update belongs to: once one of its writes fails, its later ones fail
    /// too (a result never commits without the records before it).
    fn attempt(&self) -> Option<LeaseToken> {
        match self {
            AttemptUpdate::Started(start) => Some(start.token),
            AttemptUpdate::Progress(write) => Some(write.token),
            AttemptUpdate::Records(write) => Some(write.token),
            AttemptUpdate::Ended(completion) => Some(completion.token),
            AttemptUpdate::EndedInstead(_) | AttemptUpdate::Barrier => None,
        }
    }
}

/// Writes a batch of attempt updates; answers, per update, whether it applied (everything but
/// an end answers true: a stale start, progress or record changes nothing and is not worth
/// reporting).
async fn record_attempts(
    store: &dyn Store,
    updates: Vec<AttemptUpdate>,
) -> Result<Vec<bool>, StoreError> {
    let mut batch = AttemptBatch::default();
    let mut slots = Vec::with_capacity(updates.len());
    for update in updates {
        match update {
            AttemptUpdate::Started(start) => {
                batch.starts.push(start);
                slots.push(None);
            }
            AttemptUpdate::Progress(write) => {
                batch.progress.push(write);
                slots.push(None);
            }
            AttemptUpdate::Records(write) => {
                batch.records.push(write);
                slots.push(None);
            }
            AttemptUpdate::Ended(completion) | AttemptUpdate::EndedInstead(completion) => {
                slots.push(Some(batch.completions.len()));
                batch.completions.push(completion);
            }
            AttemptUpdate::Barrier => slots.push(None),
        }
    }
    // A start whose attempt also ended in this batch needs no write of its own: the completion
    // records the start moment too, under the same fence.
    if !batch.completions.is_empty() && !batch.starts.is_empty() {
        let ended: HashSet<LeaseToken> = batch
            .completions
            .iter()
            .map(|completion| completion.token)
            .collect();
        batch.starts.retain(|start| !ended.contains(&start.token));
    }
    let applied = store.record_attempts(&batch).await?;
    Ok(slots
        .into_iter()
        .map(|slot| slot.is_none_or(|index| applied.get(index).copied().unwrap_or(false)))
        .collect())
}

/// One coordinator process's shared state.
pub struct Coordinator {
    id: String,
    store: Arc<dyn Store>,
    routing: Routing,
    rate_limits: Arc<rate_limits::RateLimitBook>,
    settings: CoordinatorSettings,
    files: FilesSettings,
    clock: SharedClock,
    sessions: Arc<Sessions>,
    signal: Arc<DispatcherSignal>,
    attempts: Batcher<AttemptUpdate, bool>,
    announcements: Arc<Notify>,
    known_task_names: Mutex<HashSet<TaskName>>,
    healthy: watch::Receiver<bool>,
    waiters: Arc<Waiters>,
    dirty_trees: Arc<DirtyTrees>,
    page_secret: std::sync::OnceLock<String>,
    access: Arc<access::Access>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// The coordinator's background work, to stop it.
#[derive(Debug)]
pub struct Background {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    /// The token that stops everything.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The tracker the coordinator's background work runs on; `shutdown` waits for what is
    /// spawned on it.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Stops the loops and waits (bounded) for them and for open streams to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background work did not finish within the grace period");
        }
    }
}

impl Coordinator {
    /// Starts a coordinator on `store`: its dispatcher, batchers, health watch and the
    /// announcements between coordinators.
    pub fn start(
        store: Arc<dyn Store>,
        config: &Config,
        clock: SharedClock,
    ) -> Result<(Arc<Self>, Background), ValidationError> {
        let routing = config.routing()?;
        let rate_limits = Arc::new(rate_limits::RateLimitBook::new(config.rate_limits()?));
        let id = format!("coordinator-{}", uuid::Uuid::new_v4());
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let sessions = Arc::new(Sessions::default());
        let signal = Arc::new(DispatcherSignal::default());
        let announcements = Arc::new(Notify::new());

        let attempts = {
            let store = store.clone();
            Batcher::spawn(
                "attempts",
                MAX_WRITE_BATCH,
                Some(Linger {
                    at_most: START_LINGER,
                    may_linger: |update| matches!(update, AttemptUpdate::Started(_)),
                }),
                Isolation {
                    owner: AttemptUpdate::attempt,
                },
                &tracker,
                stop.clone(),
                move |updates: Vec<AttemptUpdate>| {
                    let store = store.clone();
                    async move { record_attempts(store.as_ref(), updates).await }
                },
            )
        };
        let healthy = background::spawn_health_watch(&tracker, store.clone(), stop.clone());
        background::spawn_announcer(
            &tracker,
            store.clone(),
            id.clone(),
            announcements.clone(),
            stop.clone(),
        );
        background::spawn_listener(
            &tracker,
            store.clone(),
            id.clone(),
            signal.clone(),
            sessions.clone(),
            stop.clone(),
        );
        let announce: Arc<dyn Fn() + Send + Sync> = {
            let announcements = announcements.clone();
            Arc::new(move || announcements.notify_one())
        };
        let dispatcher = Dispatcher {
            signal: signal.clone(),
            sessions: sessions.clone(),
            store: store.clone(),
            clock: clock.clone(),
            poll_interval: config.coordinator.poll_interval,
            lease_ttl: config.coordinator.lease_ttl,
            announce: announce.clone(),
            rate_limits: rate_limits.clone(),
        };
        tracker.spawn(dispatcher.run(stop.clone()));
        let keeper = LeaseKeeper {
            sessions: sessions.clone(),
            store: store.clone(),
            clock: clock.clone(),
            lease_ttl: config.coordinator.lease_ttl,
            liveness: config.coordinator.heartbeat_interval * worker_stream::MISSED_HEARTBEATS,
            reap_interval: config.coordinator.reap_interval,
            signal: signal.clone(),
            announce: announce.clone(),
        };
        tracker.spawn(keeper.run(stop.clone()));
        let waiters = Arc::new(Waiters::default());
        let dirty_trees = Arc::new(DirtyTrees::default());
        let flusher = TreeFlusher {
            dirty: dirty_trees.clone(),
            store: store.clone(),
            clock: clock.clone(),
            waiters: waiters.clone(),
            signal: signal.clone(),
            announce: announce.clone(),
        };
        tracker.spawn(flusher.run(stop.clone()));
        tracker.spawn(files::sweep_abandoned_uploads(
            store.clone(),
            clock.clone(),
            stop.clone(),
        ));
        if config.coordinator.metrics_listen.is_some() {
            background::spawn_gauges(&tracker, store.clone(), sessions.clone(), stop.clone());
        }

        rate_limits.spawn_refresh(&tracker, store.clone(), stop.clone());
        let access = Arc::new(access::Access::new(&config.auth)?);
        access.spawn_refresh(&tracker, store.clone(), stop.clone());
        let coordinator = Arc::new(Self {
            id,
            store,
            routing,
            rate_limits,
            settings: config.coordinator.clone(),
            files: config.files.clone(),
            clock,
            sessions,
            signal,
            attempts,
            announcements,
            known_task_names: Mutex::new(HashSet::new()),
            healthy,
            waiters,
            dirty_trees,
            page_secret: std::sync::OnceLock::new(),
            access,
            tracker: tracker.clone(),
            stop: stop.clone(),
        });
        tracker.spawn(coordinator.clone().run_beat(stop.clone()));
        Ok((coordinator, Background { tracker, stop }))
    }

    /// This coordinator's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who may call, and what.
    pub fn access(&self) -> &Arc<access::Access> {
        &self.access
    }

    /// The store this coordinator serves from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The coordinator's settings.
    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Whether the store answered its last health check.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Fires when the coordinator is stopping.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// One task.
    pub async fn task(&self, id: TaskId) -> Result<TaskRecord, CoordinatorError> {
        self.store.task(id).await?.ok_or_else(|| {
            CoordinatorError::NotFound(ValidationError::new("task_id", format!("no task {id}")))
        })
    }

    /// Serves a worker stream in the background; its replies arrive on the returned stream.
    pub fn spawn_worker_stream(
        self: &Arc<Self>,
        caller: crate::domain::Caller,
        inbound: worker_stream::Inbound,
    ) -> futures::stream::BoxStream<
        'static,
        Result<crate::domain::CoordinatorMessage, CoordinatorError>,
    > {
        use futures::StreamExt;
        // Room for a full batch of leases, their acknowledgements and control messages, so the
        // dispatcher never waits on a slow reader; what the leases weigh is bounded apart.
        let (outbound, receiver) = worker_stream::outbound_channel(2 * MAX_WRITE_BATCH + 64);
        let buffer = Arc::new(sessions::StreamBuffer::new(
            self.settings.max_stream_buffer_bytes,
        ));
        self.tracker.spawn(worker_stream::serve(
            self.clone(),
            caller,
            inbound,
            outbound,
            buffer.clone(),
        ));
        let signal = self.signal.clone();
        tokio_stream::wrappers::ReceiverStream::new(receiver)
            .inspect(move |reply| {
                if let Ok(crate::domain::CoordinatorMessage::Lease(lease)) = reply
                    && buffer.sent(lease)
                {
                    // The stream has room again: there may be work for its worker.
                    signal.wake();
                }
            })
            .boxed()
    }

    /// Runs `work` in the background until it ends; shutdown waits for it (bounded).
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work);
    }

    /// Tells other coordinators there is work (coalesced).
    fn announce(&self) {
        self.announcements.notify_one();
    }

    /// A configured queue's priority; INVALID_ARGUMENT naming `field` and the configured queues
    /// for any other queue.
    pub(super) fn queue_priority(
        &self,
        field: &str,
        queue: &QueueName,
    ) -> Result<u8, CoordinatorError> {
        self.routing.queue_priority(queue).ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "unknown queue {:?}; the coordinator has {}",
                    queue.as_str(),
                    self.queue_list()
                ),
            )
            .into()
        })
    }

    /// The configured queues, for error messages.
    fn queue_list(&self) -> String {
        self.routing
            .queues()
            .iter()
            .map(|(queue, _)| format!("{:?}", queue.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
