//! `follow`: a tree's progress as a bar on a terminal, lines in a pipe, or JSON events.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::CoordinatorAddress;
use crate::domain::{Aggregate, TaskId, TaskState, TreeEvent, TreeEventKind};
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

/// Shows a tree's progress live until it finishes, then exits 0 when the root succeeded.
pub async fn follow(args: FollowArgs) -> anyhow::Result<ExitCode> {
    let id = TaskId::parse("ID", &args.id)?;
    let mut client = args.coordinator.connect().await?;
    let root_state = show_tree_progress(&mut client, id, args.json).await?;
    Ok(if root_state == TaskState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows the progress of `id`'s tree until it finishes, the way `celeritas follow` does (and
/// `celeritas import --follow`): JSON lines with `json`, else a bar on a terminal or a line at
/// most once a second in a pipe, then a summary line. Answers the root's final state.
pub(super) async fn show_tree_progress(
    client: &mut CoordinatorClient,
    id: TaskId,
    json: bool,
) -> anyhow::Result<TaskState> {
    let mut events = Box::pin(client.stream_progress(id, None).await?);
    let mut view = ProgressView::new(json);
    let mut root_state = TaskState::Pending;
    let mut last_aggregate = None;
    while let Some(event) = events.next().await {
        let event = event?;
        view.show(&event);
        if let TreeEventKind::TreeFinished { root_state: state } = event.kind {
            root_state = state;
        }
        last_aggregate = Some(event.aggregate);
    }
    view.finish(id, root_state, last_aggregate.as_ref());
    Ok(root_state)
}

/// Where a followed tree's events go: JSON lines, a bar on a terminal, or plain lines.
struct ProgressView {
    /// Print each event as a JSON line.
    json: bool,
    /// The live bar, only when stdout is a terminal (and not `json`).
    bar: Option<indicatif::ProgressBar>,
    /// When following began, for the lines' elapsed time.
    started: tokio::time::Instant,
    /// When the last plain line was printed.
    last_line: Option<tokio::time::Instant>,
}

impl ProgressView {
    /// A view for this stdout: a bar only on a terminal; a pipe or a log file gets a line at
    /// most once a second.
    fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!json && std::io::stdout().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(1);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {prefix} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            json,
            bar,
            started: tokio::time::Instant::now(),
            last_line: None,
        }
    }

    /// Shows one event.
    fn show(&mut self, event: &TreeEvent) {
        let aggregate = &event.aggregate;
        if self.json {
            outln!("{}", event_json(event));
        }
        if let Some(bar) = &self.bar {
            let (position, length, unit) = follow_counts(aggregate);
            bar.set_length(length.max(1));
            bar.set_position(position);
            bar.set_prefix(unit);
            bar.set_message(records_summary(aggregate));
        }
        let lines = !self.json && self.bar.is_none();
        let finished = matches!(event.kind, TreeEventKind::TreeFinished { .. });
        let due = self
            .last_line
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if lines && !finished && due {
            self.last_line = Some(tokio::time::Instant::now());
            outln!("{}", follow_line(aggregate, self.started.elapsed()));
        }
    }

    /// Ends the bar on its last frame and, unless printing JSON, prints the summary line.
    fn finish(self, id: TaskId, root_state: TaskState, last_aggregate: Option<&Aggregate>) {
        if let Some(bar) = self.bar {
            // Keep the records on the last frame: they are what the operator came for.
            let records = last_aggregate.map(records_summary).unwrap_or_default();
            bar.finish_with_message(if records.is_empty() {
                root_state.to_string()
            } else {
                format!("{records}; {root_state}")
            });
        }
        if !self.json {
            let summary = last_aggregate.map_or_else(String::new, |aggregate| {
                follow_line(aggregate, self.started.elapsed())
            });
            outln!("tree {id} finished: root {root_state}; {summary}");
        }
    }
}

/// One event as `follow --json` prints it.
fn event_json(event: &TreeEvent) -> serde_json::Value {
    let aggregate = &event.aggregate;
    json!({
        "sequence": event.sequence,
        "event": crate::domain::event_to_json(&event.kind),
        "tasks_total": aggregate.tasks_total,
        "tasks_finished": aggregate.tasks_finished,
        "tasks_by_state": aggregate.tasks_by_state,
        "records_by_status": aggregate.records_by_status,
        "progress": {"done": aggregate.progress.done, "total": aggregate.progress.total},
    })
}
