//! Tasks on Postgres: inserted in batches with `unnest`, read by root, listed by the filters
//! given, cancelled with their descendants.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::backend::Tasks;
use super::super::encoding::{millis, rate_keys_to_json};
use super::super::row::{decoded, task_record};
use super::super::{Cancelled, StoreError, TaskFilter, tasks};
use super::{PostgresStore, classify};
use crate::domain::{Inserted, NewTask, TaskId, TaskRecord};

#[async_trait]
impl Tasks for PostgresStore {
    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(classify)?;
        insert_tasks_on(&mut connection, tasks).await
    }

    async fn insert_tasks_in(
        transaction: &mut Self::Transaction,
        tasks: &[NewTask],
    ) -> Result<Vec<Inserted>, StoreError> {
        insert_tasks_on(transaction, tasks).await
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
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {columns} FROM tasks t WHERE "
        ));
        push_filter(&mut query, filter);
        query
            .push(format!(" ORDER BY {QUIET_FROM}, t.seq LIMIT "))
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        decoded(&rows, task_record)
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        if filter.states.is_empty() {
            return Ok(0);
        }
        let mut query =
            sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT count(*) FROM tasks t WHERE ");
        push_filter(&mut query, filter);
        let count: i64 = query
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn cancel(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(classify)?;
        let Some(previous) = tasks::state_of(&mut *transaction, id).await? else {
            return Ok(None);
        };
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
        let cancelled: Vec<(Option<TaskId>, String, i64)> = cancelled
            .into_iter()
            .map(|(task, state, attempt)| (Some(task.into()), state, i64::from(attempt)))
            .collect();
        Ok(Some(tasks::cancelled_of(previous, &cancelled)))
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
    let mut submitters = Vec::with_capacity(tasks.len());
    let mut rate_keys = Vec::with_capacity(tasks.len());
    let mut governed = Vec::with_capacity(tasks.len());
    let mut groups = Vec::with_capacity(tasks.len());
    let mut concurrency = Vec::with_capacity(tasks.len());
    let mut positions = Vec::with_capacity(tasks.len());
    for task in tasks {
        rate_keys.push(rate_keys_to_json(&task.rate_keys));
        governed.push(task.governed);
        groups.push(task.group_key.as_ref().map(|key| key.as_str()));
        concurrency.push(task.max_concurrency.map(|limit| limit as i32));
        positions.push(task.fair_position);
        submitters.push(task.submitted_by.as_deref());
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
             created_at, run_at, expires_at, waits_for, submitted_by, rate_keys, governed, \
             group_key, max_concurrency, fair_position) \
         SELECT id, name, queue, priority, state, args::jsonb, max_retries, soft, hard, \
             idempotency_key, parent_id, root_id, created_at, run_at, expires_at, waits_for, \
             submitted_by, rate_keys::jsonb, governed, group_key, max_concurrency, \
             fair_position \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], \
             $7::int4[], $8::int8[], $9::int8[], $10::text[], $11::uuid[], $12::uuid[], \
             $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::uuid[], \
             $17::text[], $18::text[], $19::bool[], $20::text[], $21::int4[], $22::int8[]) \
           AS new(id, name, queue, priority, state, args, max_retries, soft, hard, \
             idempotency_key, parent_id, root_id, created_at, run_at, expires_at, \
             waits_for, submitted_by, rate_keys, governed, group_key, max_concurrency, \
             fair_position) \
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
    .bind(&submitters)
    .bind(&rate_keys)
    .bind(&governed)
    .bind(&groups)
    .bind(&concurrency)
    .bind(&positions)
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

/// A task's last sign of life: its last progress, else its start, else its submission.
const QUIET_FROM: &str = "greatest(t.progress_at, t.started_at, t.created_at)";

/// The conditions of `filter` on `tasks t`: only the filters given, and the states as literals
/// (a closed set of names), so the planner can use `tasks_unfinished_by_name` and
/// `tasks_by_root`.
fn push_filter(query: &mut sqlx::QueryBuilder<sqlx::Postgres>, filter: &TaskFilter) {
    let states: Vec<String> = filter
        .states
        .iter()
        .map(|state| format!("'{}'", state.as_str()))
        .collect();
    query.push(format!("t.state IN ({})", states.join(", ")));
    if !filter.names.is_empty() {
        let names: Vec<String> = filter
            .names
            .iter()
            .map(|name| name.as_str().to_owned())
            .collect();
        query.push(" AND t.name = ANY(").push_bind(names).push(")");
    }
    if !filter.queues.is_empty() {
        let queues: Vec<String> = filter
            .queues
            .iter()
            .map(|queue| queue.as_str().to_owned())
            .collect();
        query
            .push(" AND t.queue = ANY(")
            .push_bind(queues)
            .push(")");
    }
    if !filter.error_kinds.is_empty() {
        query
            .push(" AND t.error_kind = ANY(")
            .push_bind(filter.error_kinds.clone())
            .push(")");
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
            .push(format!(" AND {QUIET_FROM} <= "))
            .push_bind(quiet_since);
    }
    for (column, range) in [
        ("created_at", filter.created),
        ("finished_at", filter.finished),
    ] {
        if let Some(after) = range.after {
            query.push(format!(" AND t.{column} >= ")).push_bind(after);
        }
        if let Some(before) = range.before {
            query.push(format!(" AND t.{column} < ")).push_bind(before);
        }
    }
}
