//! The Postgres store. Batches travel as arrays and are expanded with `unnest`, so a batch of a
//! thousand completions is one statement and one commit.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::encoding::{
    RootRow, aggregate_from_json, aggregate_of, aggregate_to_json, count, duration_from_millis,
    failures_of, millis, progress_of, reported_from_json, reported_to_json,
    schedule_task_from_json, schedule_task_to_json, timing_columns, timing_of,
    worker_stats_from_json, worker_stats_to_json,
};
use super::{
    Adopted, Announcement, AnnouncementListener, AttemptBatch, Cancelled, Claim, Claimed,
    Completion, Interruption, LOST_ON_RECONNECT, ProgressWrite, Promoted, QueueCounts,
    RUNNING_LEASE_MARGIN, Reaped, RecordQuery, RecordWrite, Resolution, Start, Store, StoreError,
    TaskFilter, TreeUpdate, WorkerRegistration,
};
use crate::domain::{
    Inserted, JsonText, Lease, LeaseToken, NewTask, Observed, Priority, ProgressReport, QueueName,
    RecordEntry, StoredRecord, TaskId, TaskName, TaskRecord, TaskState, TimeLimits, TreeEvent,
    WorkerId, WorkerInfo, WorkerStats, event_from_json, event_to_json, opening, plan_events,
};
use crate::domain::{Schedule, ScheduleSource};

/// The embedded migrations, applied at start-up and by `celeritas migrate`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel coordinators announce on.
const ANNOUNCEMENT_CHANNEL: &str = "celeritas";

/// How long a caller waits for a free connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on a Postgres database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// A store on `url` with up to `pool_size` connections. Connects lazily, so a coordinator
    /// starts (and reports NOT_SERVING) while the database is down.
    pub fn connect_lazy(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Internal)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for LISTEN/NOTIFY.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Sorts a database error into "try again later" and "something is wrong".
fn classify(error: sqlx::Error) -> StoreError {
    let unavailable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => true,
        // 08: connection exception; 57P: operator intervention (shutdown, recovery);
        // 53: insufficient resources; 40: transaction rollback (serialization failure,
        // deadlock), which succeeds when tried again.
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            ["08", "57P", "53", "40"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(error)
    } else {
        StoreError::Internal(error)
    }
}

/// Reads a column that only celeritas writes; a value that does not parse means a broken
/// database, reported as a decode error.
fn parsed<T>(
    row: &PgRow,
    column: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {text:?}").into(),
    })
}

/// The columns `lease_of` reads, for RETURNING and SELECT lists.
const CLAIMED_COLUMNS: &str = "t.id, t.attempt, t.name, t.queue, t.priority, t.args::text AS args, \
     t.retries, t.max_retries, t.soft_time_limit_ms, t.hard_time_limit_ms, t.expires_at, \
     t.parent_id, t.root_id, t.run_at";

fn lease_of(row: &PgRow) -> Result<Lease, sqlx::Error> {
    let id: Uuid = row.try_get("id")?;
    let priority: i16 = row.try_get("priority")?;
    Ok(Lease {
        token: LeaseToken {
            task_id: id.into(),
            attempt: count(row.try_get::<i32, _>("attempt")?),
        },
        name: parsed(row, "name", |text| TaskName::parse("name", text).ok())?,
        queue: parsed(row, "queue", |text| QueueName::parse("queue", text).ok())?,
        priority: Priority::parse("priority", u32::try_from(priority).unwrap_or(0))
            .unwrap_or_default(),
        args: JsonText::from_trusted(row.try_get("args")?),
        retries: count(row.try_get::<i32, _>("retries")?),
        max_retries: count(row.try_get::<i32, _>("max_retries")?),
        time_limits: TimeLimits {
            soft: duration_from_millis(row.try_get("soft_time_limit_ms")?),
            hard: duration_from_millis(row.try_get("hard_time_limit_ms")?),
        },
        expires_at: row.try_get("expires_at")?,
        parent_id: row
            .try_get::<Option<Uuid>, _>("parent_id")?
            .map(TaskId::from),
        root_id: row.try_get::<Uuid, _>("root_id")?.into(),
        run_at: row.try_get("run_at")?,
    })
}

/// The columns `task_record` reads, for `concat!` into a query over `tasks t`.
macro_rules! task_columns {
    () => {
        "t.id, t.attempt, t.name, t.queue, t.priority, t.args::text AS args, \
         t.retries, t.max_retries, t.soft_time_limit_ms, t.hard_time_limit_ms, \
         t.expires_at, t.parent_id, t.root_id, t.state, t.result::text AS result, \
         t.error_kind, t.error_message, t.created_at, t.run_at, t.started_at, \
         t.finished_at, t.worker_id, t.idempotency_key, t.failures::text AS failures, \
         t.progress_done, t.progress_total, t.progress_message"
    };
}

