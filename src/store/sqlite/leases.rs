//! Leases on SQLite: one connection serialises every writer, so a claim reads the candidates and
//! updates them one by one in its transaction, and verdicts are decided in Rust per row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::super::backend::{Database, Leases};
use super::super::encoding::millis;
use super::super::row::lease_of;
use super::super::{
    Adopted, Claim, Claimed, Interruption, LOST_ON_RECONNECT, RUNNING_LEASE_MARGIN, Reaped,
    StoreError,
};
use super::{APPEND_FAILURE, REQUEUE, SqliteStore, classify, micros};
use crate::domain::{LeaseToken, QueueName, TaskName, TaskState, WorkerId};

/// The columns `lease_of` reads.
const LEASE_COLUMNS: &str = "id, attempt, name, queue, priority, args, retries, max_retries, \
     soft_time_limit_ms, hard_time_limit_ms, expires_at, parent_id, root_id, run_at";

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

#[async_trait]
impl Leases for SqliteStore {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() || claim.names.is_empty() {
            return Ok(Claimed::default());
        }
        let mut transaction = self.begin().await?;
        // Each (queue, registered name) pair of a queue not paused offers its best `limit`; the
        // best `limit` of those are taken.
        let mut candidates: Vec<((u8, i64, std::cmp::Reverse<i64>), String, Option<i64>)> =
            Vec::new();
        let paused: Vec<String> = sqlx::query_scalar("SELECT queue FROM paused_queues")
            .fetch_all(&mut *transaction)
            .await
            .map_err(classify)?;
        let pairs: Vec<(&(QueueName, u8), &TaskName)> = claim
            .queues
            .iter()
            .filter(|(queue, _)| !paused.iter().any(|paused| paused == queue.as_str()))
            .flat_map(|queue| claim.names.iter().map(move |name| (queue, name)))
            .collect();
        for ((queue, queue_priority), name) in pairs {
            let rows = sqlx::query(
                "SELECT seq, id, priority, expires_at FROM tasks \
                 WHERE state = 'pending' AND NOT governed AND queue = ? AND name = ? \
                 ORDER BY priority DESC, seq LIMIT ?",
            )
            .bind(queue.as_str())
            .bind(name.as_str())
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

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError> {
        let mut transaction = self.begin().await?;
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
        let mut transaction = self.begin().await?;
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

    async fn interrupt(
        &self,
        token: LeaseToken,
        interruption: &Interruption,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskState>, StoreError> {
        let id = token.task_id.to_string();
        let mut transaction = self.begin().await?;
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

    async fn reap(&self, now: DateTime<Utc>, limit: u32) -> Result<Reaped, StoreError> {
        let now_micros = micros(now);
        let margin_micros = millis(RUNNING_LEASE_MARGIN) * 1000;
        let mut transaction = self.begin().await?;
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
}
