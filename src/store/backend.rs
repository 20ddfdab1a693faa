//! What a database must supply to be a store, and the one `Store` built on it.
//!
//! A backend runs statements (`statements::Statements`, with values bound as `Param`s and rows
//! read through `row::Columns`), opens transactions, and brings the SQL that differs between
//! databases (`sqlx_database!` does the plumbing, the same for both). It also
//! does, its own way, what cannot be one statement text for both: inserting and claiming in
//! batches (`unnest` and `SKIP LOCKED` on Postgres, loops on SQLite), lease upkeep, attempts,
//! cancellation and announcements. Everything else (trees, records, schedules, workers, the
//! reads of tasks) is written once over those statements, in this module's siblings.

use std::collections::HashMap;
use std::ops::DerefMut;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::row::Columns;
use super::statements::Statements;
use super::{
    Adopted, Announcement, AnnouncementListener, AttemptBatch, Cancelled, Claim, Claimed,
    Interruption, Parentage, PausedQueue, Promoted, QueueCounts, RateBucket, Reaped, RecordQuery,
    Store, StoreError, StoredToken, TaskFilter, TreePause, TreeResume, TreeUpdate,
    WorkerRegistration, fairness, files, governed, leases, paused_trees, queues, rate_settings,
    records, schedules, tasks, tokens, trees, workers,
};
use crate::domain::{
    FileChunk, FileId, FileInfo, Inserted, LeaseToken, NewFile, NewTask, QueueName, Schedule,
    StoredRecord, TaskId, TaskName, TaskRecord, TaskState, TokenName, TreeEvent, WorkerId,
    WorkerInfo, WorkerStats,
};

/// The task reads whose SQL differs between databases.
pub(crate) struct TaskSql {
    /// The task `$1`, with every column `row::task_record` reads.
    pub task: &'static str,
    /// Tasks in state `$1`, by start (or run time) then submission, at most `$2`.
    pub in_state: &'static str,
    /// Makes at most `$2` scheduled tasks due by `$1` pending, earliest first, skipping rows
    /// another writer holds.
    pub promote_due: &'static str,
    /// Parks the pending tasks of tree `$1` (state `scheduled`, run time `PARKED_FOR` later).
    pub park_tree: &'static str,
    /// Brings back the parked tasks of tree `$1`: scheduled at `$2` or later, `PARKED_FOR`
    /// earlier.
    pub unpark_tree: &'static str,
    /// Parks the pending tasks, and the scheduled ones due by `$1`, whose tree is paused.
    pub park_due: &'static str,
}

/// The tree statements whose SQL differs between databases.
pub(crate) struct TreeSql {
    /// The tree of root `$1` (`last_seq, reported, finished_at`), locked for the update.
    pub read_for_update: &'static str,
    /// Makes pending, at `$2`, the waiting callbacks of tree `$1` whose parent and every other
    /// child of that parent have finished.
    pub release_callbacks: &'static str,
    /// Tree `$1`'s tasks by state: `state, count, done, total` (progress sums).
    pub count_tasks: &'static str,
    /// Tree `$1`'s latest non-empty progress message, as `progress_message`.
    pub latest_message: &'static str,
}

/// The record reads whose SQL differs between databases.
pub(crate) struct RecordSql {
    /// Records of task `$1` after position `$2`, of kind `$3` and status `$4` when given, at
    /// most `$5`, with every column `row::stored_record` reads.
    pub by_task: &'static str,
    /// The same for the tree rooted at `$1`.
    pub by_root: &'static str,
    /// The keys of tree `$1`'s records of kind `$2` (and status `$3`), by position.
    pub keys: &'static str,
}

