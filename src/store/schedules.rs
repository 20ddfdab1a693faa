//! Periodic schedules, the same way on both databases.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::backend::{Database, Tasks};
use super::encoding::{schedule_task_to_json, timing_columns};
use super::row::schedule_of;
use super::statements::Statements;
use crate::domain::{NewTask, Schedule};

pub(super) async fn put_schedule<B: Database>(
    backend: &B,
    schedule: &Schedule,
) -> Result<(), StoreError> {
    let (every_ms, cron, timezone) = timing_columns(&schedule.timing);
    let task = schedule_task_to_json(&schedule.task);
    backend
        .connection()
        .await?
        .execute(
            "INSERT INTO schedules (name, task, every_ms, cron, timezone, paused, next_run_at, \
                 source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO UPDATE SET task = excluded.task, every_ms = excluded.every_ms, \
                 cron = excluded.cron, timezone = excluded.timezone, paused = excluded.paused, \
                 next_run_at = excluded.next_run_at, source = excluded.source",
            &[
                (&schedule.name).into(),
                (&task).into(),
                every_ms.into(),
                cron.into(),
                timezone.into(),
                schedule.paused.into(),
                schedule.next_run_at.into(),
                schedule.source.as_str().into(),
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn schedules<B: Database>(backend: &B) -> Result<Vec<Schedule>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT name, task, every_ms, cron, timezone, paused, next_run_at, last_run_at, \
                 last_task_id, source FROM schedules ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(schedule_of)
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()
        .map_err(StoreError::Internal)
}

pub(super) async fn delete_schedule<B: Database>(
    backend: &B,
    name: &str,
) -> Result<bool, StoreError> {
    let deleted = backend
        .connection()
        .await?
        .execute("DELETE FROM schedules WHERE name = $1", &[name.into()])
        .await?;
    Ok(deleted == 1)
}

pub(super) async fn pause_schedule<B: Database>(
    backend: &B,
    name: &str,
    paused: bool,
    next_run_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let updated = backend
        .connection()
        .await?
        .execute(
            "UPDATE schedules SET paused = $2, \
                 next_run_at = CASE WHEN $2 THEN next_run_at ELSE $3 END WHERE name = $1",
            &[name.into(), paused.into(), next_run_at.into()],
        )
        .await?;
    Ok(updated == 1)
}

/// The compare-and-set on the next tick and the submission share one transaction, so a tick
/// fires once however many coordinators try.
pub(super) async fn fire_schedule<B: Tasks>(
    backend: &B,
    name: &str,
    expected: DateTime<Utc>,
    next: DateTime<Utc>,
    task: Option<&NewTask>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut transaction = backend.begin().await?;
    let ticked = transaction
        .execute(
            "UPDATE schedules SET next_run_at = $3, last_run_at = $4, \
                 last_task_id = coalesce($5, last_task_id) \
             WHERE name = $1 AND next_run_at = $2 AND NOT paused",
            &[
                name.into(),
                expected.into(),
                next.into(),
                now.into(),
                task.map(|task| task.id).into(),
            ],
        )
        .await?;
    if ticked == 0 {
        return Ok(false);
    }
    if let Some(task) = task {
        let prepared =
            super::fairness::prepare::<B>(&mut transaction, std::slice::from_ref(task)).await?;
        B::insert_tasks_in(&mut transaction, &prepared).await?;
    }
    B::commit(transaction).await?;
    Ok(true)
}
