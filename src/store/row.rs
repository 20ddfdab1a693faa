//! Rows into domain types, once for both stores. Each backend says how it reads a column as text,
//! a number, a moment, a task id, JSON or a list of names (Postgres has the types; SQLite keeps
//! ids and JSON as text and moments as microseconds); what the columns mean is decided here.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;
use super::encoding::{
    aggregate_from_json, aggregate_of, count, duration_from_millis, failures_of, progress_of,
    schedule_task_from_json, timing_of, worker_stats_from_json,
};
use crate::domain::{
    GroupKey, JsonText, Lease, LeaseToken, Observed, Priority, QueueName, RecordEntry, Schedule,
    ScheduleSource, StoredRecord, TaskId, TaskName, TaskRecord, TaskState, TimeLimits, TreeEvent,
    WorkerId, WorkerInfo, event_from_json,
};

/// A row as the store reads it, whatever the database.
pub(crate) trait Columns {
    /// A text column.
    fn optional_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column of any width.
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A boolean column.
    fn boolean(&self, column: &str) -> Result<bool, sqlx::Error>;
    /// A moment.
    fn optional_moment(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
    /// A task id.
    fn optional_task_id(&self, column: &str) -> Result<Option<TaskId>, sqlx::Error>;
    /// A JSON column; `None` for NULL (and, where JSON is kept as text, for text that does not
    /// parse).
    fn optional_json(&self, column: &str) -> Result<Option<Value>, sqlx::Error>;
    /// A list of names (queues, task names).
    fn names(&self, column: &str) -> Result<Vec<String>, sqlx::Error>;
    /// A binary column (a file's bytes).
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;

    /// A text column that is never NULL.
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.optional_text(column)?
            .ok_or_else(|| unexpected_null(column))
    }

    /// An integer column that is never NULL.
    fn integer(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.optional_integer(column)?
            .ok_or_else(|| unexpected_null(column))
    }

    /// A moment that is never NULL.
    fn moment(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.optional_moment(column)?
            .ok_or_else(|| unexpected_null(column))
    }

    /// A task id that is never NULL.
    fn task_id(&self, column: &str) -> Result<TaskId, sqlx::Error> {
        self.optional_task_id(column)?
            .ok_or_else(|| unexpected_null(column))
    }

    /// A text column that only celeritas writes, parsed; a value that does not parse means a
    /// broken database, reported as a decode error.
    fn parsed<T>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, sqlx::Error> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| decode_error(column, &text))
    }
}

/// A column holding a value celeritas did not write.
pub(crate) fn decode_error(column: &str, text: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {text:?}").into(),
    }
}

fn unexpected_null(column: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: "unexpected NULL".into(),
    }
}

/// A lease from the columns `id, attempt, name, queue, priority, args, retries, max_retries,
/// soft_time_limit_ms, hard_time_limit_ms, expires_at, parent_id, root_id, run_at`.
pub(crate) fn lease_of(row: &impl Columns) -> Result<Lease, sqlx::Error> {
    Ok(Lease {
        token: LeaseToken {
            task_id: row.task_id("id")?,
            attempt: count(row.integer("attempt")?),
        },
        name: row.parsed("name", |text| TaskName::parse("name", text).ok())?,
        queue: row.parsed("queue", |text| QueueName::parse("queue", text).ok())?,
        priority: Priority::parse(
            "priority",
            u32::try_from(row.integer("priority")?).unwrap_or(0),
        )
        .unwrap_or_default(),
        args: JsonText::from_trusted(row.text("args")?),
        retries: count(row.integer("retries")?),
        max_retries: count(row.integer("max_retries")?),
        time_limits: TimeLimits {
            soft: duration_from_millis(row.integer("soft_time_limit_ms")?),
            hard: duration_from_millis(row.integer("hard_time_limit_ms")?),
        },
        expires_at: row.optional_moment("expires_at")?,
        parent_id: row.optional_task_id("parent_id")?,
        root_id: row.task_id("root_id")?,
        run_at: row.moment("run_at")?,
    })
}

/// A task from a row of `tasks` (every column `lease_of` reads, and the rest).
pub(crate) fn task_record(row: &impl Columns) -> Result<TaskRecord, sqlx::Error> {
    let lease = lease_of(row)?;
    let error_kind = row.optional_text("error_kind")?;
    let error_message = row.optional_text("error_message")?;
    Ok(TaskRecord {
        id: lease.token.task_id,
        name: lease.name,
        queue: lease.queue,
        priority: lease.priority,
        state: row.parsed("state", TaskState::from_name)?,
        args: lease.args,
        result: row.optional_text("result")?.map(JsonText::from_trusted),
        error: error_kind.map(|kind| (kind, error_message.unwrap_or_default())),
        attempt: lease.token.attempt,
        retries: lease.retries,
        max_retries: lease.max_retries,
        created_at: row.moment("created_at")?,
        // A paused tree's parked task shows the run time it will have again on resume.
        run_at: if lease.run_at - super::PARKED_FOR / 2 > row.moment("created_at")? {
            lease.run_at - super::PARKED_FOR
        } else {
            lease.run_at
        },
        started_at: row.optional_moment("started_at")?,
        finished_at: row.optional_moment("finished_at")?,
        expires_at: lease.expires_at,
        worker_id: row
            .optional_text("worker_id")?
            .and_then(|id| WorkerId::parse("worker_id", &id).ok()),
        parent_id: lease.parent_id,
        root_id: lease.root_id,
        idempotency_key: row.optional_text("idempotency_key")?,
        failures: failures_of(&row.text("failures")?),
        progress: progress_of(
            row.optional_integer("progress_done")?,
            row.optional_integer("progress_total")?,
            row.optional_text("progress_message")?,
        ),
        submitted_by: row.optional_text("submitted_by")?,
        rate_keys: super::encoding::rate_keys_from_json(row.optional_text("rate_keys")?.as_deref()),
        group_key: row
            .optional_text("group_key")?
            .and_then(|key| GroupKey::parse("group_key", &key).ok()),
        max_concurrency: row
            .optional_integer("max_concurrency")?
            .and_then(|limit| u32::try_from(limit).ok()),
        tree_paused_at: None,
    })
}

