//! Task trees and their events, once for both databases: the backend supplies the statements,
//! `domain::plan_events` decides which events tell the change.

use chrono::{DateTime, Utc};

use super::backend::Database;
use super::encoding::{aggregate_to_json, reported_from_json, reported_to_json};
use super::row::{Columns, decoded, observed, tree_event};
use super::statements::Statements;
use super::{StoreError, TreeUpdate};
use crate::domain::{Observed, TaskId, TreeEvent, event_to_json, opening, plan_events};

const INSERT_EVENT: &str = "INSERT INTO task_events (root_id, seq, at, event, aggregate) \
     VALUES ($1, $2, $3, $4, $5)";

pub(super) async fn open_tree<B: Database>(
    backend: &B,
    root: TaskId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (event, reported) = opening(root);
    let mut transaction = backend.begin().await?;
    let opened = transaction
        .execute(
            "INSERT INTO task_trees (root_id, last_seq, reported, created_at) \
             VALUES ($1, 1, $2, $3) ON CONFLICT (root_id) DO NOTHING",
            &[
                root.into(),
                (&reported_to_json(&reported)).into(),
                now.into(),
            ],
        )
        .await?;
    if opened == 1 {
        transaction
            .execute(
                INSERT_EVENT,
                &[
                    root.into(),
                    1_i64.into(),
                    now.into(),
                    (&event_to_json(&event)).into(),
                    (&aggregate_to_json(&reported.aggregate)).into(),
                ],
            )
            .await?;
    }
    B::commit(transaction).await
}

pub(super) async fn update_tree<B: Database>(
    backend: &B,
    root: TaskId,
    now: DateTime<Utc>,
) -> Result<TreeUpdate, StoreError> {
    let mut transaction = backend.begin().await?;
    let Some(tree) = transaction
        .fetch_optional(B::TREES.read_for_update, &[root.into()])
        .await?
    else {
        return Ok(TreeUpdate::default());
    };
    let last_seq = tree.integer("last_seq").map_err(StoreError::Internal)?;
    let reported = tree
        .optional_json("reported")
        .map_err(StoreError::Internal)?
        .unwrap_or_default();
    if tree
        .optional_moment("finished_at")
        .map_err(StoreError::Internal)?
        .is_some()
    {
        return Ok(TreeUpdate::default());
    }
    // A callback runs once its parent and every other child of that parent have finished.
    let callbacks_released = transaction
        .execute(B::TREES.release_callbacks, &[root.into(), now.into()])
        .await?;
    let Some(observed) = observe_tree::<B>(&mut transaction, root).await? else {
        return Ok(TreeUpdate::default());
    };
    let plan = plan_events(&reported_from_json(&reported), &observed);
    let aggregate = aggregate_to_json(&observed.aggregate);
    let mut sequence = last_seq;
    for event in &plan.events {
        sequence += 1;
        transaction
            .execute(
                INSERT_EVENT,
                &[
                    root.into(),
                    sequence.into(),
                    now.into(),
                    (&event_to_json(event)).into(),
                    (&aggregate).into(),
                ],
            )
            .await?;
    }
    if !plan.events.is_empty() || callbacks_released > 0 {
        transaction
            .execute(
                "UPDATE task_trees SET last_seq = $2, reported = $3, finished_at = $4 \
                 WHERE root_id = $1",
                &[
                    root.into(),
                    sequence.into(),
                    (&reported_to_json(&plan.reported)).into(),
                    plan.finished.then_some(now).into(),
                ],
            )
            .await?;
    }
    B::commit(transaction).await?;
    Ok(TreeUpdate {
        events: plan.events.len() as u64,
        finished: plan.finished,
        callbacks_released,
    })
}

/// What a tree looks like now: its root and the counts over all its tasks and records.
async fn observe_tree<B: Database>(
    transaction: &mut B::Transaction,
    root: TaskId,
) -> Result<Option<Observed>, StoreError> {
    let Some(root_row) = transaction
        .fetch_optional(
            "SELECT state, error_kind, error_message, progress_done, progress_total, \
                 progress_message FROM tasks WHERE id = $1",
            &[root.into()],
        )
        .await?
    else {
        return Ok(None);
    };
    let tasks = transaction
        .fetch_all(B::TREES.count_tasks, &[root.into()])
        .await?;
    let records = transaction
        .fetch_all(
            "SELECT status, count(*) AS count FROM task_records WHERE root_id = $1 \
             GROUP BY status",
            &[root.into()],
        )
        .await?;
    let latest_message = match transaction
        .fetch_optional(B::TREES.latest_message, &[root.into()])
        .await?
    {
        Some(row) => row
            .optional_text("progress_message")
            .map_err(StoreError::Internal)?,
        None => None,
    };
    observed(root, &root_row, &tasks, &records, latest_message)
        .map(Some)
        .map_err(StoreError::Internal)
}

pub(super) async fn unfinished_trees<B: Database>(
    backend: &B,
    limit: u32,
) -> Result<Vec<TaskId>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT root_id FROM task_trees WHERE finished_at IS NULL ORDER BY created_at \
             LIMIT $1",
            &[i64::from(limit).into()],
        )
        .await?;
    decoded(&rows, |row| row.task_id("root_id"))
}

pub(super) async fn tree_events<B: Database>(
    backend: &B,
    root: TaskId,
    after: u64,
    limit: u32,
) -> Result<Option<Vec<TreeEvent>>, StoreError> {
    let mut connection = backend.connection().await?;
    let exists = connection
        .fetch_one(
            "SELECT EXISTS (SELECT 1 FROM task_trees WHERE root_id = $1) AS found",
            &[root.into()],
        )
        .await?
        .boolean("found")
        .map_err(StoreError::Internal)?;
    if !exists {
        return Ok(None);
    }
    let rows = connection
        .fetch_all(
            "SELECT seq, at, event, aggregate FROM task_events \
             WHERE root_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                root.into(),
                i64::try_from(after).unwrap_or(i64::MAX).into(),
                i64::from(limit).into(),
            ],
        )
        .await?;
    decoded(&rows, |row| tree_event(root, row)).map(Some)
}