fn task_record(row: &PgRow) -> Result<TaskRecord, sqlx::Error> {
    let claimed = lease_of(row)?;
    let error_kind: Option<String> = row.try_get("error_kind")?;
    let error_message: Option<String> = row.try_get("error_message")?;
    Ok(TaskRecord {
        id: claimed.token.task_id,
        name: claimed.name,
        queue: claimed.queue,
        priority: claimed.priority,
        state: parsed(row, "state", TaskState::from_name)?,
        args: claimed.args,
        result: row
            .try_get::<Option<String>, _>("result")?
            .map(JsonText::from_trusted),
        error: error_kind.map(|kind| (kind, error_message.unwrap_or_default())),
        attempt: claimed.token.attempt,
        retries: claimed.retries,
        max_retries: claimed.max_retries,
        created_at: row.try_get("created_at")?,
        run_at: row.try_get("run_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        expires_at: claimed.expires_at,
        worker_id: row
            .try_get::<Option<String>, _>("worker_id")?
            .and_then(|id| WorkerId::parse("worker_id", &id).ok()),
        parent_id: claimed.parent_id,
        root_id: claimed.root_id,
        idempotency_key: row.try_get("idempotency_key")?,
        failures: failures_of(&row.try_get::<String, _>("failures")?),
        progress: progress_of(
            row.try_get("progress_done")?,
            row.try_get("progress_total")?,
            row.try_get("progress_message")?,
        ),
    })
}

/// Splits lease tokens into the two arrays the fenced statements unnest.
fn token_arrays(tokens: impl Iterator<Item = LeaseToken>) -> (Vec<Uuid>, Vec<i32>) {
    tokens
        .map(|token| {
            (
                token.task_id.as_uuid(),
                i32::try_from(token.attempt).unwrap_or(i32::MAX),
            )
        })
        .unzip()
}

#[async_trait]
impl Store for PostgresStore {
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
        let mut connection = self.pool.acquire().await.map_err(classify)?;
        insert_tasks_on(&mut connection, tasks).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks t WHERE t.id = $1",
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.as_ref()
            .map(task_record)
            .transpose()
            .map_err(StoreError::Internal)
    }

    async fn roots(&self, ids: &[TaskId]) -> Result<HashMap<TaskId, TaskId>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(TaskId::as_uuid).collect();
        let rows: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT id, root_id FROM tasks WHERE id = ANY($1::uuid[])")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(id, root)| (id.into(), root.into()))
            .collect())
    }

    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() {
            return Ok(Claimed::default());
        }
        let queue_names: Vec<&str> = claim
            .queues
            .iter()
            .map(|(queue, _)| queue.as_str())
            .collect();
        let queue_priorities: Vec<i32> = claim
            .queues
            .iter()
            .map(|(_, priority)| i32::from(*priority))
            .collect();
        let limit = i64::from(claim.limit);
        // Each queue offers its best `limit` tasks (locked, skipping rows other coordinators
        // hold); the best `limit` of those are leased, or marked expired when their time passed.
        let sql = format!(
            "WITH candidates AS ( \
                 SELECT picked.id, wanted.queue_priority \
                 FROM unnest($1::text[], $2::int4[]) AS wanted(queue, queue_priority) \
                 CROSS JOIN LATERAL ( \
                     SELECT p.id, p.priority, p.seq FROM tasks p \
                     WHERE p.state = 'pending' AND p.queue = wanted.queue \
                     ORDER BY p.priority DESC, p.seq \
                     LIMIT $3 \
                     FOR UPDATE SKIP LOCKED \
                 ) AS picked \
                 ORDER BY wanted.queue_priority DESC, picked.priority DESC, picked.seq \
                 LIMIT $3 \
             ) \
             UPDATE tasks t SET \
                 state = CASE WHEN t.expires_at <= $4 THEN 'expired' ELSE 'leased' END, \
                 attempt = CASE WHEN t.expires_at <= $4 THEN t.attempt ELSE t.attempt + 1 END, \
                 worker_id = CASE WHEN t.expires_at <= $4 THEN t.worker_id ELSE $5 END, \
                 session_id = CASE WHEN t.expires_at <= $4 THEN NULL ELSE $7 END, \
                 finished_at = CASE WHEN t.expires_at <= $4 THEN $4 END, \
                 leased_at = $4, \
                 lease_expires_at = CASE WHEN t.expires_at <= $4 THEN NULL ELSE $6 END \
             FROM candidates c WHERE t.id = c.id \
             RETURNING c.queue_priority, t.seq, t.state, {CLAIMED_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&queue_names)
            .bind(&queue_priorities)
            .bind(limit)
            .bind(claim.now)
            .bind(claim.worker.as_str())
            .bind(claim.lease_expires_at)
            .bind(claim.session)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let mut claimed = Claimed::default();
        let mut ordered = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: String = row.try_get("state").map_err(StoreError::Internal)?;
            if state == TaskState::Expired.as_str() {
                claimed.expired += 1;
                continue;
            }
            let queue_priority: i32 = row
                .try_get("queue_priority")
                .map_err(StoreError::Internal)?;
            let seq: i64 = row.try_get("seq").map_err(StoreError::Internal)?;
            let task = lease_of(row).map_err(StoreError::Internal)?;
            ordered.push((
                (queue_priority, task.priority, std::cmp::Reverse(seq)),
                task,
            ));
        }
        // RETURNING has no order; serve in the order the claim chose.
        ordered.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        claimed.tasks = ordered.into_iter().map(|(_, task)| task).collect();
        Ok(claimed)
    }

    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promoted, StoreError> {
        let count = sqlx::query(
            "WITH due AS ( \
                 SELECT id FROM tasks WHERE state = 'scheduled' AND run_at <= $1 \
                 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE tasks t SET state = 'pending' FROM due WHERE t.id = due.id",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        let next_due: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(run_at) FROM tasks WHERE state = 'scheduled'")
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(Promoted { count, next_due })
    }

    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        lock_in_id_order(&mut transaction, &batch.task_ids()).await?;
        if !batch.starts.is_empty() {
            record_starts(&mut transaction, &batch.starts).await?;
        }
        if !batch.progress.is_empty() {
            record_progress(&mut transaction, &batch.latest_progress()).await?;
        }
        if !batch.records.is_empty() {
            record_records(&mut transaction, &batch.records).await?;
        }
        let applied = if batch.completions.is_empty() {
            Vec::new()
        } else {
            record_completions(&mut transaction, &batch.completions).await?
        };
        transaction.commit().await.map_err(classify)?;
        Ok(applied)
    }

    async fn open_tree(&self, root: TaskId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (event, reported) = opening(root);
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        let opened = sqlx::query(
            "INSERT INTO task_trees (root_id, last_seq, reported, created_at) \
             VALUES ($1, 1, $2, $3) ON CONFLICT (root_id) DO NOTHING",
        )
        .bind(root.as_uuid())
        .bind(reported_to_json(&reported))
        .bind(now)
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        if opened == 1 {
            sqlx::query(
                "INSERT INTO task_events (root_id, seq, at, event, aggregate) \
                 VALUES ($1, 1, $2, $3, $4)",
            )
            .bind(root.as_uuid())
            .bind(now)
            .bind(event_to_json(&event))
            .bind(aggregate_to_json(&reported.aggregate))
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
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        let tree: Option<(i64, serde_json::Value, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT last_seq, reported, finished_at FROM task_trees WHERE root_id = $1 FOR UPDATE",
        )
        .bind(root.as_uuid())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(classify)?;
        let Some((last_seq, reported, finished_at)) = tree else {
            return Ok(TreeUpdate::default());
        };
        if finished_at.is_some() {
            return Ok(TreeUpdate::default());
        }
        // A callback runs once its parent and every other child of that parent have finished.
        let callbacks_released = sqlx::query(
            "UPDATE tasks t SET state = 'pending', run_at = $2 \
             WHERE t.root_id = $1 AND t.state = 'waiting' \
               AND EXISTS (SELECT 1 FROM tasks p WHERE p.id = t.waits_for \
                   AND p.state IN ('succeeded', 'failed', 'cancelled', 'expired')) \
               AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = t.waits_for \
                   AND c.id <> t.id AND c.state IN ('pending', 'scheduled', 'leased', 'running', 'waiting'))",
        )
        .bind(root.as_uuid())
        .bind(now)
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        let observed = observe_tree(&mut transaction, root).await?;
        let Some(observed) = observed else {
            return Ok(TreeUpdate::default());
        };
        let plan = plan_events(&reported_from_json(&reported), &observed);
        let mut sequence = last_seq;
        for event in &plan.events {
            sequence += 1;
            sqlx::query(
                "INSERT INTO task_events (root_id, seq, at, event, aggregate) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(root.as_uuid())
            .bind(sequence)
            .bind(now)
            .bind(event_to_json(event))
            .bind(aggregate_to_json(&observed.aggregate))
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        if !plan.events.is_empty() || callbacks_released > 0 {
            sqlx::query(
                "UPDATE task_trees SET last_seq = $2, reported = $3, finished_at = $4 \
                 WHERE root_id = $1",
            )
            .bind(root.as_uuid())
            .bind(sequence)
            .bind(reported_to_json(&plan.reported))
            .bind(plan.finished.then_some(now))
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
        let roots: Vec<Uuid> = sqlx::query_scalar(
            "SELECT root_id FROM task_trees WHERE finished_at IS NULL ORDER BY created_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(roots.into_iter().map(TaskId::from).collect())
    }

    async fn tree_events(
        &self,
        root: TaskId,
        after: u64,
        limit: u32,
    ) -> Result<Option<Vec<TreeEvent>>, StoreError> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM task_trees WHERE root_id = $1)")
                .bind(root.as_uuid())
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        if !exists {
            return Ok(None);
        }
        let rows: Vec<(i64, DateTime<Utc>, serde_json::Value, serde_json::Value)> = sqlx::query_as(
            "SELECT seq, at, event, aggregate FROM task_events \
                 WHERE root_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(root.as_uuid())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(seq, at, event, aggregate)| {
                Ok(TreeEvent {
                    sequence: u64::try_from(seq).unwrap_or(0),
                    root_id: root,
                    at,
                    kind: event_from_json(&event).ok_or_else(|| {
                        StoreError::Internal(sqlx::Error::Protocol(format!(
                            "unreadable event {seq} of tree {root}"
                        )))
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
            "SELECT seq, root_id, task_id, kind, key, status, data::text AS data, created_at, \
                 updated_at \
             FROM task_records \
             WHERE {column} = $1 AND seq > $2 \
               AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR status = $4) \
             ORDER BY seq LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.task.as_uuid())
            .bind(query.after)
            .bind(query.kind.as_deref())
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
                        task_id: row.try_get::<Uuid, _>("task_id")?.into(),
                        root_id: row.try_get::<Uuid, _>("root_id")?.into(),
                        entry: RecordEntry {
                            kind: row.try_get("kind")?,
                            key: row.try_get("key")?,
                            status: row.try_get("status")?,
                            data: data.map(JsonText::from_trusted),
                        },
                        created_at: row.try_get("created_at")?,
                        updated_at: row.try_get("updated_at")?,
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
            "SELECT key FROM task_records WHERE root_id = $1 AND kind = $2 \
               AND ($3::text IS NULL OR status = $3) ORDER BY seq",
        )
        .bind(root.as_uuid())
        .bind(kind)
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
        sqlx::query(
            "UPDATE workers SET last_seen_at = $2, stats = coalesce($3, stats) WHERE id = $1",
        )
        .bind(worker.as_str())
        .bind(now)
        .bind(stats.map(worker_stats_to_json))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, hostname, pid, queues, task_names, concurrency, prefetch_multiplier, \
                 version, coordinator_id, connected_at, last_seen_at, stats \
             FROM workers ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|row| -> Result<WorkerInfo, sqlx::Error> {
                let queues: Vec<String> = row.try_get("queues")?;
                let stats: Option<serde_json::Value> = row.try_get("stats")?;
                Ok(WorkerInfo {
                    id: row.try_get("id")?,
                    hostname: row.try_get("hostname")?,
                    pid: count(row.try_get::<i32, _>("pid")?),
                    queues: queues
                        .iter()
                        .filter_map(|queue| QueueName::parse("queue", queue).ok())
                        .map(|queue| (queue, 0))
                        .collect(),
                    task_names: row.try_get("task_names")?,
                    concurrency: count(row.try_get::<i32, _>("concurrency")?),
                    prefetch_multiplier: count(row.try_get::<i32, _>("prefetch_multiplier")?),
                    version: row.try_get("version")?,
                    coordinator_id: row.try_get("coordinator_id")?,
                    connected_at: row.try_get("connected_at")?,
                    last_seen_at: row.try_get("last_seen_at")?,
                    stats: stats.as_ref().map(worker_stats_from_json),
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks t WHERE t.state = $1 \
             ORDER BY coalesce(t.started_at, t.run_at), t.seq LIMIT $2",
        ))
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
        let oldest_pending: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
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
            oldest_pending,
        })
    }

    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let (every_ms, cron, timezone) = timing_columns(&schedule.timing);
        sqlx::query(
            "INSERT INTO schedules (name, task, every_ms, cron, timezone, paused, next_run_at, \
                 source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO UPDATE SET task = excluded.task, every_ms = excluded.every_ms, \
                 cron = excluded.cron, timezone = excluded.timezone, paused = excluded.paused, \
                 next_run_at = excluded.next_run_at, source = excluded.source",
        )
        .bind(&schedule.name)
        .bind(schedule_task_to_json(&schedule.task))
        .bind(every_ms)
        .bind(cron)
        .bind(timezone)
        .bind(schedule.paused)
        .bind(schedule.next_run_at)
        .bind(schedule.source.as_str())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, task, every_ms, cron, timezone, paused, next_run_at, last_run_at, \
                 last_task_id, source FROM schedules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|row| -> Result<Option<Schedule>, sqlx::Error> {
                let task: serde_json::Value = row.try_get("task")?;
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
                    next_run_at: row.try_get("next_run_at")?,
                    last_run_at: row.try_get("last_run_at")?,
                    last_task_id: row
                        .try_get::<Option<Uuid>, _>("last_task_id")?
                        .map(TaskId::from),
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
        let deleted = sqlx::query("DELETE FROM schedules WHERE name = $1")
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
            "UPDATE schedules SET paused = $2, \
                 next_run_at = CASE WHEN $2 THEN next_run_at ELSE $3 END WHERE name = $1",
        )
        .bind(name)
        .bind(paused)
        .bind(next_run_at)
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
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        let ticked = sqlx::query(
            "UPDATE schedules SET next_run_at = $3, last_run_at = $4, \
                 last_task_id = coalesce($5, last_task_id) \
             WHERE name = $1 AND next_run_at = $2 AND NOT paused",
        )
        .bind(name)
        .bind(expected)
        .bind(next)
        .bind(now)
        .bind(task.map(|task| task.id.as_uuid()))
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
        if ticked == 0 {
            return Ok(false);
        }
        if let Some(task) = task {
            insert_tasks_on(&mut transaction, std::slice::from_ref(task)).await?;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(true)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let (ids, attempts) = token_arrays(leases.iter().copied());
        let released = sqlx::query(
            "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::int4[]) AS u(id, attempt)), \
                 locked AS MATERIALIZED (SELECT id FROM tasks WHERE id IN (SELECT id FROM u) \
                     ORDER BY id FOR UPDATE) \
             UPDATE tasks t SET state = 'pending', session_id = NULL, leased_at = NULL, \
                 lease_expires_at = NULL, started_at = NULL \
             FROM u JOIN locked ON locked.id = u.id \
             WHERE t.id = u.id AND t.attempt = u.attempt AND t.session_id = $3 \
                 AND t.state IN ('leased', 'running')",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(session)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
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
        let (ids, attempts) = token_arrays(held.iter().copied());
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        // Both statements below touch the worker's rows: lock them all first, in id order.
        sqlx::query(
            "SELECT 1 FROM tasks \
             WHERE id = ANY($1::uuid[]) \
                OR (worker_id = $2 AND state IN ('leased', 'running')) \
             ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .bind(worker.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(classify)?;
        let sql = format!(
            "UPDATE tasks t SET session_id = $4, lease_expires_at = $5 \
             FROM unnest($1::uuid[], $2::int4[]) AS u(id, attempt) \
             WHERE t.id = u.id AND t.attempt = u.attempt AND t.worker_id = $3 \
                 AND t.state IN ('leased', 'running') \
             RETURNING {CLAIMED_COLUMNS}"
        );
        let kept = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .bind(&attempts)
            .bind(worker.as_str())
            .bind(session)
            .bind(lease_expires_at)
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?
            .iter()
            .map(lease_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Internal)?;
        // Every expression reads the row as it was: a lease that was running is an attempt
        // lost (retried while it may be), an unstarted one goes back as it was.
        let given_up: Vec<bool> = sqlx::query_scalar(
            "WITH gone AS ( \
                 SELECT id, state = 'running' AS lost, retries < max_retries AS may_retry \
                 FROM tasks \
                 WHERE worker_id = $1 AND state IN ('leased', 'running') \
                     AND session_id IS DISTINCT FROM $2) \
             UPDATE tasks t SET \
                 state = CASE WHEN NOT g.lost OR g.may_retry THEN 'pending' ELSE 'failed' END, \
                 retries = t.retries + CASE WHEN g.lost AND g.may_retry THEN 1 ELSE 0 END, \
                 error_kind = CASE WHEN g.lost THEN 'worker_lost' ELSE t.error_kind END, \
                 error_message = CASE WHEN g.lost THEN $3 ELSE t.error_message END, \
                 failures = CASE WHEN NOT g.lost THEN t.failures \
                     ELSE t.failures || jsonb_build_array(jsonb_build_object( \
                         'attempt', t.attempt, 'worker_id', t.worker_id, 'kind', 'worker_lost', \
                         'message', $3::text, 'at', $4::timestamptz)) END, \
                 finished_at = CASE WHEN g.lost AND NOT g.may_retry THEN $4 END, \
                 session_id = NULL, leased_at = NULL, lease_expires_at = NULL, \
                 started_at = CASE WHEN g.lost AND NOT g.may_retry THEN t.started_at END \
             FROM gone g WHERE t.id = g.id \
             RETURNING g.lost",
        )
        .bind(worker.as_str())
        .bind(session)
        .bind(LOST_ON_RECONNECT)
        .bind(now)
        .fetch_all(&mut *transaction)
        .await
        .map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        Ok(Adopted {
            kept,
            released: given_up.len() as u64,
            lost: given_up.iter().filter(|lost| **lost).count() as u64,
        })
    }

    async fn register_worker(&self, worker: &WorkerRegistration) -> Result<(), StoreError> {
        let queues: Vec<&str> = worker.queues.iter().map(QueueName::as_str).collect();
        let task_names: Vec<&str> = worker.task_names.iter().map(TaskName::as_str).collect();
        sqlx::query(
            "INSERT INTO workers (id, hostname, pid, queues, task_names, concurrency, \
                 prefetch_multiplier, version, coordinator_id, connected_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid, \
                 queues = excluded.queues, task_names = excluded.task_names, \
                 concurrency = excluded.concurrency, \
                 prefetch_multiplier = excluded.prefetch_multiplier, \
                 version = excluded.version, coordinator_id = excluded.coordinator_id, \
                 connected_at = excluded.connected_at",
        )
        .bind(worker.id.as_str())
        .bind(&worker.hostname)
        .bind(i32::try_from(worker.pid).unwrap_or(i32::MAX))
        .bind(&queues)
        .bind(&task_names)
        .bind(i32::try_from(worker.concurrency).unwrap_or(i32::MAX))
        .bind(i32::try_from(worker.prefetch_multiplier).unwrap_or(i32::MAX))
        .bind(&worker.version)
        .bind(&worker.coordinator_id)
        .bind(worker.connected_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn knows_task_name(&self, name: &TaskName) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workers WHERE $1 = ANY(task_names))")
            .bind(name.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
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
        let renewed = sqlx::query(
            // A row locked right now is being written (started, finished, released); it is
            // renewed next round, well within its TTL. Skipping never waits, so never deadlocks.
            "WITH held AS ( \
                 SELECT id FROM tasks \
                 WHERE session_id = ANY($1::uuid[]) AND state IN ('leased', 'running') \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE tasks t SET lease_expires_at = LEAST( \
                 $2::timestamptz + $3 * interval '1 millisecond', \
                 COALESCE(t.started_at + (t.hard_time_limit_ms + $4) * interval '1 millisecond', \
                          'infinity')) \
             FROM held WHERE t.id = held.id",
        )
        .bind(sessions)
        .bind(now)
        .bind(millis(ttl))
        .bind(millis(RUNNING_LEASE_MARGIN))
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
            "WITH held AS MATERIALIZED ( \
                 SELECT id FROM tasks \
                 WHERE session_id = $1 AND state IN ('leased', 'running') \
                 ORDER BY id FOR UPDATE) \
             UPDATE tasks t SET lease_expires_at = LEAST(t.lease_expires_at, $2) \
             FROM held WHERE t.id = held.id AND t.session_id = $1",
        )
        .bind(session)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(updated)
    }

    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError> {
        // The verdict on each expired lease, decided once and applied to every column.
        let verdicts: Vec<String> = sqlx::query_scalar(
            "WITH lost AS ( \
                 SELECT id, CASE \
                     WHEN state = 'leased' THEN 'unstarted' \
                     WHEN started_at + (hard_time_limit_ms + $3) * interval '1 millisecond' <= $1 \
                         THEN 'time_limit' \
                     WHEN retries < max_retries THEN 'retry' \
                     ELSE 'exhausted' END AS verdict \
                 FROM tasks \
                 WHERE state IN ('leased', 'running') AND lease_expires_at <= $1 \
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), \
             described AS ( \
                 SELECT id, verdict, \
                     CASE verdict WHEN 'time_limit' THEN 'time_limit' ELSE 'worker_lost' END \
                         AS kind, \
                     CASE verdict \
                         WHEN 'time_limit' THEN 'the worker did not report within the hard time limit' \
                         ELSE 'the worker holding the lease stopped answering' END AS message \
                 FROM lost) \
             UPDATE tasks t SET \
                 state = CASE WHEN d.verdict IN ('unstarted', 'retry') THEN 'pending' \
                     ELSE 'failed' END, \
                 retries = t.retries + CASE WHEN d.verdict = 'retry' THEN 1 ELSE 0 END, \
                 error_kind = CASE WHEN d.verdict = 'unstarted' THEN t.error_kind ELSE d.kind END, \
                 error_message = CASE WHEN d.verdict = 'unstarted' THEN t.error_message \
                     ELSE d.message END, \
                 failures = CASE WHEN d.verdict = 'unstarted' THEN t.failures \
                     ELSE t.failures || jsonb_build_array(jsonb_build_object( \
                         'attempt', t.attempt, 'worker_id', t.worker_id, 'kind', d.kind, \
                         'message', d.message, 'at', $1::timestamptz)) END, \
                 finished_at = CASE WHEN d.verdict IN ('time_limit', 'exhausted') THEN $1 END, \
                 session_id = NULL, leased_at = NULL, lease_expires_at = NULL, \
                 started_at = CASE WHEN d.verdict IN ('time_limit', 'exhausted') \
                     THEN t.started_at END \
             FROM described d WHERE t.id = d.id \
             RETURNING d.verdict",
        )
        .bind(now)
        .bind(i64::from(limit))
        .bind(millis(RUNNING_LEASE_MARGIN))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut reaped = Reaped::default();
        for verdict in verdicts {
            match verdict.as_str() {
                "unstarted" | "retry" => reaped.requeued += 1,
                _ => reaped.failed += 1,
            }
        }
        reaped.expired = sqlx::query(
            "WITH due AS ( \
                 SELECT id FROM tasks \
                 WHERE state IN ('pending', 'scheduled') AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE tasks t SET state = 'expired', finished_at = $1 FROM due WHERE t.id = due.id",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(reaped)
    }

    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError> {
        // Every expression reads the row as it was, so `requeued` is decided once.
        let state: Option<String> = sqlx::query_scalar(
            "WITH decided AS ( \
                 SELECT id, $3 AND retries < max_retries AS requeued FROM tasks \
                 WHERE id = $1 AND attempt = $2 AND state IN ('leased', 'running') FOR UPDATE) \
             UPDATE tasks t SET \
                 state = CASE WHEN d.requeued THEN 'pending' ELSE 'failed' END, \
                 retries = t.retries + CASE WHEN d.requeued THEN 1 ELSE 0 END, \
                 error_kind = $4, error_message = $5, \
                 failures = t.failures || jsonb_build_array(jsonb_build_object( \
                     'attempt', t.attempt, 'worker_id', t.worker_id, 'kind', $4::text, \
                     'message', $5::text, 'at', $6::timestamptz)), \
                 finished_at = CASE WHEN d.requeued THEN NULL ELSE $6 END, \
                 started_at = CASE WHEN d.requeued THEN NULL ELSE t.started_at END, \
                 session_id = NULL, leased_at = NULL, lease_expires_at = NULL \
             FROM decided d WHERE t.id = d.id \
             RETURNING t.state",
        )
        .bind(token.task_id.as_uuid())
        .bind(i32::try_from(token.attempt).unwrap_or(i32::MAX))
        .bind(interruption.requeue)
        .bind(&interruption.kind)
        .bind(&interruption.message)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(state.as_deref().and_then(TaskState::from_name))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        // Without payloads, args and result are not even read: a campaign's batches are large.
        let columns = if filter.with_payloads {
            task_columns!().to_owned()
        } else {
            task_columns!()
                .replace("t.args::text AS args", "'{}' AS args")
                .replace("t.result::text AS result", "NULL::text AS result")
        };
        if filter.states.is_empty() {
            return Ok(Vec::new());
        }
        // Only the filters given, and the states as literals (a closed set of names), so the
        // planner can use `tasks_unfinished_by_name` and `tasks_by_root`.
        let states: Vec<String> = filter
            .states
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect();
        let quiet_from = "greatest(t.progress_at, t.started_at, t.created_at)";
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {columns} FROM tasks t WHERE t.state IN ({})",
            states.join(", ")
        ));
        if !filter.names.is_empty() {
            let names: Vec<&str> = filter.names.iter().map(TaskName::as_str).collect();
            query.push(" AND t.name = ANY(").push_bind(names).push(")");
        }
        if let Some(root) = filter.root {
            // The root itself, or a descendant (which has a parent: `tasks_by_root`'s predicate).
            query
                .push(" AND ((t.root_id = ")
                .push_bind(root.as_uuid())
                .push(" AND t.parent_id IS NOT NULL) OR t.id = ")
                .push_bind(root.as_uuid())
                .push(")");
        }
        if let Some(quiet_since) = filter.quiet_since {
            query
                .push(format!(" AND {quiet_from} <= "))
                .push_bind(quiet_since);
        }
        query
            .push(format!(" ORDER BY {quiet_from}, t.seq LIMIT "))
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(task_record)
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)
    }

    async fn cancel(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&mut *transaction)
            .await
            .map_err(classify)?;
        let Some(state) = current else {
            return Ok(None);
        };
        let previous = TaskState::from_name(&state).ok_or_else(|| {
            StoreError::Internal(sqlx::Error::Protocol(format!(
                "unknown task state {state:?}"
            )))
        })?;
        // The task and its descendants, locked in id order, then those not finished cancelled.
        let cancelled: Vec<(Uuid, String, i32)> = sqlx::query_as(
            "WITH RECURSIVE tree AS ( \
                 SELECT id FROM tasks WHERE id = $1 \
                 UNION ALL \
                 SELECT child.id FROM tasks child JOIN tree ON child.parent_id = tree.id), \
             locked AS MATERIALIZED ( \
                 SELECT t.id, t.state, t.attempt FROM tasks t JOIN tree ON t.id = tree.id \
                 ORDER BY t.id FOR UPDATE OF t) \
             UPDATE tasks t SET state = 'cancelled', finished_at = $2, session_id = NULL, \
                 lease_expires_at = NULL, error_kind = 'cancelled', \
                 error_message = CASE WHEN t.id = $1 THEN 'cancelled on request' \
                     ELSE 'cancelled with its parent' END \
             FROM locked WHERE t.id = locked.id \
               AND locked.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') \
             RETURNING t.id, locked.state, locked.attempt",
        )
        .bind(id.as_uuid())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await
        .map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        let leases = cancelled
            .iter()
            .filter(|(_, state, _)| state == "leased" || state == "running")
            .map(|(task, _, attempt)| LeaseToken {
                task_id: (*task).into(),
                attempt: count(*attempt),
            })
            .collect();
        Ok(Some(Cancelled {
            previous,
            leases,
            cancelled: cancelled.len() as u64,
        }))
    }

    async fn purge(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', finished_at = $2, error_kind = 'cancelled', \
                 error_message = 'purged with its queue' \
             WHERE queue = $1 AND state IN ('pending', 'scheduled')",
        )
        .bind(queue.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        Ok(purged)
    }

    async fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ANNOUNCEMENT_CHANNEL)
            .bind(encode_announcement(announcement))
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(classify)?;
        listener
            .listen(ANNOUNCEMENT_CHANNEL)
            .await
            .map_err(classify)?;
        Ok(Some(Box::new(PostgresListener(listener))))
    }
}

/// `work <coordinator>` or `cancel <task id> <attempt> <terminate: 0|1>`.
fn encode_announcement(announcement: &Announcement) -> String {
    match announcement {
        Announcement::Work { from } => format!("work {from}"),
        Announcement::Cancel { token, terminate } => {
            format!(
                "cancel {} {} {}",
                token.task_id,
                token.attempt,
                u8::from(*terminate)
            )
        }
    }
}

fn decode_announcement(payload: &str) -> Option<Announcement> {
    let mut parts = payload.split(' ');
    match parts.next()? {
        "work" => Some(Announcement::Work {
            from: parts.next()?.to_owned(),
        }),
        "cancel" => {
            let task_id = parts.next()?;
            let attempt = parts.next()?.parse().ok()?;
            let terminate = parts.next()? == "1";
            Some(Announcement::Cancel {
                token: LeaseToken::parse("announcement", task_id, attempt).ok()?,
                terminate,
            })
        }
        _ => None,
    }
}

/// LISTEN on the announcement channel. sqlx reconnects a dropped listener on the next receive.
struct PostgresListener(sqlx::postgres::PgListener);

#[async_trait]
impl AnnouncementListener for PostgresListener {
    async fn next(&mut self) -> Result<Announcement, StoreError> {
        loop {
            let notification = self.0.recv().await.map_err(classify)?;
            match decode_announcement(notification.payload()) {
                Some(announcement) => return Ok(announcement),
                None => tracing::debug!(payload = notification.payload(), "unknown announcement"),
            }
        }
    }
}

/// Inserts tasks on a connection (or in a transaction).
async fn insert_tasks_on(
    connection: &mut sqlx::PgConnection,
    tasks: &[NewTask],
) -> Result<Vec<Inserted>, StoreError> {
    let mut ids = Vec::with_capacity(tasks.len());
    let mut names = Vec::with_capacity(tasks.len());
    let mut queues = Vec::with_capacity(tasks.len());
    let mut priorities = Vec::with_capacity(tasks.len());
    let mut states = Vec::with_capacity(tasks.len());
    let mut args = Vec::with_capacity(tasks.len());
    let mut max_retries = Vec::with_capacity(tasks.len());
    let mut soft_limits = Vec::with_capacity(tasks.len());
    let mut hard_limits = Vec::with_capacity(tasks.len());
    let mut keys = Vec::with_capacity(tasks.len());
    let mut parents = Vec::with_capacity(tasks.len());
    let mut roots = Vec::with_capacity(tasks.len());
    let mut created = Vec::with_capacity(tasks.len());
    let mut run_ats = Vec::with_capacity(tasks.len());
    let mut expiries = Vec::with_capacity(tasks.len());
    let mut waits_for = Vec::with_capacity(tasks.len());
    for task in tasks {
        waits_for.push(task.waits_for.map(|id| id.as_uuid()));
        ids.push(task.id.as_uuid());
        names.push(task.name.as_str());
        queues.push(task.queue.as_str());
        priorities.push(i16::from(task.priority.value()));
        states.push(task.initial_state().as_str());
        args.push(task.args.as_str());
        max_retries.push(i32::try_from(task.max_retries).unwrap_or(i32::MAX));
        soft_limits.push(millis(task.time_limits.soft));
        hard_limits.push(millis(task.time_limits.hard));
        keys.push(task.idempotency_key.as_deref());
        parents.push(task.parent_id.map(|id| id.as_uuid()));
        roots.push(task.root_id.as_uuid());
        created.push(task.created_at);
        run_ats.push(task.run_at);
        expiries.push(task.expires_at);
    }
    let inserted: HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO tasks (id, name, queue, priority, state, args, max_retries, \
             soft_time_limit_ms, hard_time_limit_ms, idempotency_key, parent_id, root_id, \
             created_at, run_at, expires_at, waits_for) \
         SELECT id, name, queue, priority, state, args::jsonb, max_retries, soft, hard, \
             idempotency_key, parent_id, root_id, created_at, run_at, expires_at, waits_for \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], \
             $7::int4[], $8::int8[], $9::int8[], $10::text[], $11::uuid[], $12::uuid[], \
             $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::uuid[]) \
           AS new(id, name, queue, priority, state, args, max_retries, soft, hard, \
             idempotency_key, parent_id, root_id, created_at, run_at, expires_at, \
             waits_for) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&queues)
    .bind(&priorities)
    .bind(&states)
    .bind(&args)
    .bind(&max_retries)
    .bind(&soft_limits)
    .bind(&hard_limits)
    .bind(&keys)
    .bind(&parents)
    .bind(&roots)
    .bind(&created)
    .bind(&run_ats)
    .bind(&expiries)
    .bind(&waits_for)
    .fetch_all(&mut *connection)
    .await
    .map_err(classify)?
    .into_iter()
    .collect();

    // A task not inserted had its idempotency key taken: name the task that holds it.
    let taken: Vec<&str> = tasks
        .iter()
        .filter(|task| !inserted.contains(&task.id.as_uuid()))
        .filter_map(|task| task.idempotency_key.as_deref())
        .collect();
    let holders: HashMap<String, Uuid> = if taken.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT idempotency_key, id FROM tasks WHERE idempotency_key = ANY($1::text[])",
        )
        .bind(&taken)
        .fetch_all(&mut *connection)
        .await
        .map_err(classify)?
        .into_iter()
        .collect()
    };
    tasks
        .iter()
        .map(|task| {
            if inserted.contains(&task.id.as_uuid()) {
                return Ok(Inserted {
                    id: task.id,
                    created: true,
                });
            }
            let holder = task
                .idempotency_key
                .as_ref()
                .and_then(|key| holders.get(key))
                .ok_or_else(|| {
                    StoreError::Internal(sqlx::Error::Protocol(format!(
                        "task {} was neither inserted nor found by its idempotency key",
                        task.id
                    )))
                })?;
            Ok(Inserted {
                id: TaskId::from(*holder),
                created: false,
            })
        })
        .collect()
}

