//! Tasks on SQLite: inserted one by one in a transaction, listed with the filters as JSON arrays,
//! cancelled with their descendants.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::super::backend::{Database, Tasks};
use super::super::encoding::{millis, rate_keys_to_json};
use super::super::row::{decode_error, decoded, task_record};
use super::super::{Cancelled, StoreError, TaskFilter, tasks};
use super::{SqliteStore, classify, micros};
use crate::domain::{Inserted, JsonText, NewTask, TaskId, TaskName, TaskRecord};

#[async_trait]
impl Tasks for SqliteStore {
    async fn insert_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Inserted>, StoreError> {
        let mut transaction = self.begin().await?;
        let inserted = insert_each(&mut transaction, tasks).await?;
        transaction.commit().await.map_err(classify)?;
        Ok(inserted)
    }

    async fn insert_tasks_in(
        transaction: &mut Self::Transaction,
        tasks: &[NewTask],
    ) -> Result<Vec<Inserted>, StoreError> {
        insert_each(transaction, tasks).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT *, {QUIET_FROM} AS quiet_from FROM tasks WHERE "
        ));
        push_filter(&mut query, filter);
        query
            .push(" ORDER BY quiet_from, seq LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let mut tasks = decoded(&rows, task_record)?;
        if !filter.with_payloads {
            for task in &mut tasks {
                task.args = JsonText::empty_object();
                task.result = None;
            }
        }
        Ok(tasks)
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<u64, StoreError> {
        let mut query =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT count(*) FROM tasks WHERE ");
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
        let mut transaction = self.begin().await?;
        let Some(previous) = tasks::state_of(&mut *transaction, id).await? else {
            return Ok(None);
        };
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
        let unfinished: Vec<(Option<TaskId>, String, i64)> = unfinished
            .into_iter()
            .map(|(task, state, attempt)| {
                (Uuid::from_str(&task).ok().map(TaskId::from), state, attempt)
            })
            .collect();
        Ok(Some(tasks::cancelled_of(previous, &unfinished)))
    }
}

/// Inserts tasks one by one in a transaction.
async fn insert_each(
    transaction: &mut SqliteConnection,
    tasks: &[NewTask],
) -> Result<Vec<Inserted>, StoreError> {
    let mut inserted = Vec::with_capacity(tasks.len());
    for task in tasks {
        let created = sqlx::query(
            "INSERT INTO tasks (id, name, queue, priority, state, args, max_retries, \
                 soft_time_limit_ms, hard_time_limit_ms, idempotency_key, parent_id, root_id, \
                 created_at, run_at, expires_at, waits_for, submitted_by, rate_keys, \
                 governed, group_key, max_concurrency, fair_position) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .bind(task.submitted_by.as_deref())
        .bind(rate_keys_to_json(&task.rate_keys))
        .bind(task.governed)
        .bind(task.group_key.as_ref().map(|key| key.as_str()))
        .bind(task.max_concurrency.map(i64::from))
        .bind(task.fair_position)
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

/// A task's last sign of life: the latest of progress, start and submission (SQLite's max() of
/// a NULL is NULL, hence the coalesces).
const QUIET_FROM: &str = "max(coalesce(progress_at, created_at), \
     coalesce(started_at, created_at), created_at)";

/// The conditions of `filter` on `tasks`; lists travel as JSON arrays.
fn push_filter(query: &mut sqlx::QueryBuilder<sqlx::Sqlite>, filter: &TaskFilter) {
    let list = |values: Vec<&str>| serde_json::to_string(&values).unwrap_or_default();
    let states = list(filter.states.iter().map(|state| state.as_str()).collect());
    query
        .push("state IN (SELECT value FROM json_each(")
        .push_bind(states)
        .push("))");
    let lists = [
        (
            "name",
            list(filter.names.iter().map(TaskName::as_str).collect()),
        ),
        (
            "queue",
            list(filter.queues.iter().map(|queue| queue.as_str()).collect()),
        ),
        (
            "error_kind",
            list(filter.error_kinds.iter().map(String::as_str).collect()),
        ),
    ];
    for (column, values) in lists {
        if values != "[]" {
            query
                .push(format!(" AND {column} IN (SELECT value FROM json_each("))
                .push_bind(values)
                .push("))");
        }
    }
    if let Some(root) = filter.root {
        query.push(" AND root_id = ").push_bind(root.to_string());
    }
    if let Some(quiet_since) = filter.quiet_since {
        query
            .push(format!(" AND {QUIET_FROM} <= "))
            .push_bind(micros(quiet_since));
    }
    for (column, range) in [
        ("created_at", filter.created),
        ("finished_at", filter.finished),
    ] {
        if let Some(after) = range.after {
            query
                .push(format!(" AND {column} >= "))
                .push_bind(micros(after));
        }
        if let Some(before) = range.before {
            query
                .push(format!(" AND {column} < "))
                .push_bind(micros(before));
        }
    }
}
