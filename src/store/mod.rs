//! Durable state behind one narrow interface shaped by what the coordinator does: insert, claim,
//! start, complete, release. Every method is one short transaction; none is held while a worker
//! runs a task. Methods take batches, because a commit is the expensive part.
//!
//! `postgres` is the implementation for production and for several coordinators on one database.

mod attempt_batch;
mod backend;
mod encoding;
mod fairness;
mod files;
mod governed;
mod leases;
mod paused_trees;
mod postgres;
mod queues;
mod rate_settings;
mod records;
mod row;
mod schedules;
mod sqlite;
mod statements;
mod tasks;
mod tokens;
mod trees;
mod types;
mod workers;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use uuid::Uuid;

use crate::domain::{
    FileChunk, FileId, FileInfo, Inserted, LeaseToken, NewFile, NewTask, QueueName, Schedule,
    StoredRecord, TaskId, TaskName, TaskRecord, TaskState, TokenName, TreeEvent, WorkerId,
    WorkerInfo, WorkerStats,
};

pub use attempt_batch::{AttemptBatch, Completion, ProgressWrite, RecordWrite, Resolution, Start};
pub use paused_trees::{TreePause, TreeResume};
pub use postgres::PostgresStore;
pub use queues::PausedQueue;
pub use rate_settings::RateLimitSet;
pub use sqlite::{OpenError, SqliteStore};
pub use tokens::StoredToken;
pub use types::{
    Adopted, Cancelled, Claim, Claimed, Interruption, LOST_ON_RECONNECT, PARKED_FOR, Parentage,
    Promoted, QueueCounts, RateBucket, Reaped, RecordQuery, TaskFilter, TreeUpdate,
    WorkerRegistration,
};

/// The embedded store's default file, for `celeritas dev`.
pub const DEFAULT_EMBEDDED_URL: &str = "sqlite://.celeritas/celeritas.db";

