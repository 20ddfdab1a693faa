//! Records, read the same way on both databases.

use super::backend::Database;
use super::row::{Columns, decoded, stored_record};
use super::statements::{Param, Statements};
use super::{RecordQuery, StoreError};
use crate::domain::{StoredRecord, TaskId};

pub(super) async fn records<B: Database>(
    backend: &B,
    query: &RecordQuery,
) -> Result<Vec<(i64, StoredRecord)>, StoreError> {
    let sql = if query.whole_tree {
        B::RECORDS.by_root
    } else {
        B::RECORDS.by_task
    };
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            sql,
            &[
                query.task.into(),
                query.after.into(),
                query.kind.as_deref().into(),
                query.status.as_deref().into(),
                i64::from(query.limit).into(),
            ],
        )
        .await?;
    decoded(&rows, stored_record)
}

pub(super) async fn recorded_keys<B: Database>(
    backend: &B,
    root: TaskId,
    kind: &str,
    status: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let params: [Param<'_>; 3] = [root.into(), kind.into(), status.into()];
    let rows = backend
        .connection()
        .await?
        .fetch_all(B::RECORDS.keys, &params)
        .await?;
    decoded(&rows, |row| row.text("key"))
}
