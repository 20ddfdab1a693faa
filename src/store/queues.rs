//! Paused queues, the same way on both databases. The claim statements of each backend skip
//! the queues listed here, so a pause holds on every coordinator from its commit on.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::backend::Database;
use super::row::{Columns, decode_error};
use super::statements::Statements;
use crate::domain::QueueName;

/// A queue whose tasks are not leased until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedQueue {
    /// The queue.
    pub queue: QueueName,
    /// Since when.
    pub paused_at: DateTime<Utc>,
    /// Who paused it (a token's or certificate's name), when the caller had one.
    pub paused_by: Option<String>,
}

/// Pauses a queue; false when it was paused already (its first pause is kept).
pub(super) async fn pause_queue<B: Database>(
    backend: &B,
    paused: &PausedQueue,
) -> Result<bool, StoreError> {
    let inserted = backend
        .connection()
        .await?
        .execute(
            "INSERT INTO paused_queues (queue, paused_at, paused_by) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[
                paused.queue.as_str().into(),
                paused.paused_at.into(),
                paused.paused_by.as_deref().into(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Resumes a queue; false when it was not paused.
pub(super) async fn resume_queue<B: Database>(
    backend: &B,
    queue: &QueueName,
) -> Result<bool, StoreError> {
    let deleted = backend
        .connection()
        .await?
        .execute(
            "DELETE FROM paused_queues WHERE queue = $1",
            &[queue.as_str().into()],
        )
        .await?;
    Ok(deleted == 1)
}

/// The paused queues, by name.
pub(super) async fn paused_queues<B: Database>(
    backend: &B,
) -> Result<Vec<PausedQueue>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT queue, paused_at, paused_by FROM paused_queues ORDER BY queue",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let queue = row.text("queue")?;
            Ok(PausedQueue {
                queue: QueueName::parse("queue", &queue)
                    .map_err(|_| decode_error("queue", &queue))?,
                paused_at: row.moment("paused_at")?,
                paused_by: row.optional_text("paused_by")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::Internal)
}
