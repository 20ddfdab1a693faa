//! The embedded store: one SQLite file, for `celeritas dev` and single-machine setups.
//!
//! It behaves as the Postgres store does for everything one coordinator does. The differences
//! are in how, not what: batches are loops inside one transaction (SQLite's statements run in
//! process; the commit is the cost), and one connection serialises every writer, so nothing
//! needs `SKIP LOCKED`. A second coordinator on the same file is refused: the store holds an
//! exclusive lock on `<file>.lock` for its lifetime.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::encoding::{
    RootRow, aggregate_from_json, aggregate_of, aggregate_to_json, count, duration_from_millis,
    failures_of, millis, progress_of, reported_from_json, reported_to_json,
    schedule_task_from_json, schedule_task_to_json, timing_columns, timing_of,
    worker_stats_from_json, worker_stats_to_json,
};
use super::{
    Adopted, Announcement, AnnouncementListener, AttemptBatch, Cancelled, Claim, Claimed,
    Completion, Interruption, LOST_ON_RECONNECT, Promoted, QueueCounts, RUNNING_LEASE_MARGIN,
    Reaped, RecordQuery, Resolution, Store, StoreError, TaskFilter, TreeUpdate, WorkerRegistration,
};
use crate::domain::{
    Inserted, JsonText, Lease, LeaseToken, NewTask, Observed, Priority, ProgressReport, QueueName,
    RecordEntry, StoredRecord, TaskId, TaskName, TaskRecord, TaskState, TimeLimits, TreeEvent,
    WorkerId, WorkerInfo, WorkerStats, event_from_json, event_to_json, opening, plan_events,
};
use crate::domain::{Schedule, ScheduleSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The columns `lease_of` reads.
const LEASE_COLUMNS: &str = "id, attempt, name, queue, priority, args, retries, max_retries, \
     soft_time_limit_ms, hard_time_limit_ms, expires_at, parent_id, root_id, run_at";

/// The embedded store on one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Held for the store's lifetime: the lock that keeps a second coordinator out.
    _lock: File,
}

/// Why the embedded store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the file.
    #[error(
        "another celeritas coordinator is using {0}; the embedded store serves one coordinator \
         (run several on Postgres)"
    )]
    InUse(PathBuf),
    /// The file or its directory cannot be used.
    #[error("cannot open the embedded store at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, refusing if another process has it open.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(directory) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(directory).map_err(io_error)?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse(path.to_owned()));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk, as Postgres' synchronous commit does.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|error| OpenError::Store(classify(error)))?;
        Ok(Self {
            pool,
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(error)
        }
        // SQLITE_BUSY and SQLITE_LOCKED pass when tried again.
        sqlx::Error::Database(database)
            if database
                .code()
                .is_some_and(|code| code == "5" || code == "6") =>
        {
            StoreError::Unavailable(error)
        }
        _ => StoreError::Internal(error),
    }
}

fn micros(moment: DateTime<Utc>) -> i64 {
    moment.timestamp_micros()
}

fn moment(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn decode_error(column: &str, text: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {text:?}").into(),
    }
}

fn task_id(row: &SqliteRow, column: &str) -> Result<TaskId, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::from_str(&text)
        .map(TaskId::from)
        .map_err(|_| decode_error(column, &text))
}

fn optional_task_id(row: &SqliteRow, column: &str) -> Result<Option<TaskId>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        Uuid::from_str(&text)
            .map(TaskId::from)
            .map_err(|_| decode_error(column, &text))
    })
    .transpose()
}

fn optional_moment(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(moment))
}

fn lease_of(row: &SqliteRow) -> Result<Lease, sqlx::Error> {
    let name: String = row.try_get("name")?;
    let queue: String = row.try_get("queue")?;
    let priority: i64 = row.try_get("priority")?;
    Ok(Lease {
        token: LeaseToken {
            task_id: task_id(row, "id")?,
            attempt: count(row.try_get::<i64, _>("attempt")?),
        },
        name: TaskName::parse("name", &name).map_err(|_| decode_error("name", &name))?,
        queue: QueueName::parse("queue", &queue).map_err(|_| decode_error("queue", &queue))?,
        priority: Priority::parse("priority", u32::try_from(priority).unwrap_or(0))
            .unwrap_or_default(),
        args: JsonText::from_trusted(row.try_get("args")?),
        retries: count(row.try_get::<i64, _>("retries")?),
        max_retries: count(row.try_get::<i64, _>("max_retries")?),
        time_limits: TimeLimits {
            soft: duration_from_millis(row.try_get("soft_time_limit_ms")?),
            hard: duration_from_millis(row.try_get("hard_time_limit_ms")?),
        },
        expires_at: optional_moment(row, "expires_at")?,
        parent_id: optional_task_id(row, "parent_id")?,
        root_id: task_id(row, "root_id")?,
        run_at: moment(row.try_get("run_at")?),
    })
}

