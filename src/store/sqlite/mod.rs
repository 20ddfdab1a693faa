//! The embedded store: one SQLite file, for `celeritas dev` and single-machine setups.
//!
//! It behaves as the Postgres store does for everything one coordinator does. The differences
//! are in how, not what: batches are loops inside one transaction (SQLite's statements run in
//! process; the commit is the cost), and one connection serialises every writer, so nothing
//! needs `SKIP LOCKED`. A second coordinator on the same file is refused: the store holds an
//! exclusive lock on `<file>.lock` for its lifetime.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::backend::Announcements;
use super::row::{Columns, decode_error};
use super::statements::sqlx_database;
use super::{Announcement, AnnouncementListener, StoreError};
use crate::domain::TaskId;

mod attempts;
mod leases;
mod reads;
mod tasks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded store on one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Held for the store's lifetime: the lock that keeps a second coordinator out.
    _lock: File,
}

/// Why the embedded store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the file.
    #[error(
        "another celeritas coordinator is using {0}; the embedded store serves one coordinator \
         (run several on Postgres)"
    )]
    InUse(PathBuf),
    /// The file or its directory cannot be used.
    #[error("cannot open the embedded store at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, refusing if another process has it open.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(directory) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(directory).map_err(io_error)?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse(path.to_owned()));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk, as Postgres' synchronous commit does.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|error| OpenError::Store(classify(error)))?;
        Ok(Self {
            pool,
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(error)
        }
        // SQLITE_BUSY and SQLITE_LOCKED pass when tried again.
        sqlx::Error::Database(database)
            if database
                .code()
                .is_some_and(|code| code == "5" || code == "6") =>
        {
            StoreError::Unavailable(error)
        }
        _ => StoreError::Internal(error),
    }
}

fn micros(moment: DateTime<Utc>) -> i64 {
    moment.timestamp_micros()
}

fn moment(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Appends a failure to a task's history, in the JSON shape the Postgres store writes.
const APPEND_FAILURE: &str = "json_insert(failures, '$[#]', json_object('attempt', attempt, \
     'worker_id', worker_id, 'kind', ?, 'message', ?, 'at', ?))";

/// Sets the lease columns of a task that goes back to pending.
const REQUEUE: &str = "state = CASE WHEN EXISTS (SELECT 1 FROM paused_trees \
         WHERE paused_trees.root_id = tasks.root_id) THEN 'scheduled' ELSE 'pending' END, \
     run_at = CASE WHEN EXISTS (SELECT 1 FROM paused_trees \
         WHERE paused_trees.root_id = tasks.root_id) THEN run_at + 31557600000000000 \
         ELSE run_at END, \
     session_id = NULL, leased_at = NULL, lease_expires_at = NULL, started_at = NULL";

impl Columns for SqliteRow {
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn boolean(&self, column: &str) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_moment(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(self.try_get::<Option<i64>, _>(column)?.map(moment))
    }

    fn optional_task_id(&self, column: &str) -> Result<Option<TaskId>, sqlx::Error> {
        let text: Option<String> = self.try_get(column)?;
        text.map(|text| {
            Uuid::from_str(&text)
                .map(TaskId::from)
                .map_err(|_| decode_error(column, &text))
        })
        .transpose()
    }

    fn optional_json(&self, column: &str) -> Result<Option<Value>, sqlx::Error> {
        let text: Option<String> = self.try_get(column)?;
        Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
    }

    fn names(&self, column: &str) -> Result<Vec<String>, sqlx::Error> {
        let text: String = self.try_get(column)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }
}

sqlx_database! {
    store: SqliteStore,
    database: Sqlite,
    connection: SqliteConnection,
    migrator: MIGRATOR,
    classify: classify,
    sql: reads,
    encode: {
        task: |id: TaskId| id.to_string(),
        session: |session: Uuid| session.to_string(),
        sessions: json_array,
        moment: micros,
        json: Value::to_string,
        names: json_array,
    },
}

/// Several values as a JSON array of their text, for `json_each`.
fn json_array<T: ToString>(items: &[T]) -> String {
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait]
impl Announcements for SqliteStore {
    async fn announce(&self, _announcement: &Announcement) -> Result<(), StoreError> {
        // One coordinator: nobody else to tell.
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("celeritas.db");
        let first = SqliteStore::open(&path).await.unwrap();
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(error, OpenError::InUse(_)), "{error}");
        assert!(error.to_string().contains("one coordinator"), "{error}");
        drop(first);
        SqliteStore::open(&path)
            .await
            .expect("free again once the first is gone");
    }

    #[test]
    fn moments_round_trip_through_microseconds() {
        let now = Utc::now();
        assert_eq!(
            moment(micros(now)).timestamp_micros(),
            now.timestamp_micros()
        );
    }
}
