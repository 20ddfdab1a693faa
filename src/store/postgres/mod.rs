//! The Postgres store, for production and for several coordinators on one database. Batches
//! travel as arrays and are expanded with `unnest`, so a batch of a thousand completions is one
//! statement and one commit; rows several writers may want are locked in id order or skipped
//! (`SKIP LOCKED`).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Postgres, Row, TypeInfo, ValueRef};
use uuid::Uuid;

use super::StoreError;
use super::row::Columns;
use super::statements::sqlx_database;
use crate::domain::{LeaseToken, TaskId};

/// The columns `row::task_record` reads, for `concat!` into a query over `tasks t`.
macro_rules! task_columns {
    () => {
        "t.id, t.attempt, t.name, t.queue, t.priority, t.args::text AS args, \
         t.retries, t.max_retries, t.soft_time_limit_ms, t.hard_time_limit_ms, \
         t.expires_at, t.parent_id, t.root_id, t.state, t.result::text AS result, \
         t.error_kind, t.error_message, t.created_at, t.run_at, t.started_at, \
         t.finished_at, t.worker_id, t.idempotency_key, t.failures::text AS failures, \
         t.progress_done, t.progress_total, t.progress_message, t.submitted_by, \
         t.rate_keys::text AS rate_keys, t.group_key, t.max_concurrency"
    };
}

mod announce;
mod attempts;
mod leases;
mod reads;
mod tasks;

/// The embedded migrations, applied at start-up and by `celeritas migrate`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a caller waits for a free connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on a Postgres database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// A store on `url` with up to `pool_size` connections. Connects lazily, so a coordinator
    /// starts (and reports NOT_SERVING) while the database is down.
    pub fn connect_lazy(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Internal)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for LISTEN/NOTIFY.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Sorts a database error into "try again later" and "something is wrong".
fn classify(error: sqlx::Error) -> StoreError {
    let unavailable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => true,
        // 08: connection exception; 57P: operator intervention (shutdown, recovery);
        // 53: insufficient resources; 40: transaction rollback (serialization failure,
        // deadlock), which succeeds when tried again.
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            ["08", "57P", "53", "40"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(error)
    } else {
        StoreError::Internal(error)
    }
}

/// Splits lease tokens into the two arrays the fenced statements unnest.
fn token_arrays(tokens: impl Iterator<Item = LeaseToken>) -> (Vec<Uuid>, Vec<i32>) {
    tokens
        .map(|token| {
            (
                token.task_id.as_uuid(),
                i32::try_from(token.attempt).unwrap_or(i32::MAX),
            )
        })
        .unzip()
}

impl Columns for PgRow {
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        let value = self.try_get_raw(column)?;
        if value.is_null() {
            return Ok(None);
        }
        // Postgres keeps each column at its own width.
        let width = value.type_info().name().to_owned();
        Ok(Some(match width.as_str() {
            "INT2" => i64::from(self.try_get::<i16, _>(column)?),
            "INT4" => i64::from(self.try_get::<i32, _>(column)?),
            _ => self.try_get::<i64, _>(column)?,
        }))
    }

    fn boolean(&self, column: &str) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_moment(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }

    fn optional_task_id(&self, column: &str) -> Result<Option<TaskId>, sqlx::Error> {
        Ok(self.try_get::<Option<Uuid>, _>(column)?.map(TaskId::from))
    }

    fn optional_json(&self, column: &str) -> Result<Option<Value>, sqlx::Error> {
        self.try_get(column)
    }

    fn names(&self, column: &str) -> Result<Vec<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }
}

sqlx_database! {
    store: PostgresStore,
    database: Postgres,
    connection: PgConnection,
    migrator: MIGRATOR,
    classify: classify,
    sql: reads,
    encode: {
        task: |id: TaskId| id.as_uuid(),
        session: std::convert::identity,
        sessions: std::convert::identity,
        moment: std::convert::identity,
        json: std::convert::identity,
        names: std::convert::identity,
    },
}