/// Locks tasks' rows in id order. Every statement that may wait for several leased rows locks
/// them in this one order (or skips locked rows), so concurrent writers cannot deadlock; a
/// transaction that updates rows in several statements takes all its locks first, here.
async fn lock_in_id_order(
    transaction: &mut sqlx::PgConnection,
    ids: &[TaskId],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = ids.iter().map(TaskId::as_uuid).collect();
    ids.sort_unstable();
    ids.dedup();
    // One primary-key lookup per id, in the array's order (a nested loop keeps its outer
    // order). `id = ANY($1) ORDER BY id` did the same until the server switched the prepared
    // statement to a generic plan, chosen while the table was small, that walks the whole
    // primary key in order: 7.5 ms per batch instead of 0.16 ms once the table had grown.
    sqlx::query(
        "SELECT locked.one FROM unnest($1::uuid[]) AS wanted(id) \
         CROSS JOIN LATERAL (SELECT 1 AS one FROM tasks t WHERE t.id = wanted.id FOR UPDATE) \
             AS locked",
    )
    .bind(&ids)
    .execute(&mut *transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// What a tree looks like now: its root and the counts over all its tasks and records.
async fn observe_tree(
    transaction: &mut sqlx::PgConnection,
    root: TaskId,
) -> Result<Option<Observed>, StoreError> {
    let root_row: Option<RootRow> = sqlx::query_as(
        "SELECT state, error_kind, error_message, progress_done, progress_total, \
                 progress_message FROM tasks WHERE id = $1",
    )
    .bind(root.as_uuid())
    .fetch_optional(&mut *transaction)
    .await
    .map_err(classify)?;
    let Some((state, error_kind, error_message, done, total, message)) = root_row else {
        return Ok(None);
    };
    let tasks: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT state, count(*), coalesce(sum(progress_done), 0)::bigint, \
             coalesce(sum(progress_total), 0)::bigint \
         FROM tasks WHERE root_id = $1 GROUP BY state",
    )
    .bind(root.as_uuid())
    .fetch_all(&mut *transaction)
    .await
    .map_err(classify)?;
    let records: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM task_records WHERE root_id = $1 GROUP BY status",
    )
    .bind(root.as_uuid())
    .fetch_all(&mut *transaction)
    .await
    .map_err(classify)?;
    let latest_message: Option<String> = sqlx::query_scalar(
        "SELECT progress_message FROM tasks WHERE root_id = $1 AND progress_message <> '' \
         ORDER BY progress_at DESC NULLS LAST LIMIT 1",
    )
    .bind(root.as_uuid())
    .fetch_optional(&mut *transaction)
    .await
    .map_err(classify)?;
    let root_state = TaskState::from_name(&state).ok_or_else(|| {
        StoreError::Internal(sqlx::Error::Protocol(format!(
            "unknown task state {state:?}"
        )))
    })?;
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

/// Records progress; the caller holds the rows' locks.
async fn record_progress(
    transaction: &mut sqlx::PgConnection,
    writes: &[&ProgressWrite],
) -> Result<(), StoreError> {
    let (ids, attempts) = token_arrays(writes.iter().map(|write| write.token));
    let workers: Vec<&str> = writes.iter().map(|write| write.worker.as_str()).collect();
    let done: Vec<i64> = writes
        .iter()
        .map(|write| i64::try_from(write.report.done).unwrap_or(i64::MAX))
        .collect();
    let total: Vec<i64> = writes
        .iter()
        .map(|write| i64::try_from(write.report.total).unwrap_or(i64::MAX))
        .collect();
    let messages: Vec<&str> = writes
        .iter()
        .map(|write| write.report.message.as_str())
        .collect();
    let at: Vec<DateTime<Utc>> = writes.iter().map(|write| write.at).collect();
    sqlx::query(
        "UPDATE tasks t SET progress_done = u.done, progress_total = u.total, \
             progress_message = u.message, progress_at = u.at \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::int8[], $5::int8[], $6::text[], \
             $7::timestamptz[]) AS u(id, attempt, worker_id, done, total, message, at) \
         WHERE t.id = u.id AND t.attempt = u.attempt AND t.worker_id = u.worker_id \
             AND t.state IN ('leased', 'running')",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&done)
    .bind(&total)
    .bind(&messages)
    .bind(&at)
    .execute(&mut *transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Records records; the caller holds the tasks' locks. A key written twice in one batch keeps
/// its last write; records take their positions in the order they were emitted.
async fn record_records(
    transaction: &mut sqlx::PgConnection,
    writes: &[RecordWrite],
) -> Result<(), StoreError> {
    let mut positions: HashMap<(TaskId, &str, &str), usize> = HashMap::new();
    let mut latest: Vec<(&RecordWrite, &RecordEntry)> = Vec::new();
    for write in writes {
        for record in &write.records {
            let key = (
                write.token.task_id,
                record.kind.as_str(),
                record.key.as_str(),
            );
            match positions.get(&key) {
                Some(&position) => latest[position] = (write, record),
                None => {
                    positions.insert(key, latest.len());
                    latest.push((write, record));
                }
            }
        }
    }
    let mut ids = Vec::with_capacity(latest.len());
    let mut attempts = Vec::with_capacity(latest.len());
    let mut workers = Vec::with_capacity(latest.len());
    let mut kinds = Vec::with_capacity(latest.len());
    let mut keys = Vec::with_capacity(latest.len());
    let mut statuses = Vec::with_capacity(latest.len());
    let mut data: Vec<Option<&str>> = Vec::with_capacity(latest.len());
    let mut at = Vec::with_capacity(latest.len());
    for (write, record) in &latest {
        ids.push(write.token.task_id.as_uuid());
        attempts.push(i32::try_from(write.token.attempt).unwrap_or(i32::MAX));
        workers.push(write.worker.as_str());
        kinds.push(record.kind.as_str());
        keys.push(record.key.as_str());
        statuses.push(record.status.as_str());
        data.push(record.data.as_ref().map(JsonText::as_str));
        at.push(write.at);
    }
    sqlx::query(
        "INSERT INTO task_records (root_id, task_id, kind, key, status, data, created_at, \
             updated_at) \
         SELECT t.root_id, t.id, r.kind, r.key, r.status, r.data::jsonb, r.at, r.at \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::timestamptz[]) WITH ORDINALITY \
               AS r(id, attempt, worker_id, kind, key, status, data, at, position) \
         JOIN tasks t ON t.id = r.id AND t.attempt = r.attempt AND t.worker_id = r.worker_id \
             AND t.state IN ('leased', 'running') \
         ORDER BY r.position \
         ON CONFLICT (root_id, kind, key) DO UPDATE SET status = excluded.status, \
             data = excluded.data, task_id = excluded.task_id, updated_at = excluded.updated_at",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&kinds)
    .bind(&keys)
    .bind(&statuses)
    .bind(&data)
    .bind(&at)
    .execute(&mut *transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Records starts; the caller holds the rows' locks.
async fn record_starts(
    transaction: &mut sqlx::PgConnection,
    starts: &[Start],
) -> Result<(), StoreError> {
    let (ids, attempts) = token_arrays(starts.iter().map(|start| start.token));
    let workers: Vec<&str> = starts.iter().map(|start| start.worker.as_str()).collect();
    let at: Vec<DateTime<Utc>> = starts.iter().map(|start| start.at).collect();
    let expiries: Vec<DateTime<Utc>> = starts.iter().map(|start| start.lease_expires_at).collect();
    sqlx::query(
        "UPDATE tasks t SET state = 'running', started_at = u.at, \
             lease_expires_at = u.lease_expires_at \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], \
             $5::timestamptz[]) AS u(id, attempt, worker_id, at, lease_expires_at) \
         WHERE t.id = u.id AND t.attempt = u.attempt AND t.worker_id = u.worker_id \
             AND t.state = 'leased'",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&at)
    .bind(&expiries)
    .execute(&mut *transaction)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Records completions; the caller holds the rows' locks.
async fn record_completions(
    transaction: &mut sqlx::PgConnection,
    completions: &[Completion],
) -> Result<Vec<bool>, StoreError> {
    let (ids, attempts) = token_arrays(completions.iter().map(|completion| completion.token));
    let mut workers = Vec::with_capacity(completions.len());
    let mut states = Vec::with_capacity(completions.len());
    let mut results: Vec<Option<&str>> = Vec::with_capacity(completions.len());
    let mut kinds: Vec<Option<&str>> = Vec::with_capacity(completions.len());
    let mut messages: Vec<Option<&str>> = Vec::with_capacity(completions.len());
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(completions.len());
    let mut at = Vec::with_capacity(completions.len());
    let mut started: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(completions.len());
    for completion in completions {
        workers.push(completion.worker.as_str());
        at.push(completion.at);
        started.push(completion.started_at);
        match &completion.resolution {
            Resolution::Succeeded(result) => {
                states.push(TaskState::Succeeded.as_str());
                results.push(Some(result.as_str()));
                kinds.push(None);
                messages.push(None);
                run_ats.push(None);
            }
            Resolution::Retry {
                kind,
                message,
                run_at,
            } => {
                states.push(TaskState::Scheduled.as_str());
                results.push(None);
                kinds.push(Some(kind));
                messages.push(Some(message));
                run_ats.push(Some(*run_at));
            }
            Resolution::Failed { kind, message } => {
                states.push(TaskState::Failed.as_str());
                results.push(None);
                kinds.push(Some(kind));
                messages.push(Some(message));
                run_ats.push(None);
            }
        }
    }
    let applied: HashSet<(Uuid, i32)> = sqlx::query_as(
        "UPDATE tasks t SET \
             state = u.state, \
             result = u.result::jsonb, \
             failures = CASE WHEN u.error_kind IS NULL THEN t.failures \
                 ELSE t.failures || jsonb_build_array(jsonb_build_object('attempt', t.attempt, \
                     'worker_id', u.worker_id, 'kind', u.error_kind, \
                     'message', u.error_message, 'at', u.at)) END, \
             error_kind = u.error_kind, \
             error_message = u.error_message, \
             run_at = COALESCE(u.run_at, t.run_at), \
             retries = t.retries + CASE WHEN u.state = 'scheduled' THEN 1 ELSE 0 END, \
             finished_at = CASE WHEN u.state = 'scheduled' THEN NULL ELSE u.at END, \
             started_at = COALESCE(t.started_at, u.started_at), \
             lease_expires_at = NULL \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], \
             $10::timestamptz[]) \
           AS u(id, attempt, worker_id, state, result, error_kind, error_message, run_at, at, \
             started_at) \
         WHERE t.id = u.id AND t.attempt = u.attempt AND t.worker_id = u.worker_id \
             AND t.state IN ('leased', 'running') \
         RETURNING t.id, t.attempt",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&states)
    .bind(&results)
    .bind(&kinds)
    .bind(&messages)
    .bind(&run_ats)
    .bind(&at)
    .bind(&started)
    .fetch_all(&mut *transaction)
    .await
    .map_err(classify)?
    .into_iter()
    .collect();
    Ok(ids
        .iter()
        .zip(&attempts)
        .map(|(id, attempt)| applied.contains(&(*id, *attempt)))
        .collect())
}
