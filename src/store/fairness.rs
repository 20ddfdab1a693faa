//! What an insert decides for the governed claim and for paused trees, the same way on both
//! databases, in the insert's transaction: each governed task's place in its queue's fair order
//! (start-time fair queuing, see `domain::GroupKey`), and whether a child joins a paused tree,
//! in which case it is parked until the tree is resumed.
//!
//! A group's next task starts where its previous one ended, or at the queue's fair clock (how
//! far the governed claim's service has reached) if that is later; a task without a group
//! starts at the clock. The claim serves the lowest place first within a priority, so groups
//! take turns however many tasks each has waiting.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::backend::Database;
use super::row::Columns;
use super::statements::Statements;
use super::{PARKED_FOR, StoreError};
use crate::domain::{NewTask, TaskId};

/// The tasks as they are to be inserted: places assigned, children of paused trees parked.
pub(super) async fn prepare<B: Database>(
    transaction: &mut B::Transaction,
    tasks: &[NewTask],
) -> Result<Vec<NewTask>, StoreError> {
    let mut prepared = tasks.to_vec();
    let paused = paused_roots::<B>(transaction, tasks).await?;
    for task in &mut prepared {
        if paused.contains(&task.root_id) {
            task.run_at += PARKED_FOR;
        }
    }
    assign_places::<B>(transaction, &mut prepared).await?;
    Ok(prepared)
}

/// Of the roots the children among `tasks` join, those paused. Each root is locked against a
/// pause (shared, in id order) first, so a child cannot slip in beside a pause that did not
/// see it: the pause waits for the insert, or the insert sees the pause.
async fn paused_roots<B: Database>(
    transaction: &mut B::Transaction,
    tasks: &[NewTask],
) -> Result<HashSet<TaskId>, StoreError> {
    let roots: BTreeSet<TaskId> = tasks
        .iter()
        .filter(|task| task.parent_id.is_some())
        .map(|task| task.root_id)
        .collect();
    let mut paused = HashSet::new();
    for root in roots {
        transaction
            .fetch_optional(B::LEASES.lock_root_shared, &[root.into()])
            .await?;
        let found = transaction
            .fetch_optional(
                "SELECT paused_at FROM paused_trees WHERE root_id = $1",
                &[root.into()],
            )
            .await?;
        if found.is_some() {
            paused.insert(root);
        }
    }
    Ok(paused)
}

/// Gives each governed task its place in its queue's fair order.
async fn assign_places<B: Database>(
    transaction: &mut B::Transaction,
    tasks: &mut [NewTask],
) -> Result<(), StoreError> {
    let queues: BTreeSet<String> = tasks
        .iter()
        .filter(|task| task.governed)
        .map(|task| task.queue.to_string())
        .collect();
    let mut clocks = BTreeMap::new();
    for queue in queues {
        let clock = transaction
            .fetch_optional(
                "SELECT position FROM fair_clocks WHERE queue = $1",
                &[queue.as_str().into()],
            )
            .await?
            .map(|row| row.integer("position"))
            .transpose()
            .map_err(StoreError::Internal)?
            .unwrap_or(0);
        clocks.insert(queue, clock);
    }
    // Each group's tasks in this insert, counted, then their run of places taken at once (the
    // group's row locked, in key order, so concurrent inserts of one group queue up).
    let mut groups: BTreeMap<(String, String), i64> = BTreeMap::new();
    for task in tasks.iter().filter(|task| task.governed) {
        if let Some(group) = &task.group_key {
            *groups
                .entry((task.queue.to_string(), group.to_string()))
                .or_default() += 1;
        }
    }
    let mut next: BTreeMap<(String, String), i64> = BTreeMap::new();
    for ((queue, group), count) in groups {
        let clock = clocks.get(&queue).copied().unwrap_or(0);
        let params = [queue.as_str().into(), group.as_str().into(), clock.into()];
        transaction
            .execute(
                "INSERT INTO fair_groups (queue, group_key, finish) VALUES ($1, $2, $3) \
                 ON CONFLICT (queue, group_key) DO NOTHING",
                &params,
            )
            .await?;
        let finish = transaction
            .fetch_one(B::LEASES.fair_group_for_update, &params[..2])
            .await?
            .integer("finish")
            .map_err(StoreError::Internal)?;
        let start = finish.max(clock);
        transaction
            .execute(
                "UPDATE fair_groups SET finish = $3 WHERE queue = $1 AND group_key = $2",
                &[
                    queue.as_str().into(),
                    group.as_str().into(),
                    (start + count).into(),
                ],
            )
            .await?;
        next.insert((queue, group), start);
    }
    for task in tasks.iter_mut().filter(|task| task.governed) {
        let queue = task.queue.to_string();
        task.fair_position = Some(match &task.group_key {
            None => clocks.get(&queue).copied().unwrap_or(0),
            Some(group) => {
                let place = next.entry((queue, group.to_string())).or_default();
                *place += 1;
                *place - 1
            }
        });
    }
    Ok(())
}