/// The lease statements whose SQL differs between databases.
pub(crate) struct LeaseSql {
    /// Extends the leases held through sessions `$1` to `$2` plus `$3` ms, but a running lease
    /// never past its start plus its hard time limit plus `$4` ms.
    pub renew: &'static str,
    /// Makes the leases held through session `$1` expire by `$2`.
    pub expire_session: &'static str,
    /// Up to `$3` pending governed tasks of queue `$1` (unless it is paused) and name `$2`,
    /// in fair order (`id, priority, seq, fair_position, expires_at, rate_keys` as JSON text,
    /// `group_key, max_concurrency`), locked against other claims where the database locks
    /// rows.
    pub governed_candidates: &'static str,
    /// Takes the transaction's lock on concurrency key `$1` (answers `locked`).
    pub concurrency_lock: &'static str,
    /// The fair group of queue `$1` and key `$2` (`finish`), locked for the insert.
    pub fair_group_for_update: &'static str,
    /// Task `$1` (`id, root_id, state`), locked against inserts into its tree.
    pub lock_root: &'static str,
    /// Task `$1`, locked so that it cannot be paused until the transaction ends.
    pub lock_root_shared: &'static str,
    /// The rate bucket of key `$1` (`tokens, updated_at, factor, slowed_at`), locked for the
    /// claim.
    pub bucket_for_update: &'static str,
    /// Leases task `$1` to worker `$2` through session `$3` at `$4` until `$5`, answering
    /// the columns `row::lease_of` reads.
    pub lease_one: &'static str,
    /// Makes the pending and scheduled tasks not governed whose rate keys, or `task:<name>`,
    /// match `LIKE` pattern `$1` (escaped with `\`) governed.
    pub govern_matching: &'static str,
}

/// A database's connections, transactions and differing SQL.
#[async_trait]
pub(crate) trait Database: Send + Sync + 'static {
    /// A connection, which runs statements.
    type Connection: Statements + ?Sized;
    /// A connection taken from the pool.
    type Pooled: DerefMut<Target = Self::Connection> + Send;
    /// An open transaction; dropped without `commit`, it rolls back.
    type Transaction: DerefMut<Target = Self::Connection> + Send;

    /// Task reads.
    const TASKS: TaskSql;
    /// Tree statements.
    const TREES: TreeSql;
    /// Record reads.
    const RECORDS: RecordSql;
    /// Lease upkeep.
    const LEASES: LeaseSql;
    /// Whether any worker has said it runs task name `$1`, as `known`.
    const KNOWS_TASK_NAME: &'static str;

    /// Brings the schema up to date.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// A connection from the pool.
    async fn connection(&self) -> Result<Self::Pooled, StoreError>;

    /// Opens a transaction.
    async fn begin(&self) -> Result<Self::Transaction, StoreError>;

    /// Commits a transaction.
    async fn commit(transaction: Self::Transaction) -> Result<(), StoreError>;
}

/// A migration's outcome: a database that failed while applying it may only be unavailable.
pub(crate) fn migrated(
    result: Result<(), sqlx::migrate::MigrateError>,
    classify: fn(sqlx::Error) -> StoreError,
) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::Execute(error)) => Err(classify(error)),
        Err(error) => Err(error.into()),
    }
}

/// Tasks, each database its own way (see `Store` for what each does).
#[async_trait]
pub(crate) trait Tasks: Database {
    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError>;

    /// Inserts tasks inside an open transaction, as `insert_tasks` does.
    async fn insert_tasks_in(
        transaction: &mut Self::Transaction,
        tasks: &[NewTask],
    ) -> Result<Vec<Inserted>, StoreError>;

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError>;

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<u64, StoreError>;

    async fn cancel(&self, id: TaskId, now: DateTime<Utc>)
    -> Result<Option<Cancelled>, StoreError>;
}

/// Leases, each database its own way (see `Store` for what each does).
#[async_trait]
pub(crate) trait Leases: Database {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError>;

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError>;

