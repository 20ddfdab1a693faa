//! How the commands print: aligned tables, UTC moments, and the rows and JSON of tasks and
//! schedules that several commands show.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::{Schedule, TaskRecord, Timing};

/// Prints rows as aligned columns under a header.
pub(super) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    outln!(
        "{}",
        line(header.iter().map(|title| title.to_string()).collect())
    );
    if rows.is_empty() {
        outln!("(none)");
    }
    for row in rows {
        outln!("{}", line(row));
    }
}

/// A moment as RFC 3339 in UTC, marked `Z`, so nobody reads it in their own zone.
pub(super) fn moment(value: Option<DateTime<Utc>>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |value| value.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub(super) fn task_row(task: &TaskRecord) -> Vec<String> {
    let progress = task.progress.as_ref().map_or_else(
        || "-".to_owned(),
        // A task that reports no total (a batch counting as it goes) shows its count alone,
        // not `50/0`.
        |progress| {
            if progress.total == 0 {
                progress.done.to_string()
            } else {
                format!("{}/{}", progress.done, progress.total)
            }
        },
    );
    vec![
        task.worker_id
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string),
        task.id.to_string(),
        task.name.to_string(),
        task.queue.to_string(),
        moment(task.started_at.or(Some(task.run_at))),
        progress,
    ]
}

pub(super) fn task_json(task: &TaskRecord) -> Value {
    json!({
        "id": task.id.to_string(),
        "name": task.name.as_str(),
        "queue": task.queue.as_str(),
        "state": task.state.as_str(),
        "worker_id": task.worker_id.as_ref().map(ToString::to_string),
        "attempt": task.attempt,
        "args": task.args.to_value(),
        "started_at": task.started_at.map(|at| at.to_rfc3339()),
        "run_at": task.run_at.to_rfc3339(),
        "progress": task.progress.as_ref().map(|progress| json!({"done": progress.done, "total": progress.total, "message": progress.message})),
        "group_key": task.group_key.as_ref().map(ToString::to_string),
        "max_concurrency": task.max_concurrency,
        "rate_keys": task.rate_keys.iter().map(|(key, cost)| (key.to_owned(), json!(cost))).collect::<serde_json::Map<String, Value>>(),
        "tree_paused_at": task.tree_paused_at.map(|at| at.to_rfc3339()),
    })
}

pub(super) fn schedule_json(schedule: &Schedule) -> Value {
    let (every, cron) = match &schedule.timing {
        Timing::Every(interval) => (
            Some(humantime::format_duration(*interval).to_string()),
            None,
        ),
        Timing::Cron { expression, .. } => (None, Some(expression.clone())),
    };
    json!({
        "name": schedule.name,
        "task": schedule.task.name.as_str(),
        "every": every,
        "cron": cron,
        "timezone": schedule.timing.timezone_name(),
        "paused": schedule.paused,
        "next_run_at": schedule.next_run_at.map(|at| at.to_rfc3339()),
        "last_run_at": schedule.last_run_at.map(|at| at.to_rfc3339()),
        "last_task_id": schedule.last_task_id.map(|id| id.to_string()),
    })
}

pub(super) fn schedule_row(schedule: &Schedule) -> Vec<String> {
    let timing = match &schedule.timing {
        Timing::Every(interval) => format!("every {}", humantime::format_duration(*interval)),
        Timing::Cron { expression, .. } => {
            format!("cron {expression} ({})", schedule.timing.timezone_name())
        }
    };
    vec![
        schedule.name.clone(),
        schedule.task.name.to_string(),
        timing,
        if schedule.paused { "paused" } else { "active" }.to_owned(),
        moment(schedule.next_run_at),
        moment(schedule.last_run_at),
    ]
}

pub(super) const SCHEDULE_HEADER: &[&str] = &["NAME", "TASK", "WHEN", "STATE", "NEXT", "LAST"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_mark_their_moments_as_utc() {
        let at: DateTime<Utc> = "2026-12-01T23:05:07.250Z".parse().unwrap();
        assert_eq!(moment(Some(at)), "2026-12-01T23:05:07Z");
        assert_eq!(moment(None), "-");
    }
}
