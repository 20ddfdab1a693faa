//! Paused trees, the same way on both databases. A pause parks the tree's pending tasks (state
//! `scheduled`, run time `PARKED_FOR` later, so no claim reads them and nothing on the claim
//! path changes); a due task of a paused tree is parked instead of promoted; a child joining a
//! paused tree is inserted parked (`fairness::prepare`); a resume brings the parked tasks back
//! to their own run times. The root's row is locked by a pause and a resume, and shared by
//! inserts into its tree, so no child slips past either.

use chrono::{DateTime, Utc};

use super::backend::Database;
use super::encoding::count;
use super::row::Columns;
use super::statements::Statements;
use super::{PARKED_FOR, StoreError};
use crate::domain::{LeaseToken, TaskId, TaskState};

/// What pausing a tree found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreePause {
    /// There is no such task.
    NotFound,
    /// The task has a parent: its tree's root is this one.
    NotRoot(TaskId),
    /// Every task of the tree has finished.
    Finished,
    /// The tree is paused.
    Paused {
        /// False when it was paused already.
        changed: bool,
        /// Since when.
        paused_at: DateTime<Utc>,
        /// Its leased and running tasks, to be asked to stop.
        running: Vec<LeaseToken>,
    },
}

/// What resuming a tree found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeResume {
    /// There is no such task.
    NotFound,
    /// The task has a parent: its tree's root is this one.
    NotRoot(TaskId),
    /// The tree was resumed (`changed` false when it was not paused).
    Resumed {
        /// False when it was not paused.
        changed: bool,
    },
}

/// Locks a root for a pause or resume: `Err` with the answer when it is not one.
async fn lock_root<B: Database>(
    transaction: &mut B::Transaction,
    root: TaskId,
) -> Result<Result<TaskState, Option<TaskId>>, StoreError> {
    let Some(row) = transaction
        .fetch_optional(B::LEASES.lock_root, &[root.into()])
        .await?
    else {
        return Ok(Err(None));
    };
    let root_id = row.task_id("root_id").map_err(StoreError::Internal)?;
    if root_id != root {
        return Ok(Err(Some(root_id)));
    }
    let state = row
        .parsed("state", TaskState::from_name)
        .map_err(StoreError::Internal)?;
    Ok(Ok(state))
}

pub(super) async fn pause_tree<B: Database>(
    backend: &B,
    root: TaskId,
    now: DateTime<Utc>,
) -> Result<TreePause, StoreError> {
    let mut transaction = backend.begin().await?;
    match lock_root::<B>(&mut transaction, root).await? {
        Err(None) => return Ok(TreePause::NotFound),
        Err(Some(root)) => return Ok(TreePause::NotRoot(root)),
        Ok(_) => {}
    }
    let unfinished = transaction
        .fetch_one(
            "SELECT count(*) AS unfinished FROM tasks \
             WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) \
                 AND state IN ('pending', 'scheduled', 'leased', 'running', 'waiting')",
            &[root.into()],
        )
        .await?
        .integer("unfinished")
        .map_err(StoreError::Internal)?;
    if unfinished == 0 {
        return Ok(TreePause::Finished);
    }
    // A tree's tasks are the root and its descendants, read through `tasks_by_root`.
    let inserted = transaction
        .execute(
            "INSERT INTO paused_trees (root_id, paused_at) VALUES ($1, $2) \
             ON CONFLICT (root_id) DO NOTHING",
            &[root.into(), now.into()],
        )
        .await?;
    let paused_at = transaction
        .fetch_one(
            "SELECT paused_at FROM paused_trees WHERE root_id = $1",
            &[root.into()],
        )
        .await?
        .moment("paused_at")
        .map_err(StoreError::Internal)?;
    transaction
        .execute(B::TASKS.park_tree, &[root.into()])
        .await?;
    let rows = transaction
        .fetch_all(
            "SELECT id, attempt FROM tasks \
             WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) \
                 AND state IN ('leased', 'running') ORDER BY id",
            &[root.into()],
        )
        .await?;
    let running = rows
        .iter()
        .map(|row| {
            Ok(LeaseToken {
                task_id: row.task_id("id")?,
                attempt: count(row.integer("attempt")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::Internal)?;
    B::commit(transaction).await?;
    Ok(TreePause::Paused {
        changed: inserted == 1,
        paused_at,
        running,
    })
}

pub(super) async fn resume_tree<B: Database>(
    backend: &B,
    root: TaskId,
    now: DateTime<Utc>,
) -> Result<TreeResume, StoreError> {
    let mut transaction = backend.begin().await?;
    match lock_root::<B>(&mut transaction, root).await? {
        Err(None) => return Ok(TreeResume::NotFound),
        Err(Some(root)) => return Ok(TreeResume::NotRoot(root)),
        Ok(_) => {}
    }
    let deleted = transaction
        .execute(
            "DELETE FROM paused_trees WHERE root_id = $1",
            &[root.into()],
        )
        .await?;
    if deleted > 0 {
        transaction
            .execute(
                B::TASKS.unpark_tree,
                &[root.into(), (now + PARKED_FOR / 2).into()],
            )
            .await?;
    }
    B::commit(transaction).await?;
    Ok(TreeResume::Resumed {
        changed: deleted > 0,
    })
}

/// When tree `root` was paused, while it is.
pub(super) async fn paused_at<B: Database>(
    backend: &B,
    root: TaskId,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    backend
        .connection()
        .await?
        .fetch_optional(
            "SELECT paused_at FROM paused_trees WHERE root_id = $1",
            &[root.into()],
        )
        .await?
        .map(|row| row.moment("paused_at"))
        .transpose()
        .map_err(StoreError::Internal)
}
