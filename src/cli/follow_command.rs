//! `follow`: a tree's progress as a bar on a terminal, lines in a pipe, or JSON events.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::CoordinatorAddress;
use crate::domain::{Aggregate, TaskId, TaskState, TreeEventKind};
use crate::grpc::CoordinatorClient;

/// `celeritas follow`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// The root task to follow.
    pub id: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print each event as a JSON line instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// What `follow` counts: the tree's summed progress when its tasks report one (a campaign's
/// batches count recipients), else its tasks.
fn follow_counts(aggregate: &Aggregate) -> (u64, u64, &'static str) {
    if aggregate.progress.total > 0 {
        (aggregate.progress.done, aggregate.progress.total, "done")
    } else {
        (aggregate.tasks_finished, aggregate.tasks_total, "tasks")
    }
}

/// `delivered 3, failed 1`, or empty when the tree has no records.
fn records_summary(aggregate: &Aggregate) -> String {
    aggregate
        .records_by_status
        .iter()
        .map(|(status, count)| format!("{status} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for logs and pipes: the counts, the records and the latest message.
fn follow_line(aggregate: &Aggregate, elapsed: Duration) -> String {
    let (position, length, unit) = follow_counts(aggregate);
    let mut line = format!(
        "[{}] {position}/{length} {unit}, {}/{} tasks finished",
        humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
        aggregate.tasks_finished,
        aggregate.tasks_total
    );
    let records = records_summary(aggregate);
    if !records.is_empty() {
        line.push_str(&format!("; {records}"));
    }
    line
}

pub async fn follow(args: FollowArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let id = TaskId::parse("ID", &args.id)?;
    let mut client = CoordinatorClient::connect(&args.coordinator.url).await?;
    let mut events = Box::pin(client.stream_progress(id, None).await?);
    // A bar only on a terminal; a pipe or a log file gets a line at most once a second.
    let bar = (!args.json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {prefix} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let lines = !args.json && bar.is_none();
    let started = tokio::time::Instant::now();
    let mut last_line: Option<tokio::time::Instant> = None;
    let mut root_state = TaskState::Pending;
    let mut last_aggregate = None;
    while let Some(event) = events.next().await {
        let event = event?;
        let aggregate = &event.aggregate;
        if args.json {
            outln!(
                "{}",
                json!({
                    "sequence": event.sequence,
                    "event": crate::domain::event_to_json(&event.kind),
                    "tasks_total": aggregate.tasks_total,
                    "tasks_finished": aggregate.tasks_finished,
                    "tasks_by_state": aggregate.tasks_by_state,
                    "records_by_status": aggregate.records_by_status,
                    "progress": {"done": aggregate.progress.done, "total": aggregate.progress.total},
                })
            );
        }
        if let Some(bar) = &bar {
            let (position, length, unit) = follow_counts(aggregate);
            bar.set_length(length.max(1));
            bar.set_position(position);
            bar.set_prefix(unit);
            bar.set_message(records_summary(aggregate));
        }
        let finished = matches!(event.kind, TreeEventKind::TreeFinished { .. });
        if lines && !finished && last_line.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            last_line = Some(tokio::time::Instant::now());
            outln!("{}", follow_line(aggregate, started.elapsed()));
        }
        if let TreeEventKind::TreeFinished { root_state: state } = event.kind {
            root_state = state;
        }
        last_aggregate = Some(event.aggregate);
    }
    if let Some(bar) = bar {
        // Keep the records on the last frame: they are what the operator came for.
        let records = last_aggregate
            .as_ref()
            .map(records_summary)
            .unwrap_or_default();
        bar.finish_with_message(if records.is_empty() {
            root_state.to_string()
        } else {
            format!("{records}; {root_state}")
        });
    }
    if !args.json {
        let summary = last_aggregate
            .as_ref()
            .map_or_else(String::new, |aggregate| {
                follow_line(aggregate, started.elapsed())
            });
        outln!("tree {id} finished: root {root_state}; {summary}");
    }
    Ok(if root_state == TaskState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