    async fn adopt_leases(
        &self,
        worker: &WorkerId,
        session: Uuid,
        held: &[LeaseToken],
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<Adopted, StoreError>;

    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError>;

    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError>;
}

/// What running attempts report, each database its own way.
#[async_trait]
pub(crate) trait Attempts: Database {
    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError>;
}

/// Announcements between coordinators on one database.
#[async_trait]
pub(crate) trait Announcements: Database {
    async fn announce(&self, announcement: &Announcement) -> Result<(), StoreError>;

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError>;
}

/// Everything a database supplies to be a store.
pub(crate) trait Backend: Tasks + Leases + Attempts + Announcements {}

impl<B: Tasks + Leases + Attempts + Announcements> Backend for B {}

#[async_trait]
impl<B: Backend> Store for B {
    async fn migrate(&self) -> Result<(), StoreError> {
        Database::migrate(self).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.connection().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError> {
        // Only governed tasks and children need the insert's decisions (`fairness`).
        if !tasks
            .iter()
            .any(|task| task.governed || task.parent_id.is_some())
        {
            return Tasks::insert_tasks(self, tasks).await;
        }
        let mut transaction = self.begin().await?;
        let prepared = fairness::prepare::<Self>(&mut transaction, tasks).await?;
        let inserted = Self::insert_tasks_in(&mut transaction, &prepared).await?;
        Self::commit(transaction).await?;
        Ok(inserted)
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        tasks::task(self, id).await
    }

    async fn roots(&self, ids: &[TaskId]) -> Result<HashMap<TaskId, Parentage>, StoreError> {
        tasks::roots(self, ids).await
    }

    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError> {
        let mut claimed = Leases::claim(self, claim).await?;
        let room = claim.limit.saturating_sub(claimed.consumed());
        if room > 0 && claimed.governed_waiting != Some(false) {
            let limited =
                governed::claim_governed(self, claim, room, claimed.governed_waiting).await?;
            claimed.tasks.extend(limited.tasks);
            claimed.expired += limited.expired;
            claimed.limited_until = limited.limited_until;
        }
        Ok(claimed)
    }

    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promoted, StoreError> {
        tasks::promote_due(self, now, limit).await
    }

    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError> {
        Attempts::record_attempts(self, batch).await
    }

    async fn open_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<(), StoreError> {
        trees::open_tree(self, root, now).await
    }

    async fn update_tree(
        &self,
        root: TaskId,
        now: DateTime<Utc>,
    ) -> Result<TreeUpdate, StoreError> {
        trees::update_tree(self, root, now).await
    }

    async fn unfinished_trees(&self, limit: u32) -> Result<Vec<TaskId>, StoreError> {
        trees::unfinished_trees(self, limit).await
    }

    async fn tree_events(
        &self,
        root: TaskId,
        after: u64,
        limit: u32,
    ) -> Result<Option<Vec<TreeEvent>>, StoreError> {
        trees::tree_events(self, root, after, limit).await
    }

    async fn records(&self, query: &RecordQuery) -> Result<Vec<(i64, StoredRecord)>, StoreError> {
        records::records(self, query).await
    }

    async fn recorded_keys(
        &self,
        root: TaskId,
        kind: &str,
        status: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        records::recorded_keys(self, root, kind, status).await
    }

    async fn worker_seen(
        &self,
        worker: &WorkerId,
        stats: Option<&WorkerStats>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        workers::worker_seen(self, worker, stats, now).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        workers::workers(self).await
    }

    async fn tasks_in_state(
        &self,
        state: TaskState,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        tasks::tasks_in_state(self, state, limit).await
    }

    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        tasks::queue_counts(self).await
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        schedules::put_schedule(self, schedule).await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        schedules::schedules(self).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        schedules::delete_schedule(self, name).await
    }

    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedules::pause_schedule(self, name, paused, next_run_at).await
    }

    async fn fire_schedule(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        task: Option<&NewTask>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        schedules::fire_schedule(self, name, expected, next, task, now).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .connection()
            .await?
            .fetch_optional("SELECT value FROM settings WHERE key = $1", &[key.into()])
            .await?;
        row.map(|row| row.text("value"))
            .transpose()
            .map_err(StoreError::Internal)
    }

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError> {
        Leases::release(self, session, leases).await
    }

