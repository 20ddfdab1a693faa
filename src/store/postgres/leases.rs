//! Leases on Postgres: claimed with `SKIP LOCKED`, released and adopted fenced by session, renewed
//! and reaped in one statement each, with verdicts decided once per row in SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::super::backend::Leases;
use super::super::encoding::millis;
use super::super::row::lease_of;
use super::super::{
    Adopted, Claim, Claimed, Interruption, LOST_ON_RECONNECT, RUNNING_LEASE_MARGIN, Reaped,
    StoreError,
};
use super::{PostgresStore, classify, token_arrays};
use crate::domain::{LeaseToken, TaskName, TaskState, WorkerId};

/// The columns `lease_of` reads, for RETURNING and SELECT lists.
const CLAIMED_COLUMNS: &str = "t.id, t.attempt, t.name, t.queue, t.priority, t.args::text AS args, \
     t.retries, t.max_retries, t.soft_time_limit_ms, t.hard_time_limit_ms, t.expires_at, \
     t.parent_id, t.root_id, t.run_at";

#[async_trait]
impl Leases for PostgresStore {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, StoreError> {
        if claim.limit == 0 || claim.queues.is_empty() || claim.names.is_empty() {
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
        let task_names: Vec<&str> = claim.names.iter().map(TaskName::as_str).collect();
        let limit = i64::from(claim.limit);
        // Each (queue, registered name) pair of a queue not paused offers its best `limit` tasks
        // from one index probe (locked, skipping rows other coordinators hold); the best `limit`
        // of those are leased, or marked expired when their time passed. Tasks of names the
        // worker lacks are never read. The statement also says whether governed tasks wait
        // anywhere (one probe of their partial index), on a row of its own when nothing was
        // leased, so the governed claim needs no statement of its own to find out.
        let sql = format!(
            "WITH candidates AS ( \
                 SELECT picked.id, wanted.queue_priority \
                 FROM ( \
                     SELECT * FROM unnest($1::text[], $2::int4[]) AS asked(queue, queue_priority) \
                     WHERE NOT EXISTS ( \
                         SELECT 1 FROM paused_queues paused WHERE paused.queue = asked.queue) \
                 ) AS wanted \
                 CROSS JOIN unnest($8::text[]) AS registered(name) \
                 CROSS JOIN LATERAL ( \
                     SELECT p.id, p.priority, p.seq FROM tasks p \
                     WHERE p.state = 'pending' AND NOT p.governed \
                         AND p.queue = wanted.queue AND p.name = registered.name \
                     ORDER BY p.priority DESC, p.seq \
                     LIMIT $3 \
                     FOR UPDATE SKIP LOCKED \
                 ) AS picked \
                 ORDER BY wanted.queue_priority DESC, picked.priority DESC, picked.seq \
                 LIMIT $3 \
             ) \
             , leased AS ( \
             UPDATE tasks t SET \
                 state = CASE WHEN t.expires_at <= $4 THEN 'expired' ELSE 'leased' END, \
                 attempt = CASE WHEN t.expires_at <= $4 THEN t.attempt ELSE t.attempt + 1 END, \
                 worker_id = CASE WHEN t.expires_at <= $4 THEN t.worker_id ELSE $5 END, \
                 session_id = CASE WHEN t.expires_at <= $4 THEN NULL ELSE $7 END, \
                 finished_at = CASE WHEN t.expires_at <= $4 THEN $4 END, \
                 leased_at = $4, \
                 lease_expires_at = CASE WHEN t.expires_at <= $4 THEN NULL ELSE $6 END \
             FROM candidates c WHERE t.id = c.id \
             RETURNING c.queue_priority, t.seq, t.state, {CLAIMED_COLUMNS} \
             ) \
             SELECT leased.*, probe.governed_waiting \
             FROM (SELECT EXISTS (SELECT 1 FROM tasks g \
                     WHERE g.state = 'pending' AND g.governed) AS governed_waiting) AS probe \
                 LEFT JOIN leased ON TRUE"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&queue_names)
            .bind(&queue_priorities)
            .bind(limit)
            .bind(claim.now)
            .bind(claim.worker.as_str())
            .bind(claim.lease_expires_at)
            .bind(claim.session)
            .bind(&task_names)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        let mut claimed = Claimed::default();
        // The same on every row; the only row when nothing was leased.
        if let Some(row) = rows.first() {
            claimed.governed_waiting = Some(
                row.try_get("governed_waiting")
                    .map_err(StoreError::Internal)?,
            );
        }
        let mut ordered = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: Option<String> = row.try_get("state").map_err(StoreError::Internal)?;
            let Some(state) = state else {
                continue;
            };
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

    async fn release(&self, session: Uuid, leases: &[LeaseToken]) -> Result<u64, StoreError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let (ids, attempts) = token_arrays(leases.iter().copied());
        let released = sqlx::query(
            "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::int4[]) AS u(id, attempt)), \
                 locked AS MATERIALIZED (SELECT id FROM tasks WHERE id IN (SELECT id FROM u) \
                     ORDER BY id FOR UPDATE) \
             UPDATE tasks t SET session_id = NULL, leased_at = NULL, \
                 lease_expires_at = NULL, started_at = NULL, \
                 state = CASE WHEN EXISTS (SELECT 1 FROM paused_trees p \
                     WHERE p.root_id = t.root_id) THEN 'scheduled' ELSE 'pending' END, \
                 run_at = CASE WHEN EXISTS (SELECT 1 FROM paused_trees p \
                     WHERE p.root_id = t.root_id) THEN t.run_at + interval '8766000 hours' \
                     ELSE t.run_at END \
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
}
