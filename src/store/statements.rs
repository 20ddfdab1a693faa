//! How the store runs a statement on either database: values bound as `Param`s, each backend
//! encoding them its own way, rows read back through `row::Columns`; and `sqlx_database!`, which
//! makes a sqlx database a store's `Database` the same way for both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use super::row::Columns;
use crate::domain::{FileId, TaskId};

/// A value bound to a statement. Each backend encodes it its own way: Postgres as UUIDs,
/// timestamps, JSONB and arrays; SQLite as text, microseconds and JSON text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Text(Option<&'a str>),
    Integer(Option<i64>),
    Bool(bool),
    Task(Option<TaskId>),
    Session(Uuid),
    Sessions(&'a [Uuid]),
    Moment(Option<DateTime<Utc>>),
    Json(Option<&'a Value>),
    Names(&'a [&'a str]),
    /// A file id, encoded as sessions are (a UUID as the database keeps one).
    File(FileId),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Param::Text(text)
    }
}

impl From<i64> for Param<'_> {
    fn from(number: i64) -> Self {
        Param::Integer(Some(number))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(number: Option<i64>) -> Self {
        Param::Integer(number)
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Param::Bool(value)
    }
}

impl From<TaskId> for Param<'_> {
    fn from(id: TaskId) -> Self {
        Param::Task(Some(id))
    }
}

impl From<Option<TaskId>> for Param<'_> {
    fn from(id: Option<TaskId>) -> Self {
        Param::Task(id)
    }
}

impl From<FileId> for Param<'_> {
    fn from(id: FileId) -> Self {
        Param::File(id)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Param::Bytes(bytes)
    }
}

impl From<DateTime<Utc>> for Param<'_> {
    fn from(moment: DateTime<Utc>) -> Self {
        Param::Moment(Some(moment))
    }
}

impl From<Option<DateTime<Utc>>> for Param<'_> {
    fn from(moment: Option<DateTime<Utc>>) -> Self {
        Param::Moment(moment)
    }
}

impl<'a> From<&'a Value> for Param<'a> {
    fn from(value: &'a Value) -> Self {
        Param::Json(Some(value))
    }
}

impl<'a> From<Option<&'a Value>> for Param<'a> {
    fn from(value: Option<&'a Value>) -> Self {
        Param::Json(value)
    }
}

/// Runs statements written with `$1`, `$2`… placeholders (SQLite reads them as positions too).
#[async_trait]
pub(crate) trait Statements: Send {
    /// A row of this database.
    type Row: Columns + Send + Sync;

    /// Runs a statement; how many rows it changed.
    async fn execute(&mut self, sql: &'static str, params: &[Param<'_>])
    -> Result<u64, StoreError>;

    /// Runs a query; every row.
    async fn fetch_all(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<Self::Row>, StoreError>;

    /// Runs a query; its first row, if any.
    async fn fetch_optional(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Option<Self::Row>, StoreError> {
        Ok(self.fetch_all(sql, params).await?.into_iter().next())
    }

    /// Runs a query that always answers a row.
    async fn fetch_one(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Self::Row, StoreError> {
        self.fetch_optional(sql, params)
            .await?
            .ok_or(StoreError::Internal(sqlx::Error::RowNotFound))
    }
}

/// Makes a sqlx database a store's `Database`, the same way for each: statements bound with the
/// backend's encodings, connections and transactions from its pool (`self.pool`), its
/// migrations, and the SQL text in its module `$sql` (`TASKS`, `TREES`, `RECORDS`,
/// `KNOWS_TASK_NAME`). The backend says how the values that differ between databases encode:
/// task ids, sessions (one and several), moments, JSON and lists of names.
macro_rules! sqlx_database {
    (
        store: $store:ty,
        database: $database:ty,
        connection: $connection:ty,
        migrator: $migrator:path,
        classify: $classify:path,
        sql: $sql:ident,
        encode: {
            task: $task:expr,
            session: $session:expr,
            sessions: $sessions:expr,
            moment: $moment:expr,
            json: $json:expr,
            names: $names:expr $(,)?
        } $(,)?
    ) => {
        /// A statement with its values bound this database's way.
        fn bound(
            sql: &'static str,
            params: &[$crate::store::statements::Param<'_>],
        ) -> sqlx::query::Query<'static, $database, <$database as sqlx::Database>::Arguments> {
            use $crate::store::statements::Param;
            params
                .iter()
                .fold(sqlx::query(sql), |query, param| match *param {
                    Param::Text(text) => query.bind(text),
                    Param::Integer(number) => query.bind(number),
                    Param::Bool(value) => query.bind(value),
                    Param::Task(id) => query.bind(id.map($task)),
                    Param::Session(session) => query.bind($session(session)),
                    Param::Sessions(sessions) => query.bind($sessions(sessions)),
                    Param::Moment(moment) => query.bind(moment.map($moment)),
                    Param::Json(value) => query.bind(value.map($json)),
                    Param::Names(names) => query.bind($names(names)),
                    Param::File(id) => query.bind($session(id.as_uuid())),
                    Param::Bytes(bytes) => query.bind(bytes),
                })
        }

        #[async_trait::async_trait]
        impl $crate::store::statements::Statements for $connection {
            type Row = <$database as sqlx::Database>::Row;

            async fn execute(
                &mut self,
                sql: &'static str,
                params: &[$crate::store::statements::Param<'_>],
            ) -> Result<u64, $crate::store::StoreError> {
                let done = bound(sql, params).execute(self).await.map_err($classify)?;
                Ok(done.rows_affected())
            }

            async fn fetch_all(
                &mut self,
                sql: &'static str,
                params: &[$crate::store::statements::Param<'_>],
            ) -> Result<Vec<Self::Row>, $crate::store::StoreError> {
                bound(sql, params).fetch_all(self).await.map_err($classify)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::backend::Database for $store {
            type Connection = $connection;
            type Pooled = sqlx::pool::PoolConnection<$database>;
            type Transaction = sqlx::Transaction<'static, $database>;

            const TASKS: $crate::store::backend::TaskSql = $sql::TASKS;
            const TREES: $crate::store::backend::TreeSql = $sql::TREES;
            const RECORDS: $crate::store::backend::RecordSql = $sql::RECORDS;
            const LEASES: $crate::store::backend::LeaseSql = $sql::LEASES;
            const KNOWS_TASK_NAME: &'static str = $sql::KNOWS_TASK_NAME;

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                $crate::store::backend::migrated($migrator.run(&self.pool).await, $classify)
            }

            async fn connection(&self) -> Result<Self::Pooled, $crate::store::StoreError> {
                self.pool.acquire().await.map_err($classify)
            }

            async fn begin(&self) -> Result<Self::Transaction, $crate::store::StoreError> {
                self.pool.begin().await.map_err($classify)
            }

            async fn commit(
                transaction: Self::Transaction,
            ) -> Result<(), $crate::store::StoreError> {
                transaction.commit().await.map_err($classify)
            }
        }
    };
}

pub(crate) use sqlx_database;