    async fn adopt_leases(
        &self,
        worker: &WorkerId,
        session: Uuid,
        held: &[LeaseToken],
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<Adopted, StoreError> {
        Leases::adopt_leases(self, worker, session, held, now, lease_expires_at).await
    }

    async fn renew_leases(
        &self,
        sessions: &[Uuid],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        leases::renew_leases(self, sessions, now, ttl).await
    }

    async fn expire_session_leases(
        &self,
        session: Uuid,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        leases::expire_session_leases(self, session, at).await
    }

    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError> {
        Leases::reap(self, now, limit).await
    }

    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError> {
        Leases::interrupt(self, token, interruption, now).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        Tasks::list_tasks(self, filter).await
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        Tasks::count_tasks(self, filter).await
    }

    async fn retry_failed(
        &self,
        ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>, StoreError> {
        tasks::retry_failed(self, ids, now).await
    }

    async fn cancel(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<Cancelled>, StoreError> {
        Tasks::cancel(self, id, now).await
    }

    async fn purge(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError> {
        tasks::purge(self, queue, now).await
    }

    async fn pause_queue(&self, paused: &PausedQueue) -> Result<bool, StoreError> {
        queues::pause_queue(self, paused).await
    }

    async fn resume_queue(&self, queue: &QueueName) -> Result<bool, StoreError> {
        queues::resume_queue(self, queue).await
    }

    async fn paused_queues(&self) -> Result<Vec<PausedQueue>, StoreError> {
        queues::paused_queues(self).await
    }

    async fn set_rate_limit(
        &self,
        setting: &crate::domain::RateLimitSetting,
    ) -> Result<super::RateLimitSet, StoreError> {
        rate_settings::set_rate_limit(self, setting).await
    }

    async fn clear_rate_limit(&self, pattern: &str) -> Result<Option<String>, StoreError> {
        rate_settings::clear_rate_limit(self, pattern).await
    }

    async fn rate_limit_settings(
        &self,
    ) -> Result<Vec<crate::domain::RateLimitSetting>, StoreError> {
        rate_settings::rate_limit_settings(self).await
    }

    async fn slow_down(
        &self,
        key: &str,
        configured: crate::domain::Rate,
        recovery: Duration,
        now: DateTime<Utc>,
    ) -> Result<crate::domain::Rate, StoreError> {
        governed::slow_down(self, key, configured, recovery, now).await
    }

    async fn rate_buckets(&self) -> Result<Vec<RateBucket>, StoreError> {
        governed::rate_buckets(self).await
    }

    async fn pause_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<TreePause, StoreError> {
        paused_trees::pause_tree(self, root, now).await
    }

    async fn resume_tree(
        &self,
        root: TaskId,
        now: DateTime<Utc>,
    ) -> Result<TreeResume, StoreError> {
        paused_trees::resume_tree(self, root, now).await
    }

    async fn register_worker(&self, worker: &WorkerRegistration) -> Result<(), StoreError> {
        workers::register_worker(self, worker).await
    }

    async fn knows_task_name(&self, name: &TaskName) -> Result<bool, StoreError> {
        workers::knows_task_name(self, name).await
    }

    async fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        Announcements::announce(self, announcement).await
    }

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError> {
        Announcements::listen(self).await
    }

    async fn create_file(&self, file: &NewFile) -> Result<(), StoreError> {
        files::create_file(self, file).await
    }

    async fn append_file_chunk(
        &self,
        id: FileId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        files::append_file_chunk(self, id, offset, bytes).await
    }

    async fn complete_file(
        &self,
        id: FileId,
        size: u64,
        sha256: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        files::complete_file(self, id, size, sha256, at).await
    }

    async fn file(&self, id: FileId) -> Result<Option<FileInfo>, StoreError> {
        files::file(self, id).await
    }

    async fn file_chunks(
        &self,
        id: FileId,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<FileChunk>, StoreError> {
        files::file_chunks(self, id, offset, limit).await
    }

    async fn delete_file(&self, id: FileId) -> Result<bool, StoreError> {
        files::delete_file(self, id).await
    }

    async fn remove_abandoned_uploads(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        files::remove_abandoned_uploads(self, started_before).await
    }

    async fn create_token(&self, token: &StoredToken) -> Result<bool, StoreError> {
        tokens::create_token(self, token).await
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        tokens::tokens(self).await
    }

    async fn revoke_token(&self, name: &TokenName, now: DateTime<Utc>) -> Result<bool, StoreError> {
        tokens::revoke_token(self, name, now).await
    }

    async fn bind_worker_credential(
        &self,
        worker: &WorkerId,
        credential: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        tokens::bind_worker_credential(self, worker, credential, now).await
    }
}