fn task_record(row: &SqliteRow) -> Result<TaskRecord, sqlx::Error> {
    let lease = lease_of(row)?;
    let state: String = row.try_get("state")?;
    let error_kind: Option<String> = row.try_get("error_kind")?;
    let error_message: Option<String> = row.try_get("error_message")?;
    Ok(TaskRecord {
        id: lease.token.task_id,
        name: lease.name,
        queue: lease.queue,
        priority: lease.priority,
        state: TaskState::from_name(&state).ok_or_else(|| decode_error("state", &state))?,
        args: lease.args,
        result: row
            .try_get::<Option<String>, _>("result")?
            .map(JsonText::from_trusted),
        error: error_kind.map(|kind| (kind, error_message.unwrap_or_default())),
        attempt: lease.token.attempt,
        retries: lease.retries,
        max_retries: lease.max_retries,
        created_at: moment(row.try_get("created_at")?),
        run_at: moment(row.try_get("run_at")?),
        started_at: optional_moment(row, "started_at")?,
        finished_at: optional_moment(row, "finished_at")?,
        expires_at: lease.expires_at,
        worker_id: row
            .try_get::<Option<String>, _>("worker_id")?
            .and_then(|id| WorkerId::parse("worker_id", &id).ok()),
        parent_id: lease.parent_id,
        root_id: lease.root_id,
        idempotency_key: row.try_get("idempotency_key")?,
        failures: failures_of(&row.try_get::<String, _>("failures")?),
        progress: progress_of(
            row.try_get("progress_done")?,
            row.try_get("progress_total")?,
            row.try_get("progress_message")?,
        ),
    })
}

/// Appends a failure to a task's history, in the JSON shape the Postgres store writes.
const APPEND_FAILURE: &str = "json_insert(failures, '$[#]', json_object('attempt', attempt, \
     'worker_id', worker_id, 'kind', ?, 'message', ?, 'at', ?))";

async fn begin(pool: &SqlitePool) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
    pool.begin().await.map_err(classify)
}

