//! Workers as the store remembers them, the same way on both databases.

use chrono::{DateTime, Utc};

use super::backend::Database;
use super::encoding::worker_stats_to_json;
use super::row::{Columns, decoded, worker_info};
use super::statements::{Param, Statements};
use super::{StoreError, WorkerRegistration};
use crate::domain::{QueueName, TaskName, WorkerId, WorkerInfo, WorkerStats};

/// A count as the `workers` table holds it: Postgres' columns are 32-bit.
fn int4(value: u32) -> Param<'static> {
    i64::from(i32::try_from(value).unwrap_or(i32::MAX)).into()
}

pub(super) async fn register_worker<B: Database>(
    backend: &B,
    worker: &WorkerRegistration,
) -> Result<(), StoreError> {
    let queues: Vec<&str> = worker.queues.iter().map(QueueName::as_str).collect();
    let task_names: Vec<&str> = worker.task_names.iter().map(TaskName::as_str).collect();
    backend
        .connection()
        .await?
        .execute(
            "INSERT INTO workers (id, hostname, pid, queues, task_names, concurrency, \
                 prefetch_multiplier, version, coordinator_id, connected_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid, \
                 queues = excluded.queues, task_names = excluded.task_names, \
                 concurrency = excluded.concurrency, \
                 prefetch_multiplier = excluded.prefetch_multiplier, \
                 version = excluded.version, coordinator_id = excluded.coordinator_id, \
                 connected_at = excluded.connected_at",
            &[
                worker.id.as_str().into(),
                (&worker.hostname).into(),
                int4(worker.pid),
                Param::Names(&queues),
                Param::Names(&task_names),
                int4(worker.concurrency),
                int4(worker.prefetch_multiplier),
                (&worker.version).into(),
                (&worker.coordinator_id).into(),
                worker.connected_at.into(),
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn knows_task_name<B: Database>(
    backend: &B,
    name: &TaskName,
) -> Result<bool, StoreError> {
    backend
        .connection()
        .await?
        .fetch_one(B::KNOWS_TASK_NAME, &[name.as_str().into()])
        .await?
        .boolean("known")
        .map_err(StoreError::Internal)
}

pub(super) async fn worker_seen<B: Database>(
    backend: &B,
    worker: &WorkerId,
    stats: Option<&WorkerStats>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let stats = stats.map(worker_stats_to_json);
    backend
        .connection()
        .await?
        .execute(
            "UPDATE workers SET last_seen_at = $2, stats = coalesce($3, stats) WHERE id = $1",
            &[worker.as_str().into(), now.into(), stats.as_ref().into()],
        )
        .await?;
    Ok(())
}

pub(super) async fn workers<B: Database>(backend: &B) -> Result<Vec<WorkerInfo>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT id, hostname, pid, queues, task_names, concurrency, prefetch_multiplier, \
                 version, coordinator_id, connected_at, last_seen_at, stats \
             FROM workers ORDER BY id",
            &[],
        )
        .await?;
    decoded(&rows, worker_info)
}