/// Every row, decoded; the first that does not decode fails them all.
pub(crate) fn decoded<R, T>(
    rows: &[R],
    decode: impl Fn(&R) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(decode)
        .collect::<Result<_, _>>()
        .map_err(StoreError::Internal)
}

/// A worker from a row of `workers` (queues without priorities; `connected` false).
pub(crate) fn worker_info(row: &impl Columns) -> Result<WorkerInfo, sqlx::Error> {
    Ok(WorkerInfo {
        id: row.text("id")?,
        hostname: row.text("hostname")?,
        pid: count(row.integer("pid")?),
        queues: row
            .names("queues")?
            .iter()
            .filter_map(|queue| QueueName::parse("queue", queue).ok())
            .map(|queue| (queue, 0))
            .collect(),
        task_names: row.names("task_names")?,
        concurrency: count(row.integer("concurrency")?),
        prefetch_multiplier: count(row.integer("prefetch_multiplier")?),
        version: row.text("version")?,
        coordinator_id: row.text("coordinator_id")?,
        connected_at: row.moment("connected_at")?,
        last_seen_at: row.optional_moment("last_seen_at")?,
        stats: row
            .optional_json("stats")?
            .as_ref()
            .map(worker_stats_from_json),
        connected: false,
    })
}

/// A schedule from a row of `schedules`; `None` for one whose task or timing celeritas did not
/// write.
pub(crate) fn schedule_of(row: &impl Columns) -> Result<Option<Schedule>, sqlx::Error> {
    let task = row.optional_json("task")?.unwrap_or_default();
    let cron = row.optional_text("cron")?;
    let (Some(task), Some(timing)) = (
        schedule_task_from_json(&task),
        timing_of(
            row.optional_integer("every_ms")?,
            cron.as_deref(),
            &row.text("timezone")?,
        ),
    ) else {
        return Ok(None);
    };
    Ok(Some(Schedule {
        name: row.text("name")?,
        task,
        timing,
        paused: row.boolean("paused")?,
        next_run_at: row.optional_moment("next_run_at")?,
        last_run_at: row.optional_moment("last_run_at")?,
        last_task_id: row.optional_task_id("last_task_id")?,
        source: if row.text("source")? == "api" {
            ScheduleSource::Api
        } else {
            ScheduleSource::Config
        },
    }))
}

/// A record and its position from a row of `task_records`.
pub(crate) fn stored_record(row: &impl Columns) -> Result<(i64, StoredRecord), sqlx::Error> {
    Ok((
        row.integer("seq")?,
        StoredRecord {
            task_id: row.task_id("task_id")?,
            root_id: row.task_id("root_id")?,
            entry: RecordEntry {
                kind: row.text("kind")?,
                key: row.text("key")?,
                status: row.text("status")?,
                data: row.optional_text("data")?.map(JsonText::from_trusted),
            },
            created_at: row.moment("created_at")?,
            updated_at: row.moment("updated_at")?,
        },
    ))
}

/// An event of `root`'s tree from a row of `task_events`.
pub(crate) fn tree_event(root: TaskId, row: &impl Columns) -> Result<TreeEvent, sqlx::Error> {
    let sequence = row.integer("seq")?;
    let event = row.optional_json("event")?.unwrap_or_default();
    let aggregate = row.optional_json("aggregate")?.unwrap_or_default();
    Ok(TreeEvent {
        sequence: u64::try_from(sequence).unwrap_or(0),
        root_id: root,
        at: row.moment("at")?,
        kind: event_from_json(&event).ok_or_else(|| decode_error("event", &event.to_string()))?,
        aggregate: aggregate_from_json(&aggregate),
    })
}

/// What a tree looks like now, from its root's row (`state, error_kind, error_message,
/// progress_done, progress_total, progress_message`), its tasks counted by state (`state, count,
/// done, total`), its records counted by status (`status, count`) and the latest progress
/// message.
pub(crate) fn observed(
    root: TaskId,
    root_row: &impl Columns,
    tasks: &[impl Columns],
    records: &[impl Columns],
    latest_message: Option<String>,
) -> Result<Observed, sqlx::Error> {
    let root_state = root_row.parsed("state", TaskState::from_name)?;
    let tasks = tasks
        .iter()
        .map(|row| {
            Ok((
                row.text("state")?,
                row.integer("count")?,
                row.integer("done")?,
                row.integer("total")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let records = records
        .iter()
        .map(|row| Ok((row.text("status")?, row.integer("count")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let error_message = root_row.optional_text("error_message")?;
    Ok(Observed {
        root_id: root,
        root_state,
        root_error: root_row
            .optional_text("error_kind")?
            .filter(|_| root_state == TaskState::Failed)
            .map(|kind| (kind, error_message.unwrap_or_default())),
        root_progress: progress_of(
            root_row.optional_integer("progress_done")?,
            root_row.optional_integer("progress_total")?,
            root_row.optional_text("progress_message")?,
        ),
        aggregate: aggregate_of(&tasks, &records, latest_message),
    })
}
