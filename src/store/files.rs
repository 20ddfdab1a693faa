//! Files and their chunks, the same statements on both databases: the parameters carry what
//! differs (ids as UUIDs or text, moments as timestamps or microseconds, bytes as BYTEA or BLOB).
//!
//! A file is a row in `files`, incomplete until its upload ends, and its bytes are rows in
//! `file_chunks` keyed by where each starts. Reads see complete files only, so an upload that
//! never ends leaves nothing a client can see.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::backend::Database;
use super::row::{Columns, decoded};
use super::statements::{Param, Statements};
use crate::domain::{ContentType, FileChunk, FileId, FileInfo, FileName, NewFile};

/// A byte count as the tables hold it (a signed 64-bit integer).
fn count(value: u64) -> Param<'static> {
    i64::try_from(value).unwrap_or(i64::MAX).into()
}

/// A byte count read back; a negative one means a broken database.
fn unsigned(row: &impl Columns, column: &str) -> Result<u64, sqlx::Error> {
    let value = row.integer(column)?;
    u64::try_from(value).map_err(|_| super::row::decode_error(column, &value.to_string()))
}

pub(super) async fn create_file<B: Database>(
    backend: &B,
    file: &NewFile,
) -> Result<(), StoreError> {
    backend
        .connection()
        .await?
        .execute(
            "INSERT INTO files (id, name, content_type, created_at) VALUES ($1, $2, $3, $4)",
            &[
                file.id.into(),
                file.name.as_str().into(),
                file.content_type.as_str().into(),
                file.created_at.into(),
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn append_file_chunk<B: Database>(
    backend: &B,
    id: FileId,
    offset: u64,
    bytes: &[u8],
) -> Result<bool, StoreError> {
    let size = count(bytes.len() as u64);
    let written = backend
        .connection()
        .await?
        .execute(
            "INSERT INTO file_chunks (file_id, byte_offset, size, bytes) \
             SELECT $1, $2, $3, $4 \
             WHERE EXISTS (SELECT 1 FROM files WHERE id = $1 AND NOT complete)",
            &[id.into(), count(offset), size, bytes.into()],
        )
        .await?;
    Ok(written > 0)
}

pub(super) async fn complete_file<B: Database>(
    backend: &B,
    id: FileId,
    size: u64,
    sha256: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    // The chunks must add up to the size: a complete file is always whole.
    let completed = backend
        .connection()
        .await?
        .execute(
            "UPDATE files SET complete = TRUE, size = $2, sha256 = $3, completed_at = $4 \
             WHERE id = $1 AND NOT complete \
               AND (SELECT coalesce(sum(size), 0) FROM file_chunks WHERE file_id = $1) = $2",
            &[id.into(), count(size), sha256.into(), at.into()],
        )
        .await?;
    Ok(completed > 0)
}

pub(super) async fn file<B: Database>(
    backend: &B,
    id: FileId,
) -> Result<Option<FileInfo>, StoreError> {
    let row = backend
        .connection()
        .await?
        .fetch_optional(
            "SELECT name, content_type, size, sha256, created_at FROM files \
             WHERE id = $1 AND complete",
            &[id.into()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let info = (|| {
        Ok(FileInfo {
            id,
            name: row.parsed("name", |text| FileName::parse("name", text).ok())?,
            content_type: row.parsed("content_type", |text| {
                ContentType::parse("content_type", text).ok()
            })?,
            size: unsigned(&row, "size")?,
            sha256: row.text("sha256")?,
            created_at: row.moment("created_at")?,
        })
    })()
    .map_err(StoreError::Internal)?;
    Ok(Some(info))
}

pub(super) async fn file_chunks<B: Database>(
    backend: &B,
    id: FileId,
    offset: u64,
    limit: u32,
) -> Result<Vec<FileChunk>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT c.byte_offset, c.bytes FROM file_chunks c \
             JOIN files f ON f.id = c.file_id \
             WHERE c.file_id = $1 AND f.complete AND c.byte_offset + c.size > $2 \
             ORDER BY c.byte_offset LIMIT $3",
            &[id.into(), count(offset), i64::from(limit).into()],
        )
        .await?;
    let mut chunks = decoded(&rows, |row| {
        Ok(FileChunk {
            offset: unsigned(row, "byte_offset")?,
            bytes: row.bytes("bytes")?,
        })
    })?;
    // The first chunk may start before `offset`: the answer starts exactly there.
    if let Some(first) = chunks.first_mut()
        && first.offset < offset
    {
        let skip = usize::try_from(offset - first.offset).unwrap_or(usize::MAX);
        first.bytes.drain(..skip.min(first.bytes.len()));
        first.offset = offset;
    }
    Ok(chunks)
}

pub(super) async fn delete_file<B: Database>(backend: &B, id: FileId) -> Result<bool, StoreError> {
    let mut transaction = backend.begin().await?;
    transaction
        .execute("DELETE FROM file_chunks WHERE file_id = $1", &[id.into()])
        .await?;
    let deleted = transaction
        .execute("DELETE FROM files WHERE id = $1", &[id.into()])
        .await?;
    B::commit(transaction).await?;
    Ok(deleted > 0)
}

pub(super) async fn remove_abandoned_uploads<B: Database>(
    backend: &B,
    started_before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut transaction = backend.begin().await?;
    transaction
        .execute(
            "DELETE FROM file_chunks WHERE file_id IN \
             (SELECT id FROM files WHERE NOT complete AND created_at < $1)",
            &[started_before.into()],
        )
        .await?;
    let removed = transaction
        .execute(
            "DELETE FROM files WHERE NOT complete AND created_at < $1",
            &[started_before.into()],
        )
        .await?;
    B::commit(transaction).await?;
    Ok(removed)
}