/// Ends a leased or running task's attempt with a recorded failure `(kind, message)`: back to
/// pending counting a retry (`requeue`), or failed for good.
async fn end_attempt(
    transaction: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &str,
    requeue: bool,
    (kind, message): (&str, &str),
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql = if requeue {
        format!(
            "UPDATE tasks SET {REQUEUE}, retries = retries + 1, error_kind = ?, \
                 error_message = ?, failures = {APPEND_FAILURE} WHERE id = ?"
        )
    } else {
        format!(
            "UPDATE tasks SET state = 'failed', session_id = NULL, leased_at = NULL, \
                 lease_expires_at = NULL, finished_at = {}, error_kind = ?, \
                 error_message = ?, failures = {APPEND_FAILURE} WHERE id = ?",
            micros(now)
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind)
        .bind(message)
        .bind(kind)
        .bind(message)
        .bind(now.to_rfc3339())
        .bind(id)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Sets the lease columns of a task that goes back to pending.
const REQUEUE: &str = "state = 'pending', session_id = NULL, leased_at = NULL, lease_expires_at = NULL, started_at = NULL";

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        match MIGRATOR.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(error)) => Err(classify(error)),
            Err(error) => Err(error.into()),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let inserted = insert_tasks_in(&mut transaction, tasks).await?;
        transaction.commit().await.map_err(classify)?;
        Ok(inserted)
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref()
            .map(task_record)
            .transpose()
            .map_err(StoreError::Internal)
    }

    async fn roots(&self, ids: &[TaskId]) -> Result<HashMap<TaskId, TaskId>, StoreError> {
        let mut roots = HashMap::new();
        for id in ids {
            let root: Option<String> = sqlx::query_scalar("SELECT root_id FROM tasks WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
            if let Some(root) = root {
                let root = Uuid::from_str(&root)
                    .map_err(|_| StoreError::Internal(decode_error("root_id", &root)))?;
                roots.insert(*id, root.into());
            }
        }
        Ok(roots)
    }

    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() {
            return Ok(Claimed::default());
        }
        let mut transaction = begin(&self.pool).await?;
        // Each queue offers its best `limit`; the best `limit` of those are taken.
        let mut candidates: Vec<((u8, i64, std::cmp::Reverse<i64>), String, Option<i64>)> =
            Vec::new();
        for (queue, queue_priority) in &claim.queues {
            let rows = sqlx::query(
                "SELECT seq, id, priority, expires_at FROM tasks \
                 WHERE state = 'pending' AND queue = ? ORDER BY priority DESC, seq LIMIT ?",
            )
            .bind(queue.as_str())
            .bind(i64::from(claim.limit))
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
            for row in rows {
                let order = (
                    *queue_priority,
                    row.try_get::<i64, _>("priority")
                        .map_err(StoreError::Internal)?,
                    std::cmp::Reverse(row.try_get::<i64, _>("seq").map_err(StoreError::Internal)?),
                );
                candidates.push((
                    order,
                    row.try_get("id").map_err(StoreError::Internal)?,
                    row.try_get("expires_at").map_err(StoreError::Internal)?,
                ));
            }
        }
        candidates.sort_by_key(|(order, _, _)| std::cmp::Reverse(*order));
        candidates.truncate(claim.limit as usize);
        let now = micros(claim.now);
        let mut claimed = Claimed::default();
        for (_, id, expires_at) in candidates {
            if expires_at.is_some_and(|expires_at| expires_at <= now) {
                sqlx::query("UPDATE tasks SET state = 'expired', finished_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(classify)?;
                claimed.expired += 1;
                continue;
            }
            let sql = format!(
                "UPDATE tasks SET state = 'leased', attempt = attempt + 1, worker_id = ?, \
                     session_id = ?, leased_at = ?, lease_expires_at = ? \
                 WHERE id = ? RETURNING {LEASE_COLUMNS}"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(claim.worker.as_str())
                .bind(claim.session.to_string())
                .bind(now)
                .bind(micros(claim.lease_expires_at))
                .bind(&id)
                .fetch_one(&mut *transaction)
                .await
                .map_err(classify)?;
            claimed
                .tasks
                .push(lease_of(&row).map_err(StoreError::Internal)?);
        }
        transaction.commit().await.map_err(classify)?;
        Ok(claimed)
    }

    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promoted, StoreError> {
        let count = sqlx::query(
            "UPDATE tasks SET state = 'pending' WHERE seq IN ( \
                 SELECT seq FROM tasks WHERE state = 'scheduled' AND run_at <= ? \
                 ORDER BY run_at LIMIT ?)",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        let next_due: Option<i64> =
            sqlx::query_scalar("SELECT min(run_at) FROM tasks WHERE state = 'scheduled'")
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(Promoted {
            count,
            next_due: next_due.map(moment),
        })
    }

    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        for start in &batch.starts {
            sqlx::query(
                "UPDATE tasks SET state = 'running', started_at = ?, lease_expires_at = ? \
                 WHERE id = ? AND attempt = ? AND worker_id = ? AND state = 'leased'",
            )
            .bind(micros(start.at))
            .bind(micros(start.lease_expires_at))
            .bind(start.token.task_id.to_string())
            .bind(i64::from(start.token.attempt))
            .bind(start.worker.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        for write in batch.latest_progress() {
            sqlx::query(
                "UPDATE tasks SET progress_done = ?, progress_total = ?, progress_message = ?, \
                     progress_at = ? \
                 WHERE id = ? AND attempt = ? AND worker_id = ? \
                     AND state IN ('leased', 'running')",
            )
            .bind(i64::try_from(write.report.done).unwrap_or(i64::MAX))
            .bind(i64::try_from(write.report.total).unwrap_or(i64::MAX))
            .bind(&write.report.message)
            .bind(micros(write.at))
            .bind(write.token.task_id.to_string())
            .bind(i64::from(write.token.attempt))
            .bind(write.worker.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        for write in &batch.records {
            for record in &write.records {
                sqlx::query(
                    "INSERT INTO task_records (root_id, task_id, kind, key, status, data, \
                         created_at, updated_at) \
                     SELECT root_id, id, ?, ?, ?, ?, ?, ? FROM tasks \
                     WHERE id = ? AND attempt = ? AND worker_id = ? \
                         AND state IN ('leased', 'running') \
                     ON CONFLICT (root_id, kind, key) DO UPDATE SET status = excluded.status, \
                         data = excluded.data, task_id = excluded.task_id, \
                         updated_at = excluded.updated_at",
                )
                .bind(&record.kind)
                .bind(&record.key)
                .bind(&record.status)
                .bind(record.data.as_ref().map(JsonText::as_str))
                .bind(micros(write.at))
                .bind(micros(write.at))
                .bind(write.token.task_id.to_string())
                .bind(i64::from(write.token.attempt))
                .bind(write.worker.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
        }
        let mut applied = Vec::with_capacity(batch.completions.len());
        for completion in &batch.completions {
            applied.push(complete(&mut transaction, completion).await?);
        }
        transaction.commit().await.map_err(classify)?;
        Ok(applied)
    }

    async fn open_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (event, reported) = opening(root);
        let mut transaction = begin(&self.pool).await?;
        let opened = sqlx::query(
            "INSERT INTO task_trees (root_id, last_seq, reported, created_at) VALUES (?, 1, ?, ?) \
             ON CONFLICT (root_id) DO NOTHING",
        )
        .bind(root.to_string())
        .bind(reported_to_json(&reported).to_string())
        .bind(micros(now))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        if opened == 1 {
            sqlx::query(
                "INSERT INTO task_events (root_id, seq, at, event, aggregate) VALUES (?, 1, ?, ?, ?)",
            )
            .bind(root.to_string())
            .bind(micros(now))
            .bind(event_to_json(&event).to_string())
            .bind(aggregate_to_json(&reported.aggregate).to_string())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn update_tree(
        &self,
        root: TaskId,
        now: DateTime<Utc>,
    ) -> Result<TreeUpdate, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let tree: Option<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT last_seq, reported, finished_at FROM task_trees WHERE root_id = ?",
        )
        .bind(root.to_string())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(classify)?;
        let Some((last_seq, reported, finished_at)) = tree else {
            return Ok(TreeUpdate::default());
        };
        if finished_at.is_some() {
            return Ok(TreeUpdate::default());
        }
        let callbacks_released = sqlx::query(
            "UPDATE tasks SET state = 'pending', run_at = ? \
             WHERE root_id = ? AND state = 'waiting' \
               AND EXISTS (SELECT 1 FROM tasks p WHERE p.id = tasks.waits_for \
                   AND p.state IN ('succeeded', 'failed', 'cancelled', 'expired')) \
               AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = tasks.waits_for \
                   AND c.id <> tasks.id \
                   AND c.state IN ('pending', 'scheduled', 'leased', 'running', 'waiting'))",
        )
        .bind(micros(now))
        .bind(root.to_string())
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        let Some(observed) = observe_tree(&mut transaction, root).await? else {
            return Ok(TreeUpdate::default());
        };
        let reported: serde_json::Value = serde_json::from_str(&reported).unwrap_or_default();
        let plan = plan_events(&reported_from_json(&reported), &observed);
        let mut sequence = last_seq;
        for event in &plan.events {
            sequence += 1;
            sqlx::query(
                "INSERT INTO task_events (root_id, seq, at, event, aggregate) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(root.to_string())
            .bind(sequence)
            .bind(micros(now))
            .bind(event_to_json(event).to_string())
            .bind(aggregate_to_json(&observed.aggregate).to_string())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        if !plan.events.is_empty() || callbacks_released > 0 {
            sqlx::query(
                "UPDATE task_trees SET last_seq = ?, reported = ?, finished_at = ? WHERE root_id = ?",
            )
            .bind(sequence)
            .bind(reported_to_json(&plan.reported).to_string())
            .bind(plan.finished.then_some(micros(now)))
            .bind(root.to_string())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(TreeUpdate {
            events: plan.events.len() as u64,
            finished: plan.finished,
            callbacks_released,
        })
    }

    async fn unfinished_trees(&self, limit: u32) -> Result<Vec<TaskId>, StoreError> {
        let roots: Vec<String> = sqlx::query_scalar(
            "SELECT root_id FROM task_trees WHERE finished_at IS NULL ORDER BY created_at LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        roots
            .iter()
            .map(|root| {
                Uuid::from_str(root)
                    .map(TaskId::from)
                    .map_err(|_| StoreError::Internal(decode_error("root_id", root)))
            })
            .collect()
    }

    async fn tree_events(
        &self,
        root: TaskId,
        after: u64,
        limit: u32,
    ) -> Result<Option<Vec<TreeEvent>>, StoreError> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM task_trees WHERE root_id = ?)")
                .bind(root.to_string())
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        if !exists {
            return Ok(None);
        }
        let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
            "SELECT seq, at, event, aggregate FROM task_events WHERE root_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(root.to_string())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(seq, at, event, aggregate)| {
                let event: serde_json::Value = serde_json::from_str(&event).unwrap_or_default();
                let aggregate: serde_json::Value =
                    serde_json::from_str(&aggregate).unwrap_or_default();
                Ok(TreeEvent {
                    sequence: u64::try_from(seq).unwrap_or(0),
                    root_id: root,
                    at: moment(at),
                    kind: event_from_json(&event).ok_or_else(|| {
                        StoreError::Internal(decode_error("event", &event.to_string()))
                    })?,
                    aggregate: aggregate_from_json(&aggregate),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn records(&self, query: &RecordQuery) -> Result<Vec<(i64, StoredRecord)>, StoreError> {
        let column = if query.whole_tree {
            "root_id"
        } else {
            "task_id"
        };
        let sql = format!(
            "SELECT seq, root_id, task_id, kind, key, status, data, created_at, updated_at \
             FROM task_records WHERE {column} = ? AND seq > ? \
               AND (? IS NULL OR kind = ?) AND (? IS NULL OR status = ?) \
             ORDER BY seq LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.task.to_string())
            .bind(query.after)
            .bind(query.kind.as_deref())
            .bind(query.kind.as_deref())
            .bind(query.status.as_deref())
            .bind(query.status.as_deref())
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| -> Result<(i64, StoredRecord), sqlx::Error> {
                let data: Option<String> = row.try_get("data")?;
                Ok((
                    row.try_get("seq")?,
                    StoredRecord {
                        task_id: task_id(row, "task_id")?,
                        root_id: task_id(row, "root_id")?,
                        entry: RecordEntry {
                            kind: row.try_get("kind")?,
                            key: row.try_get("key")?,
                            status: row.try_get("status")?,
                            data: data.map(JsonText::from_trusted),
                        },
                        created_at: moment(row.try_get("created_at")?),
                        updated_at: moment(row.try_get("updated_at")?),
                    },
                ))
            })
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)
    }

    async fn recorded_keys(
        &self,
        root: TaskId,
        kind: &str,
        status: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT key FROM task_records WHERE root_id = ? AND kind = ? \
               AND (? IS NULL OR status = ?) ORDER BY seq",
        )
        .bind(root.to_string())
        .bind(kind)
        .bind(status)
        .bind(status)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn worker_seen(
        &self,
        worker: &WorkerId,
        stats: Option<&WorkerStats>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE workers SET last_seen_at = ?, stats = coalesce(?, stats) WHERE id = ?")
            .bind(micros(now))
            .bind(stats.map(|stats| worker_stats_to_json(stats).to_string()))
            .bind(worker.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let names =
            |text: String| -> Vec<String> { serde_json::from_str(&text).unwrap_or_default() };
        rows.iter()
            .map(|row| -> Result<WorkerInfo, sqlx::Error> {
                let stats: Option<String> = row.try_get("stats")?;
                Ok(WorkerInfo {
                    id: row.try_get("id")?,
                    hostname: row.try_get("hostname")?,
                    pid: count(row.try_get::<i64, _>("pid")?),
                    queues: names(row.try_get("queues")?)
                        .iter()
                        .filter_map(|queue| QueueName::parse("queue", queue).ok())
                        .map(|queue| (queue, 0))
                        .collect(),
                    task_names: names(row.try_get("task_names")?),
                    concurrency: count(row.try_get::<i64, _>("concurrency")?),
                    prefetch_multiplier: count(row.try_get::<i64, _>("prefetch_multiplier")?),
                    version: row.try_get("version")?,
                    coordinator_id: row.try_get("coordinator_id")?,
                    connected_at: moment(row.try_get("connected_at")?),
                    last_seen_at: optional_moment(row, "last_seen_at")?,
                    stats: stats
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .as_ref()
                        .map(worker_stats_from_json),
                    connected: false,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)
    }

    async fn tasks_in_state(
        &self,
        state: TaskState,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE state = ? ORDER BY coalesce(started_at, run_at), seq LIMIT ?",
        )
        .bind(state.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(task_record)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)
    }

    async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let by_state: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT queue, state, count(*) FROM tasks \
             WHERE state IN ('pending', 'scheduled', 'leased', 'running', 'waiting') \
             GROUP BY queue, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let oldest_pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT queue, min(created_at) FROM tasks WHERE state = 'pending' GROUP BY queue",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(QueueCounts {
            by_state: by_state
                .into_iter()
                .map(|(queue, state, count)| (queue, state, u64::try_from(count).unwrap_or(0)))
                .collect(),
            oldest_pending: oldest_pending
                .into_iter()
                .map(|(queue, at)| (queue, moment(at)))
                .collect(),
        })
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let (every_ms, cron, timezone) = timing_columns(&schedule.timing);
        sqlx::query(
            "INSERT INTO schedules (name, task, every_ms, cron, timezone, paused, next_run_at, \
                 source) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET task = excluded.task, every_ms = excluded.every_ms, \
                 cron = excluded.cron, timezone = excluded.timezone, paused = excluded.paused, \
                 next_run_at = excluded.next_run_at, source = excluded.source",
        )
        .bind(&schedule.name)
        .bind(schedule_task_to_json(&schedule.task).to_string())
        .bind(every_ms)
        .bind(cron)
        .bind(timezone)
        .bind(schedule.paused)
        .bind(schedule.next_run_at.map(micros))
        .bind(schedule.source.as_str())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows = sqlx::query("SELECT * FROM schedules ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| -> Result<Option<Schedule>, sqlx::Error> {
                let task: String = row.try_get("task")?;
                let task: serde_json::Value = serde_json::from_str(&task).unwrap_or_default();
                let timezone: String = row.try_get("timezone")?;
                let cron: Option<String> = row.try_get("cron")?;
                let source: String = row.try_get("source")?;
                let (Some(task), Some(timing)) = (
                    schedule_task_from_json(&task),
                    timing_of(row.try_get("every_ms")?, cron.as_deref(), &timezone),
                ) else {
                    return Ok(None);
                };
                Ok(Some(Schedule {
                    name: row.try_get("name")?,
                    task,
                    timing,
                    paused: row.try_get("paused")?,
                    next_run_at: optional_moment(row, "next_run_at")?,
                    last_run_at: optional_moment(row, "last_run_at")?,
                    last_task_id: optional_task_id(row, "last_task_id")?,
                    source: if source == "api" {
                        ScheduleSource::Api
                    } else {
                        ScheduleSource::Config
                    },
                }))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM schedules WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(classify)?
            .rows_affected();
        Ok(deleted == 1)
    }

    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE schedules SET paused = ?, \
                 next_run_at = CASE WHEN ? THEN next_run_at ELSE ? END WHERE name = ?",
        )
        .bind(paused)
        .bind(paused)
        .bind(micros(next_run_at))
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn fire_schedule(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        task: Option<&NewTask>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let ticked = sqlx::query(
            "UPDATE schedules SET next_run_at = ?, last_run_at = ?, \
                 last_task_id = coalesce(?, last_task_id) \
             WHERE name = ? AND next_run_at = ? AND NOT paused",
        )
        .bind(micros(next))
        .bind(micros(now))
        .bind(task.map(|task| task.id.to_string()))
        .bind(name)
        .bind(micros(expected))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        if ticked == 0 {
            return Ok(false);
        }
        if let Some(task) = task {
            insert_tasks_in(&mut transaction, std::slice::from_ref(task)).await?;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(true)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let mut released = 0;
        let sql = format!(
            "UPDATE tasks SET {REQUEUE} WHERE id = ? AND attempt = ? AND session_id = ? \
             AND state IN ('leased', 'running')"
        );
        for token in leases {
            released += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(token.task_id.to_string())
                .bind(i64::from(token.attempt))
                .bind(session.to_string())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?
                .rows_affected();
        }
        transaction.commit().await.map_err(classify)?;
        Ok(released)
    }

    async fn adopt_leases(
        &self,
        worker: &WorkerId,
        session: Uuid,
        held: &[LeaseToken],
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<Adopted, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let mut kept = Vec::new();
        let adopt = format!(
            "UPDATE tasks SET session_id = ?, lease_expires_at = ? \
             WHERE id = ? AND attempt = ? AND worker_id = ? AND state IN ('leased', 'running') \
             RETURNING {LEASE_COLUMNS}"
        );
        for token in held {
            let row = sqlx::query(sqlx::AssertSqlSafe(adopt.clone()))
                .bind(session.to_string())
                .bind(micros(lease_expires_at))
                .bind(token.task_id.to_string())
                .bind(i64::from(token.attempt))
                .bind(worker.as_str())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(classify)?;
            if let Some(row) = row {
                kept.push(lease_of(&row).map_err(StoreError::Internal)?);
            }
        }
        // A lease that was running is an attempt lost (retried while it may be); an unstarted
        // one goes back as it was.
        let lost: Vec<(String, bool)> = sqlx::query_as(
            "SELECT id, retries < max_retries FROM tasks \
             WHERE worker_id = ? AND state = 'running' AND session_id IS NOT ?",
        )
        .bind(worker.as_str())
        .bind(session.to_string())
        .fetch_all(&mut *transaction)
        .await
        .map_err(classify)?;
        for (id, may_retry) in &lost {
            end_attempt(
                &mut transaction,
                id,
                *may_retry,
                ("worker_lost", LOST_ON_RECONNECT),
                now,
            )
            .await?;
        }
        let requeued = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET {REQUEUE} WHERE worker_id = ? AND state = 'leased' \
             AND session_id IS NOT ?"
        )))
        .bind(worker.as_str())
        .bind(session.to_string())
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        transaction.commit().await.map_err(classify)?;
        Ok(Adopted {
            kept,
            released: requeued + lost.len() as u64,
            lost: lost.len() as u64,
        })
    }

    async fn renew_leases(
        &self,
        sessions: &[Uuid],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        if sessions.is_empty() {
            return Ok(0);
        }
        let sessions =
            serde_json::to_string(&sessions.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".to_owned());
        let renewed = sqlx::query(
            "UPDATE tasks SET lease_expires_at = min(?, \
                 CASE WHEN started_at IS NULL THEN 9223372036854775807 \
                      ELSE started_at + (hard_time_limit_ms + ?) * 1000 END) \
             WHERE session_id IN (SELECT value FROM json_each(?)) \
                 AND state IN ('leased', 'running')",
        )
        .bind(micros(now).saturating_add(millis(ttl).saturating_mul(1000)))
        .bind(millis(RUNNING_LEASE_MARGIN))
        .bind(sessions)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(renewed)
    }

    async fn expire_session_leases(
        &self,
        session: Uuid,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let updated = sqlx::query(
            "UPDATE tasks SET lease_expires_at = min(lease_expires_at, ?) \
             WHERE session_id = ? AND state IN ('leased', 'running')",
        )
        .bind(micros(at))
        .bind(session.to_string())
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(updated)
    }

    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError> {
        let id = token.task_id.to_string();
        let mut transaction = begin(&self.pool).await?;
        let found: Option<(i64, i64)> = sqlx::query_as(
            "SELECT retries, max_retries FROM tasks \
             WHERE id = ? AND attempt = ? AND state IN ('leased', 'running')",
        )
        .bind(&id)
        .bind(i64::from(token.attempt))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(classify)?;
        let Some((retries, max_retries)) = found else {
            return Ok(None);
        };
        let requeued = interruption.requeue && retries < max_retries;
        end_attempt(
            &mut transaction,
            &id,
            requeued,
            (&interruption.kind, &interruption.message),
            now,
        )
        .await?;
        transaction.commit().await.map_err(classify)?;
        Ok(Some(if requeued {
            TaskState::Pending
        } else {
            TaskState::Failed
        }))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        // The filters travel as JSON arrays; the last sign of life is the latest of progress,
        // start and submission (SQLite's max() of a NULL is NULL, hence the coalesces).
        let names: Vec<&str> = filter.names.iter().map(TaskName::as_str).collect();
        let states: Vec<&str> = filter.states.iter().map(|state| state.as_str()).collect();
        let rows = sqlx::query(
            "SELECT * FROM ( \
                 SELECT *, max(coalesce(progress_at, created_at), coalesce(started_at, created_at), \
                     created_at) AS quiet_from FROM tasks \
                 WHERE state IN (SELECT value FROM json_each(?)) \
                   AND (? = '[]' OR name IN (SELECT value FROM json_each(?))) \
                   AND (? IS NULL OR root_id = ?)) \
             WHERE ? IS NULL OR quiet_from <= ? \
             ORDER BY quiet_from, seq LIMIT ?",
        )
        .bind(serde_json::to_string(&states).unwrap_or_default())
        .bind(serde_json::to_string(&names).unwrap_or_default())
        .bind(serde_json::to_string(&names).unwrap_or_default())
        .bind(filter.root.map(|root| root.to_string()))
        .bind(filter.root.map(|root| root.to_string()))
        .bind(filter.quiet_since.map(micros))
        .bind(filter.quiet_since.map(micros))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut tasks: Vec<TaskRecord> = rows
            .iter()
            .map(task_record)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)?;
        if !filter.with_payloads {
            for task in &mut tasks {
                task.args = JsonText::empty_object();
                task.result = None;
            }
        }
        Ok(tasks)
    }

    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError> {
        let now_micros = micros(now);
        let margin_micros = millis(RUNNING_LEASE_MARGIN) * 1000;
        let mut transaction = begin(&self.pool).await?;
        let lost = sqlx::query(
            "SELECT id, state, started_at, hard_time_limit_ms, retries, max_retries FROM tasks \
             WHERE state IN ('leased', 'running') AND lease_expires_at <= ? \
             ORDER BY lease_expires_at LIMIT ?",
        )
        .bind(now_micros)
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await
        .map_err(classify)?;
        let mut reaped = Reaped::default();
        for row in lost {
            let id: String = row.try_get("id").map_err(StoreError::Internal)?;
            let state: String = row.try_get("state").map_err(StoreError::Internal)?;
            let started_at: Option<i64> =
                row.try_get("started_at").map_err(StoreError::Internal)?;
            let hard: i64 = row
                .try_get("hard_time_limit_ms")
                .map_err(StoreError::Internal)?;
            let retries: i64 = row.try_get("retries").map_err(StoreError::Internal)?;
            let max_retries: i64 = row.try_get("max_retries").map_err(StoreError::Internal)?;
            if state == TaskState::Leased.as_str() {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE tasks SET {REQUEUE} WHERE id = ?"
                )))
                .bind(&id)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
                reaped.requeued += 1;
                continue;
            }
            let over_limit = started_at
                .is_some_and(|started| started + hard * 1000 + margin_micros <= now_micros);
            let (kind, message) = if over_limit {
                (
                    "time_limit",
                    "the worker did not report within the hard time limit",
                )
            } else {
                (
                    "worker_lost",
                    "the worker holding the lease stopped answering",
                )
            };
            let retry = !over_limit && retries < max_retries;
            end_attempt(&mut transaction, &id, retry, (kind, message), now).await?;
            if retry {
                reaped.requeued += 1;
            } else {
                reaped.failed += 1;
            }
        }
        reaped.expired = sqlx::query(
            "UPDATE tasks SET state = 'expired', finished_at = ? WHERE seq IN ( \
                 SELECT seq FROM tasks WHERE state IN ('pending', 'scheduled') \
                 AND expires_at <= ? ORDER BY expires_at LIMIT ?)",
        )
        .bind(now_micros)
        .bind(now_micros)
        .bind(i64::from(limit))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        transaction.commit().await.map_err(classify)?;
        Ok(reaped)
    }

    async fn cancel(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let mut transaction = begin(&self.pool).await?;
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
        let Some(state) = current else {
            return Ok(None);
        };
        let previous = TaskState::from_name(&state)
            .ok_or_else(|| StoreError::Internal(decode_error("state", &state)))?;
        let unfinished: Vec<(String, String, i64)> = sqlx::query_as(
            "WITH RECURSIVE tree(id) AS ( \
                 SELECT id FROM tasks WHERE id = ? \
                 UNION ALL \
                 SELECT child.id FROM tasks child JOIN tree ON child.parent_id = tree.id) \
             SELECT t.id, t.state, t.attempt FROM tasks t JOIN tree ON t.id = tree.id \
             WHERE t.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')",
        )
        .bind(id.to_string())
        .fetch_all(&mut *transaction)
        .await
        .map_err(classify)?;
        for (task, _, _) in &unfinished {
            sqlx::query(
                "UPDATE tasks SET state = 'cancelled', finished_at = ?, session_id = NULL, \
                     lease_expires_at = NULL, error_kind = 'cancelled', error_message = ? \
                 WHERE id = ?",
            )
            .bind(micros(now))
            .bind(if *task == id.to_string() {
                "cancelled on request"
            } else {
                "cancelled with its parent"
            })
            .bind(task)
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        transaction.commit().await.map_err(classify)?;
        let leases = unfinished
            .iter()
            .filter(|(_, state, _)| state == "leased" || state == "running")
            .filter_map(|(task, _, attempt)| {
                Some(LeaseToken {
                    task_id: Uuid::from_str(task).ok()?.into(),
                    attempt: count(*attempt),
                })
            })
            .collect();
        Ok(Some(Cancelled {
            previous,
            leases,
            cancelled: unfinished.len() as u64,
        }))
    }

    async fn purge(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?, error_kind = 'cancelled', \
                 error_message = 'purged with its queue' \
             WHERE queue = ? AND state IN ('pending', 'scheduled')",
        )
        .bind(micros(now))
        .bind(queue.as_str())
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(purged)
    }

    async fn register_worker(&self, worker: &WorkerRegistration) -> Result<(), StoreError> {
        let names =
            |items: Vec<&str>| serde_json::to_string(&items).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO workers (id, hostname, pid, queues, task_names, concurrency, \
                 prefetch_multiplier, version, coordinator_id, connected_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid, \
                 queues = excluded.queues, task_names = excluded.task_names, \
                 concurrency = excluded.concurrency, \
                 prefetch_multiplier = excluded.prefetch_multiplier, \
                 version = excluded.version, coordinator_id = excluded.coordinator_id, \
                 connected_at = excluded.connected_at",
        )
        .bind(worker.id.as_str())
        .bind(&worker.hostname)
        .bind(i64::from(worker.pid))
        .bind(names(worker.queues.iter().map(QueueName::as_str).collect()))
        .bind(names(
            worker.task_names.iter().map(TaskName::as_str).collect(),
        ))
        .bind(i64::from(worker.concurrency))
        .bind(i64::from(worker.prefetch_multiplier))
        .bind(&worker.version)
        .bind(&worker.coordinator_id)
        .bind(micros(worker.connected_at))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn knows_task_name(&self, name: &TaskName) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM workers, json_each(workers.task_names) \
                 WHERE json_each.value = ?)",
        )
        .bind(name.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(classify)
    }

    async fn announce(&self, _announcement: &Announcement) -> Result<(), StoreError> {
        // One coordinator: nobody else to tell.
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError> {
        Ok(None)
    }
}

/// Inserts tasks in a transaction.
async fn insert_tasks_in(
    transaction: &mut SqliteConnection,
    tasks: &[NewTask],
) -> Result<Vec<Inserted>, StoreError> {
    let mut inserted = Vec::with_capacity(tasks.len());
    for task in tasks {
        let created = sqlx::query(
            "INSERT INTO tasks (id, name, queue, priority, state, args, max_retries, \
                 soft_time_limit_ms, hard_time_limit_ms, idempotency_key, parent_id, root_id, \
                 created_at, run_at, expires_at, waits_for) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(task.id.to_string())
        .bind(task.name.as_str())
        .bind(task.queue.as_str())
        .bind(i64::from(task.priority.value()))
        .bind(task.initial_state().as_str())
        .bind(task.args.as_str())
        .bind(i64::from(task.max_retries))
        .bind(millis(task.time_limits.soft))
        .bind(millis(task.time_limits.hard))
        .bind(task.idempotency_key.as_deref())
        .bind(task.parent_id.map(|id| id.to_string()))
        .bind(task.root_id.to_string())
        .bind(micros(task.created_at))
        .bind(micros(task.run_at))
        .bind(task.expires_at.map(micros))
        .bind(task.waits_for.map(|id| id.to_string()))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected()
            == 1;
        if created {
            inserted.push(Inserted {
                id: task.id,
                created,
            });
            continue;
        }
        let holder: String = sqlx::query_scalar("SELECT id FROM tasks WHERE idempotency_key = ?")
            .bind(task.idempotency_key.as_deref())
            .fetch_one(&mut *transaction)
            .await
            .map_err(classify)?;
        let holder = Uuid::from_str(&holder)
            .map_err(|_| StoreError::Internal(decode_error("id", &holder)))?;
        inserted.push(Inserted {
            id: holder.into(),
            created,
        });
    }
    Ok(inserted)
}

/// What a tree looks like now: its root and the counts over all its tasks and records.
async fn observe_tree(
    transaction: &mut SqliteConnection,
    root: TaskId,
) -> Result<Option<Observed>, StoreError> {
    let root_row: Option<RootRow> = sqlx::query_as(
        "SELECT state, error_kind, error_message, progress_done, progress_total, \
                 progress_message FROM tasks WHERE id = ?",
    )
    .bind(root.to_string())
    .fetch_optional(&mut *transaction)
    .await
    .map_err(classify)?;
    let Some((state, error_kind, error_message, done, total, message)) = root_row else {
        return Ok(None);
    };
    let tasks: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT state, count(*), coalesce(sum(progress_done), 0), coalesce(sum(progress_total), 0) \
         FROM tasks WHERE root_id = ? GROUP BY state",
    )
    .bind(root.to_string())
    .fetch_all(&mut *transaction)
    .await
    .map_err(classify)?;
    let records: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM task_records WHERE root_id = ? GROUP BY status",
    )
    .bind(root.to_string())
    .fetch_all(&mut *transaction)
    .await
    .map_err(classify)?;
    let latest_message: Option<String> = sqlx::query_scalar(
        "SELECT progress_message FROM tasks WHERE root_id = ? AND progress_message <> '' \
         ORDER BY progress_at DESC LIMIT 1",
    )
    .bind(root.to_string())
    .fetch_optional(&mut *transaction)
    .await
    .map_err(classify)?;
    let root_state = TaskState::from_name(&state)
        .ok_or_else(|| StoreError::Internal(decode_error("state", &state)))?;
    Ok(Some(Observed {
        root_id: root,
        root_state,
        root_error: error_kind
            .filter(|_| root_state == TaskState::Failed)
            .map(|kind| (kind, error_message.unwrap_or_default())),
        root_progress: done.map(|done| ProgressReport {
            done: u64::try_from(done).unwrap_or(0),
            total: u64::try_from(total.unwrap_or(0)).unwrap_or(0),
            message: message.unwrap_or_default(),
        }),
        aggregate: aggregate_of(&tasks, &records, latest_message),
    }))
}

/// Applies one completion, fenced by its lease; true when it applied.
async fn complete(
    transaction: &mut SqliteConnection,
    completion: &Completion,
) -> Result<bool, StoreError> {
    let at = micros(completion.at);
    let (state, result, error, run_at) = match &completion.resolution {
        Resolution::Succeeded(result) => (TaskState::Succeeded, Some(result.as_str()), None, None),
        Resolution::Retry {
            kind,
            message,
            run_at,
        } => (
            TaskState::Scheduled,
            None,
            Some((kind.as_str(), message.as_str())),
            Some(micros(*run_at)),
        ),
        Resolution::Failed { kind, message } => (
            TaskState::Failed,
            None,
            Some((kind.as_str(), message.as_str())),
            None,
        ),
    };
    let retrying = state == TaskState::Scheduled;
    let failures = if error.is_some() {
        APPEND_FAILURE
    } else {
        "failures"
    };
    let sql = format!(
        "UPDATE tasks SET state = ?, result = ?, error_kind = ?, error_message = ?, \
             run_at = coalesce(?, run_at), retries = retries + ?, finished_at = ?, \
             started_at = coalesce(started_at, ?), lease_expires_at = NULL, \
             failures = {failures} \
         WHERE id = ? AND attempt = ? AND worker_id = ? AND state IN ('leased', 'running')"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state.as_str())
        .bind(result)
        .bind(error.map(|(kind, _)| kind))
        .bind(error.map(|(_, message)| message))
        .bind(run_at)
        .bind(i64::from(retrying))
        .bind((!retrying).then_some(at))
        .bind(completion.started_at.map(micros));
    if let Some((kind, message)) = error {
        query = query
            .bind(kind)
            .bind(message)
            .bind(completion.at.to_rfc3339());
    }
    let applied = query
        .bind(completion.token.task_id.to_string())
        .bind(i64::from(completion.token.attempt))
        .bind(completion.worker.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
    Ok(applied == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("celeritas.db");
        let first = SqliteStore::open(&path).await.unwrap();
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(error, OpenError::InUse(_)), "{error}");
        assert!(error.to_string().contains("one coordinator"), "{error}");
        drop(first);
        SqliteStore::open(&path)
            .await
            .expect("free again once the first is gone");
    }

    #[test]
    fn moments_round_trip_through_microseconds() {
        let now = Utc::now();
        assert_eq!(
            moment(micros(now)).timestamp_micros(),
            now.timestamp_micros()
        );
    }
}
