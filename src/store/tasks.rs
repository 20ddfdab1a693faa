//! Task reads and the queue-wide writes both databases run the same way.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::backend::Database;
use super::encoding::count;
use super::row::{Columns, decoded, task_record};
use super::statements::Statements;
use super::{Cancelled, Parentage, Promoted, QueueCounts, StoreError};
use crate::domain::{GroupKey, LeaseToken, QueueName, TaskId, TaskRecord, TaskState};

pub(super) async fn task<B: Database>(
    backend: &B,
    id: TaskId,
) -> Result<Option<TaskRecord>, StoreError> {
    let row = backend
        .connection()
        .await?
        .fetch_optional(B::TASKS.task, &[id.into()])
        .await?;
    let Some(mut task) = row
        .as_ref()
        .map(task_record)
        .transpose()
        .map_err(StoreError::Internal)?
    else {
        return Ok(None);
    };
    task.tree_paused_at = super::paused_trees::paused_at(backend, task.root_id).await?;
    Ok(Some(task))
}

pub(super) async fn roots<B: Database>(
    backend: &B,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, Parentage>, StoreError> {
    let mut connection = backend.connection().await?;
    let mut roots = HashMap::with_capacity(ids.len());
    for id in ids {
        let row = connection
            .fetch_optional(
                "SELECT root_id, group_key FROM tasks WHERE id = $1",
                &[(*id).into()],
            )
            .await?;
        if let Some(row) = row {
            let parentage = Parentage {
                root_id: row.task_id("root_id").map_err(StoreError::Internal)?,
                group_key: row
                    .optional_text("group_key")
                    .map_err(StoreError::Internal)?
                    .and_then(|key| GroupKey::parse("group_key", &key).ok()),
            };
            roots.insert(*id, parentage);
        }
    }
    Ok(roots)
}

pub(super) async fn tasks_in_state<B: Database>(
    backend: &B,
    state: TaskState,
    limit: u32,
) -> Result<Vec<TaskRecord>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            B::TASKS.in_state,
            &[state.as_str().into(), i64::from(limit).into()],
        )
        .await?;
    decoded(&rows, task_record)
}

pub(super) async fn promote_due<B: Database>(
    backend: &B,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Promoted, StoreError> {
    let mut connection = backend.connection().await?;
    // A paused tree's due tasks are parked, not promoted (see `paused_trees`).
    connection.execute(B::TASKS.park_due, &[now.into()]).await?;
    let count = connection
        .execute(B::TASKS.promote_due, &[now.into(), i64::from(limit).into()])
        .await?;
    let next_due = connection
        .fetch_one(
            "SELECT min(run_at) AS next_due FROM tasks WHERE state = 'scheduled'",
            &[],
        )
        .await?
        .optional_moment("next_due")
        .map_err(StoreError::Internal)?;
    Ok(Promoted { count, next_due })
}

pub(super) async fn queue_counts<B: Database>(backend: &B) -> Result<QueueCounts, StoreError> {
    let mut connection = backend.connection().await?;
    let by_state = connection
        .fetch_all(
            "SELECT queue, state, count(*) AS count FROM tasks \
             WHERE state IN ('pending', 'scheduled', 'leased', 'running', 'waiting') \
             GROUP BY queue, state",
            &[],
        )
        .await?;
    let pending_by_name = connection
        .fetch_all(
            "SELECT queue, name, count(*) AS count, min(created_at) AS oldest FROM tasks \
             WHERE state = 'pending' GROUP BY queue, name",
            &[],
        )
        .await?;
    Ok(QueueCounts {
        by_state: decoded(&by_state, |row| {
            Ok((
                row.text("queue")?,
                row.text("state")?,
                u64::try_from(row.integer("count")?).unwrap_or(0),
            ))
        })?,
        pending_by_name: decoded(&pending_by_name, |row| {
            Ok((
                row.text("queue")?,
                row.text("name")?,
                u64::try_from(row.integer("count")?).unwrap_or(0),
                row.moment("oldest")?,
            ))
        })?,
    })
}

pub(super) async fn purge<B: Database>(
    backend: &B,
    queue: &QueueName,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    backend
        .connection()
        .await?
        .execute(
            "UPDATE tasks SET state = 'cancelled', finished_at = $2, error_kind = 'cancelled', \
                 error_message = 'purged with its queue' \
             WHERE queue = $1 AND state IN ('pending', 'scheduled')",
            &[queue.as_str().into(), now.into()],
        )
        .await
}

pub(super) async fn retry_failed<B: Database>(
    backend: &B,
    ids: &[TaskId],
    now: DateTime<Utc>,
) -> Result<Vec<TaskId>, StoreError> {
    // In id order, as every multi-row update of tasks, so concurrent writers cannot deadlock.
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut transaction = backend.begin().await?;
    let mut roots = Vec::new();
    for id in ids {
        // The failed attempts stay in `failures`; the attempt number goes on rising, so every
        // old lease stays fenced out.
        let retried = transaction
            .fetch_optional(
                "UPDATE tasks SET state = 'pending', run_at = $2, retries = retries + 1, result = NULL, \
                     error_kind = NULL, error_message = NULL, session_id = NULL, \
                     leased_at = NULL, lease_expires_at = NULL, started_at = NULL, \
                     finished_at = NULL \
                 WHERE id = $1 AND state = 'failed' RETURNING root_id",
                &[id.into(), now.into()],
            )
            .await?;
        if let Some(row) = retried {
            roots.push(row.task_id("root_id").map_err(StoreError::Internal)?);
        }
    }
    let mut reopened = roots.clone();
    reopened.sort_unstable();
    reopened.dedup();
    for root in reopened {
        transaction
            .execute(
                "UPDATE task_trees SET finished_at = NULL \
                 WHERE root_id = $1 AND finished_at IS NOT NULL",
                &[root.into()],
            )
            .await?;
    }
    B::commit(transaction).await?;
    Ok(roots)
}

/// A task's state, read inside a transaction (a cancellation's first step); `None` when there is
/// no such task.
pub(super) async fn state_of(
    connection: &mut impl Statements,
    id: TaskId,
) -> Result<Option<TaskState>, StoreError> {
    let row = connection
        .fetch_optional("SELECT state FROM tasks WHERE id = $1", &[id.into()])
        .await?;
    row.map(|row| row.parsed("state", TaskState::from_name))
        .transpose()
        .map_err(StoreError::Internal)
}

/// What a cancellation did, from the task's state before and the cancelled tasks as `(id, state
/// before, attempt)`: those that were leased or running hold leases their workers must hear of.
pub(super) fn cancelled_of(
    previous: TaskState,
    tasks: &[(Option<TaskId>, String, i64)],
) -> Cancelled {
    let leases = tasks
        .iter()
        .filter(|(_, state, _)| state == "leased" || state == "running")
        .filter_map(|(task, _, attempt)| {
            Some(LeaseToken {
                task_id: (*task)?,
                attempt: count(*attempt),
            })
        })
        .collect();
    Cancelled {
        previous,
        leases,
        cancelled: tasks.len() as u64,
    }
}