/// Opens the store a URL names: `sqlite://PATH` (or `sqlite:PATH`) for the embedded store,
/// `postgres://…` or `postgresql://…` for Postgres.
pub async fn open(url: &str, pool_size: u32) -> Result<std::sync::Arc<dyn Store>, OpenError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or(path);
        return Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    Ok(std::sync::Arc::new(PostgresStore::connect_lazy(
        url, pool_size,
    )?))
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, dropped the connection, or rolled the transaction back
    /// (a deadlock, a serialization failure): nothing was written, or the outcome is unknown.
    /// The caller may retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken database.
    #[error("database error: {0}")]
    Internal(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("cannot apply migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// The durable state of celeritas.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Brings the schema up to date.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Answers when the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Writes new tasks in one transaction, in order. A task whose idempotency key is already
    /// taken is not written; its entry names the existing task.
    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError>;

    /// One task, if it exists.
    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError>;

    /// The roots of the trees of the given tasks, and their groups; tasks that do not exist
    /// are missing.
    async fn roots(&self, ids: &[TaskId]) -> Result<HashMap<TaskId, Parentage>, StoreError>;

    /// Leases up to `claim.limit` pending tasks from the worker's queues: higher queue priority
    /// first, then higher task priority, then oldest. Tasks found expired on the way are marked
    /// expired and count against the limit.
    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError>;

    /// Makes scheduled tasks due by `now` pending, at most `limit` of them.
    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promoted, StoreError>;

    /// Records what running attempts reported, in one transaction and in this order: starts,
    /// progress, records, ends. Each is fenced by its lease (the task's current attempt, held
    /// by the reporting worker); stale reports change nothing. Returns, for each completion in
    /// order, whether it applied.
    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError>;

    /// Opens the tree of a running root (a no-op when it is open): its first event says the
    /// root is running.
    async fn open_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Brings a tree's events up to date (see `domain::plan_events`) and releases its callbacks
    /// whose parent and siblings have all finished. A root without a tree changes nothing.
    async fn update_tree(&self, root: TaskId, now: DateTime<Utc>)
    -> Result<TreeUpdate, StoreError>;

    /// Roots of trees that have not finished, oldest first.
    async fn unfinished_trees(&self, limit: u32) -> Result<Vec<TaskId>, StoreError>;

    /// A tree's events after `after`, at most `limit`; `None` when the root has no tree.
    async fn tree_events(
        &self,
        root: TaskId,
        after: u64,
        limit: u32,
    ) -> Result<Option<Vec<TreeEvent>>, StoreError>;

    /// A page of records, by ascending position, after `query.after`.
    async fn records(&self, query: &RecordQuery) -> Result<Vec<(i64, StoredRecord)>, StoreError>;

    /// The keys of a tree's records of one kind (and status).
    async fn recorded_keys(
        &self,
        root: TaskId,
        kind: &str,
        status: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;

    /// Records that a worker was heard from, with its latest counters.
    async fn worker_seen(
        &self,
        worker: &WorkerId,
        stats: Option<&WorkerStats>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Every worker that ever said hello, by id (queues without priorities; `connected` false).
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Tasks in a state, oldest first (by start for running tasks, by run time otherwise).
    async fn tasks_in_state(
        &self,
        state: TaskState,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError>;

    /// Unfinished tasks counted by queue and state, and each queue's oldest pending task's
    /// creation.
    async fn queue_counts(&self) -> Result<QueueCounts, StoreError>;

    /// Creates a schedule, or replaces the one with the same name (keeping when it last
    /// ticked).
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;

    /// Removes a schedule; false when there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError>;

    /// Pauses or resumes a schedule, setting its next tick; false when there is none.
    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Ticks a schedule, exactly once however many coordinators try: in one transaction, moves
    /// its next tick from `expected` to `next` (a compare-and-set) and submits `task`. False
    /// when another coordinator ticked it first (or it was paused or removed).
    async fn fire_schedule(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        task: Option<&NewTask>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// A setting of this database, such as the page token secret.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Makes the leased tasks pending again: unstarted work given back, or work lost with a
    /// worker's stream. Only leases still held through `session` are released, so a stream that
    /// was replaced cannot take back what the worker's new stream adopted. Returns how many were
    /// released.
    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError>;

    /// Moves a reconnecting worker's leases to its new stream `session`: of `held`, those still
    /// current and the worker's are kept and returned; every other lease the store shows the
    /// worker holding is given up, since the worker no longer has it: an unstarted one is
    /// pending again as it was, a running one is an attempt lost (a `worker_lost` failure at
    /// `now`, retried while it may be), so a task that kills its worker cannot run for ever
    /// however its worker is named when it comes back.
    async fn adopt_leases(
        &self,
        worker: &WorkerId,
        session: Uuid,
        held: &[LeaseToken],
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<Adopted, StoreError>;

    /// Extends the leases held through `sessions` to `now + ttl`, but a running lease never past
    /// its hard time limit plus `RUNNING_LEASE_MARGIN`. Returns how many were extended.
    async fn renew_leases(
        &self,
        sessions: &[Uuid],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<u64, StoreError>;

    /// Makes the leases held through `session` expire at `at`: the grace period of a worker
    /// whose stream broke.
    async fn expire_session_leases(
        &self,
        session: Uuid,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Settles up to `limit` leases that expired by `now`: an unstarted task becomes pending
    /// again; a running one past its hard time limit fails with `time_limit`; any other running
    /// one counts a `worker_lost` failure and is retried while it may be. Also marks tasks whose
    /// expiry passed before they started as expired.
    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError>;

    /// Ends the attempt `token` of a leased or running task as `interruption` says, recording the
    /// failure: requeued (pending again, counting a retry) while retries remain, failed
    /// otherwise. The task's new state, or `None` when the task is not leased or running on
    /// that attempt.
    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError>;

    /// Tasks matching `filter`, longest quiet first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError>;

    /// How many tasks match `filter` (its limit and payload choice aside).
    async fn count_tasks(&self, filter: &TaskFilter) -> Result<u64, StoreError>;

    /// Puts these tasks, those of them still failed, back on their queues at `now`, each
    /// counted as one more retry, reopening their finished trees; answers the roots of those
    /// retried (one per task retried).
    async fn retry_failed(
        &self,
        ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>, StoreError>;

    /// Cancels a task that has not finished. `None` when there is no such task.
    async fn cancel(&self, id: TaskId, now: DateTime<Utc>)
    -> Result<Option<Cancelled>, StoreError>;

    /// Cancels every pending or scheduled task of a queue; returns how many.
    async fn purge(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Pauses a queue: no claim leases its tasks from the commit on. False when it was paused
    /// already.
    async fn pause_queue(&self, paused: &PausedQueue) -> Result<bool, StoreError>;

    /// Resumes a paused queue; false when it was not paused.
    async fn resume_queue(&self, queue: &QueueName) -> Result<bool, StoreError>;

    /// The paused queues, by name.
    async fn paused_queues(&self) -> Result<Vec<PausedQueue>, StoreError>;

    /// Sets (or replaces) a rate limit of the API, and makes the unfinished tasks whose rate
    /// keys (or `task:<name>`) it covers governed.
    async fn set_rate_limit(
        &self,
        setting: &crate::domain::RateLimitSetting,
    ) -> Result<RateLimitSet, StoreError>;

    /// Removes a rate limit of the API; answers the rate it had, if there was one.
    async fn clear_rate_limit(&self, pattern: &str) -> Result<Option<String>, StoreError>;

    /// The rate limits set through the API, by pattern.
    async fn rate_limit_settings(&self)
    -> Result<Vec<crate::domain::RateLimitSetting>, StoreError>;

    /// Slows rate key `key` (limited at `configured`) after pushback: its share of the rate
    /// halves (at most once a second, down to 1/64), then climbs back over `recovery`. Answers
    /// the rate it runs at afterwards.
    async fn slow_down(
        &self,
        key: &str,
        configured: crate::domain::Rate,
        recovery: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<crate::domain::Rate, StoreError>;

    /// The rate buckets, by key: what `inspect rate_limits` shows.
    async fn rate_buckets(&self) -> Result<Vec<RateBucket>, StoreError>;

    /// Pauses the tree rooted at `root`: its waiting tasks are parked until it is resumed,
    /// children it gains meanwhile too; answers its running tasks, which the caller asks to
    /// stop.
    async fn pause_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<TreePause, StoreError>;

    /// Resumes a paused tree: its parked tasks wait for their own run times again.
    async fn resume_tree(&self, root: TaskId, now: DateTime<Utc>)
    -> Result<TreeResume, StoreError>;

    /// Records a worker's hello.
    async fn register_worker(&self, worker: &WorkerRegistration) -> Result<(), StoreError>;

    /// Whether any worker has ever said it runs this task name.
    async fn knows_task_name(&self, name: &TaskName) -> Result<bool, StoreError>;

    /// Tells the other coordinators on this database something (coalescing is the caller's).
    async fn announce(&self, announcement: &Announcement) -> Result<(), StoreError>;

    /// A subscription to announcements, or `None` for a store that only one coordinator uses.
    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError>;

    /// Starts a file's upload: a row that stays invisible to `file` and `file_chunks` until
    /// `complete_file`.
    async fn create_file(&self, file: &NewFile) -> Result<(), StoreError>;

    /// Writes `bytes` at `offset` of a file being uploaded; false when there is no such
    /// incomplete file (it was deleted, or has completed).
    async fn append_file_chunk(
        &self,
        id: FileId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<bool, StoreError>;

    /// Ends a file's upload, recording its size and SHA-256 digest (hex) at `at`; false when
    /// there is no such incomplete file or its chunks do not add up to `size`.
    async fn complete_file(
        &self,
        id: FileId,
        size: u64,
        sha256: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// A complete file, if there is one.
    async fn file(&self, id: FileId) -> Result<Option<FileInfo>, StoreError>;

    /// Up to `limit` of a complete file's stored chunks that end after `offset`, in order, the
    /// first cut to start at `offset`; empty past the end (or for no complete file).
    async fn file_chunks(
        &self,
        id: FileId,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<FileChunk>, StoreError>;

    /// Removes a file, complete or not, with its chunks; false when there was none.
    async fn delete_file(&self, id: FileId) -> Result<bool, StoreError>;

    /// Removes the files whose upload began before `started_before` and never completed (its
    /// coordinator died mid-upload), with their chunks; answers how many.
    async fn remove_abandoned_uploads(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Keeps a new API token (its digest); false when its name or digest is taken.
    async fn create_token(&self, token: &StoredToken) -> Result<bool, StoreError>;

    /// Every API token, revoked ones too, by name.
    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError>;

    /// Revokes a token; false when there is no such unrevoked token.
    async fn revoke_token(&self, name: &TokenName, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Binds `worker` to `credential` unless it is bound already (the first credential wins);
    /// answers the credential it is bound to, if any. `None` only checks.
    async fn bind_worker_credential(
        &self,
        worker: &WorkerId,
        credential: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;
}

/// What coordinators sharing a database tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Work became pending; `from` is the announcing coordinator, which ignores its own.
    Work {
        /// The announcing coordinator's id.
        from: String,
    },
    /// A leased task was cancelled: whoever holds the worker's stream tells the worker.
    Cancel {
        /// The cancelled lease.
        token: LeaseToken,
        /// Abort instead of asking the task to stop.
        terminate: bool,
    },
    /// A leased task's tree was paused: whoever holds the worker's stream asks it to stop.
    Pause {
        /// The lease.
        token: LeaseToken,
    },
}

/// Announcements from coordinators sharing a database.
#[async_trait]
pub trait AnnouncementListener: Send {
    /// The next announcement.
    async fn next(&mut self) -> Result<Announcement, StoreError>;
}

/// A margin added to the hard time limit for the lease of a running task, so the coordinator's
/// own deadline fires after the worker's.
pub const RUNNING_LEASE_MARGIN: Duration = Duration::from_secs(30);
