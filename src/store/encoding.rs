//! Encodings both stores share: durations as milliseconds, counts, the failure history's JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Resolution;
use crate::domain::{
    Aggregate, AttemptFailure, ProgressReport, Reported, TaskState, progress_from_json,
    progress_to_json,
};

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub fn duration_from_millis(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

pub fn count(value: impl Into<i64>) -> u32 {
    u32::try_from(value.into()).unwrap_or(0)
}

/// Reads the failure history; entries that do not parse (a broken database) are skipped.
pub fn failures_of(text: &str) -> Vec<AttemptFailure> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            Some(AttemptFailure {
                attempt: u32::try_from(entry.get("attempt")?.as_u64()?).ok()?,
                worker_id: entry
                    .get("worker_id")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                kind: entry.get("kind")?.as_str()?.to_owned(),
                message: entry.get("message")?.as_str()?.to_owned(),
                at: entry.get("at")?.as_str()?.parse::<DateTime<Utc>>().ok()?,
            })
        })
        .collect()
}

fn counts_to_json(counts: &BTreeMap<String, u64>) -> Value {
    Value::Object(
        counts
            .iter()
            .map(|(name, count)| (name.clone(), json!(count)))
            .collect(),
    )
}

fn counts_from_json(value: Option<&Value>) -> BTreeMap<String, u64> {
    value
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .filter_map(|(name, count)| Some((name.clone(), count.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn aggregate_to_json(aggregate: &Aggregate) -> Value {
    json!({
        "tasks_total": aggregate.tasks_total,
        "tasks_finished": aggregate.tasks_finished,
        "tasks_by_state": counts_to_json(&aggregate.tasks_by_state),
        "records_by_status": counts_to_json(&aggregate.records_by_status),
        "progress": progress_to_json(&aggregate.progress),
    })
}

pub fn aggregate_from_json(value: &Value) -> Aggregate {
    Aggregate {
        tasks_total: value["tasks_total"].as_u64().unwrap_or(0),
        tasks_finished: value["tasks_finished"].as_u64().unwrap_or(0),
        tasks_by_state: counts_from_json(value.get("tasks_by_state")),
        records_by_status: counts_from_json(value.get("records_by_status")),
        progress: progress_from_json(value.get("progress")).unwrap_or_default(),
    }
}

pub fn reported_to_json(reported: &Reported) -> Value {
    json!({
        "root_state": reported.root_state.map(|state| state.as_str()),
        "root_progress": reported.root_progress.as_ref().map(progress_to_json),
        "aggregate": aggregate_to_json(&reported.aggregate),
    })
}

pub fn reported_from_json(value: &Value) -> Reported {
    Reported {
        root_state: value["root_state"].as_str().and_then(TaskState::from_name),
        root_progress: progress_from_json(value.get("root_progress")),
        aggregate: aggregate_from_json(&value["aggregate"]),
    }
}

/// Builds an aggregate from the store's counts: tasks by state with their progress sums,
/// records by status, and the latest progress message.
pub fn aggregate_of(
    tasks: &[(String, i64, i64, i64)],
    records: &[(String, i64)],
    latest_message: Option<String>,
) -> Aggregate {
    let mut aggregate = Aggregate::default();
    for (state, count, done, total) in tasks {
        let count = u64::try_from(*count).unwrap_or(0);
        aggregate.tasks_total += count;
        if TaskState::from_name(state).is_some_and(|state| state.is_terminal()) {
            aggregate.tasks_finished += count;
        }
        aggregate.tasks_by_state.insert(state.clone(), count);
        aggregate.progress.done += u64::try_from(*done).unwrap_or(0);
        aggregate.progress.total += u64::try_from(*total).unwrap_or(0);
    }
    for (status, count) in records {
        aggregate
            .records_by_status
            .insert(status.clone(), u64::try_from(*count).unwrap_or(0));
    }
    aggregate.progress.message = latest_message.unwrap_or_default();
    aggregate
}

/// A task's last progress, from its columns.
pub fn progress_of(
    done: Option<i64>,
    total: Option<i64>,
    message: Option<String>,
) -> Option<ProgressReport> {
    done.map(|done| ProgressReport {
        done: u64::try_from(done).unwrap_or(0),
        total: u64::try_from(total.unwrap_or(0)).unwrap_or(0),
        message: message.unwrap_or_default(),
    })
}

pub fn worker_stats_to_json(stats: &crate::domain::WorkerStats) -> Value {
    json!({
        "processed": counts_to_json(&stats.processed),
        "failed": counts_to_json(&stats.failed),
        "memory_rss_bytes": stats.memory_rss_bytes,
        "started_at": stats.started_at.map(|at| at.to_rfc3339()),
    })
}

pub fn worker_stats_from_json(value: &Value) -> crate::domain::WorkerStats {
    crate::domain::WorkerStats {
        processed: counts_from_json(value.get("processed")),
        failed: counts_from_json(value.get("failed")),
        memory_rss_bytes: value["memory_rss_bytes"].as_u64().unwrap_or(0),
        started_at: value["started_at"]
            .as_str()
            .and_then(|at| at.parse::<DateTime<Utc>>().ok()),
    }
}

/// What a schedule's tick submits, as stored.
pub fn schedule_task_to_json(spec: &crate::domain::TaskSpec) -> Value {
    json!({
        "name": spec.name.as_str(),
        "args": spec.args.to_value(),
        "queue": spec.queue.as_ref().map(|queue| queue.as_str()),
        "priority": spec.priority.value(),
        "max_retries": spec.max_retries,
        "soft_time_limit_ms": spec.soft_time_limit.map(millis),
        "hard_time_limit_ms": spec.hard_time_limit.map(millis),
    })
}

/// Reads what a schedule's tick submits; `None` for a value celeritas did not write.
pub fn schedule_task_from_json(value: &Value) -> Option<crate::domain::TaskSpec> {
    use crate::domain::{JsonText, Priority, QueueName, TaskName, TaskSpec};
    let name = TaskName::parse("name", value["name"].as_str()?).ok()?;
    let mut spec = TaskSpec::new(name, JsonText::from_value(&value["args"]));
    spec.queue = value["queue"]
        .as_str()
        .and_then(|queue| QueueName::parse("queue", queue).ok());
    spec.priority = Priority::parse(
        "priority",
        u32::try_from(value["priority"].as_u64().unwrap_or(0)).unwrap_or(0),
    )
    .unwrap_or_default();
    spec.max_retries = value["max_retries"]
        .as_u64()
        .and_then(|retries| u32::try_from(retries).ok());
    spec.soft_time_limit = value["soft_time_limit_ms"]
        .as_i64()
        .map(duration_from_millis);
    spec.hard_time_limit = value["hard_time_limit_ms"]
        .as_i64()
        .map(duration_from_millis);
    Some(spec)
}

/// A schedule's timing from its columns.
pub fn timing_of(
    every_ms: Option<i64>,
    cron: Option<&str>,
    timezone: &str,
) -> Option<crate::domain::Timing> {
    use crate::domain::Timing;
    match (every_ms, cron) {
        (Some(every), None) => Some(Timing::Every(duration_from_millis(every))),
        (None, Some(expression)) => Timing::cron("cron", expression, "timezone", timezone).ok(),
        _ => None,
    }
}

/// A schedule's timing as columns: every in milliseconds, or a cron expression; and the zone.
pub fn timing_columns(timing: &crate::domain::Timing) -> (Option<i64>, Option<&str>, &str) {
    use crate::domain::Timing;
    match timing {
        Timing::Every(interval) => (Some(millis(*interval)), None, "UTC"),
        Timing::Cron { expression, .. } => {
            (None, Some(expression.as_str()), timing.timezone_name())
        }
    }
}

/// What an attempt's end writes: the task's new state, its result, the failure `(kind, message)`
/// and, for a retry, when it runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolutionColumns<'a> {
    pub state: TaskState,
    pub result: Option<&'a str>,
    pub error: Option<(&'a str, &'a str)>,
    pub run_at: Option<DateTime<Utc>>,
}

pub fn resolution_columns(resolution: &Resolution) -> ResolutionColumns<'_> {
    match resolution {
        Resolution::Succeeded(result) => ResolutionColumns {
            state: TaskState::Succeeded,
            result: Some(result.as_str()),
            error: None,
            run_at: None,
        },
        Resolution::Retry {
            kind,
            message,
            run_at,
        } => ResolutionColumns {
            state: TaskState::Scheduled,
            result: None,
            error: Some((kind, message)),
            run_at: Some(*run_at),
        },
        Resolution::Requeued { run_at } => ResolutionColumns {
            state: TaskState::Scheduled,
            result: None,
            error: None,
            run_at: Some(*run_at),
        },
        Resolution::Failed { kind, message } => ResolutionColumns {
            state: TaskState::Failed,
            result: None,
            error: Some((kind, message)),
            run_at: None,
        },
    }
}

/// A task's rate keys as stored: a JSON object of costs, or NULL for none.
pub(crate) fn rate_keys_to_json(keys: &crate::domain::RateKeys) -> Option<String> {
    (!keys.is_empty()).then(|| {
        let object: serde_json::Map<String, Value> = keys
            .iter()
            .map(|(key, cost)| (key.to_owned(), Value::from(cost)))
            .collect();
        Value::Object(object).to_string()
    })
}

/// Stored rate keys back: what does not read as a JSON object of costs is none.
pub(crate) fn rate_keys_from_json(text: Option<&str>) -> crate::domain::RateKeys {
    let mut keys = crate::domain::RateKeys::default();
    let Some(Ok(Value::Object(object))) = text.map(serde_json::from_str::<Value>) else {
        return keys;
    };
    for (key, cost) in object {
        let cost = cost
            .as_u64()
            .and_then(|cost| u32::try_from(cost).ok())
            .unwrap_or(1);
        keys.add(key, cost);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_reports_round_trip_through_json() {
        let aggregate = aggregate_of(
            &[("running".into(), 2, 5, 10), ("succeeded".into(), 3, 0, 0)],
            &[("delivered".into(), 7)],
            Some("halfway".into()),
        );
        assert_eq!(aggregate.tasks_total, 5);
        assert_eq!(aggregate.tasks_finished, 3);
        let reported = Reported {
            root_state: Some(TaskState::Running),
            root_progress: None,
            aggregate,
        };
        assert_eq!(reported_from_json(&reported_to_json(&reported)), reported);
    }
}
