//! What running attempts report, on SQLite: one transaction per batch, each start, progress
//! report, record and end one fenced statement.

use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::super::backend::{Attempts, Database};
use super::super::encoding::resolution_columns;
use super::super::{AttemptBatch, Completion, StoreError};
use super::{APPEND_FAILURE, SqliteStore, classify, micros};
use crate::domain::{JsonText, TaskState};

#[async_trait]
impl Attempts for SqliteStore {
    async fn record_attempts(&self, batch: &AttemptBatch) -> Result<Vec<bool>, StoreError> {
        let mut transaction = self.begin().await?;
        for start in &batch.starts {
            sqlx::query(
                "UPDATE tasks SET state = 'running', started_at = ?, lease_expires_at = ? \
                 WHERE id = ? AND attempt = ? AND worker_id = ? AND state = 'leased'",
            )
            .bind(micros(start.at))
            .bind(micros(start.lease_expires_at))
            .bind(start.token.task_id.to_string())
            .bind(i64::from(start.token.attempt))
            .bind(start.worker.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        for write in batch.latest_progress() {
            sqlx::query(
                "UPDATE tasks SET progress_done = ?, progress_total = ?, progress_message = ?, \
                     progress_at = ? \
                 WHERE id = ? AND attempt = ? AND worker_id = ? \
                     AND state IN ('leased', 'running')",
            )
            .bind(i64::try_from(write.report.done).unwrap_or(i64::MAX))
            .bind(i64::try_from(write.report.total).unwrap_or(i64::MAX))
            .bind(&write.report.message)
            .bind(micros(write.at))
            .bind(write.token.task_id.to_string())
            .bind(i64::from(write.token.attempt))
            .bind(write.worker.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(classify)?;
        }
        for write in &batch.records {
            for record in &write.records {
                sqlx::query(
                    "INSERT INTO task_records (root_id, task_id, kind, key, status, data, \
                         created_at, updated_at) \
                     SELECT root_id, id, ?, ?, ?, ?, ?, ? FROM tasks \
                     WHERE id = ? AND attempt = ? AND worker_id = ? \
                         AND state IN ('leased', 'running') \
                     ON CONFLICT (root_id, kind, key) DO UPDATE SET status = excluded.status, \
                         data = excluded.data, task_id = excluded.task_id, \
                         updated_at = excluded.updated_at",
                )
                .bind(&record.kind)
                .bind(&record.key)
                .bind(&record.status)
                .bind(record.data.as_ref().map(JsonText::as_str))
                .bind(micros(write.at))
                .bind(micros(write.at))
                .bind(write.token.task_id.to_string())
                .bind(i64::from(write.token.attempt))
                .bind(write.worker.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
            }
        }
        let mut applied = Vec::with_capacity(batch.completions.len());
        for completion in &batch.completions {
            applied.push(complete(&mut transaction, completion).await?);
        }
        transaction.commit().await.map_err(classify)?;
        Ok(applied)
    }
}

/// Applies one completion, fenced by its lease; true when it applied.
async fn complete(
    transaction: &mut SqliteConnection,
    completion: &Completion,
) -> Result<bool, StoreError> {
    let at = micros(completion.at);
    let columns = resolution_columns(&completion.resolution);
    let (state, result, error) = (columns.state, columns.result, columns.error);
    let run_at = columns.run_at.map(micros);
    let retrying = state == TaskState::Scheduled;
    let failures = if error.is_some() {
        APPEND_FAILURE
    } else {
        "failures"
    };
    let sql = format!(
        "UPDATE tasks SET state = ?, result = ?, error_kind = ?, error_message = ?, \
             run_at = coalesce(?, run_at), retries = retries + ?, finished_at = ?, \
             started_at = coalesce(started_at, ?), lease_expires_at = NULL, \
             failures = {failures} \
         WHERE id = ? AND attempt = ? AND worker_id = ? AND state IN ('leased', 'running')"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state.as_str())
        .bind(result)
        .bind(error.map(|(kind, _)| kind))
        .bind(error.map(|(_, message)| message))
        .bind(run_at)
        .bind(i64::from(retrying && error.is_some()))
        .bind((!retrying).then_some(at))
        .bind(completion.started_at.map(micros));
    if let Some((kind, message)) = error {
        query = query
            .bind(kind)
            .bind(message)
            .bind(completion.at.to_rfc3339());
    }
    let applied = query
        .bind(completion.token.task_id.to_string())
        .bind(i64::from(completion.token.attempt))
        .bind(completion.worker.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(classify)?
        .rows_affected();
    Ok(applied == 1)
}
