//! `retry-tasks` and `cancel-tasks`: failed tasks retried, unfinished ones cancelled, chosen by
//! a selector; a dry run (or a missing `--yes`) only counts them.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::json;

use super::task_commands::parse_state;
use super::{CoordinatorAddress, parse_duration};
use crate::domain::{BulkOutcome, QueueName, TaskId, TaskName, TaskSelector, TimeRange};

/// Which tasks, for `retry-tasks` and `cancel-tasks`: every criterion given must match.
#[derive(Debug, Args)]
pub struct SelectorArgs {
    /// Only tasks with this name (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Only tasks on this queue (repeatable).
    #[arg(long = "queue", short = 'Q', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Only tasks of this tree.
    #[arg(long, value_name = "ID")]
    pub root: Option<String>,
    /// Only tasks whose last failure is of this kind (repeatable), e.g. `smtp_transient`.
    #[arg(long = "error-kind", value_name = "KIND")]
    pub error_kinds: Vec<String>,
    /// Only tasks submitted at or after this moment (RFC 3339, or a duration ago: `2h`).
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks submitted before this moment.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks that finished at or after this moment.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub finished_after: Option<DateTime<Utc>>,
    /// Only tasks that finished before this moment.
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub finished_before: Option<DateTime<Utc>>,
    /// Only count what matches.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm: act on every task that matches.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeritas retry-tasks`.
#[derive(Debug, Args)]
pub struct RetryTasksArgs {
    #[command(flatten)]
    pub selector: SelectorArgs,
}

/// `celeritas cancel-tasks`.
#[derive(Debug, Args)]
pub struct CancelTasksArgs {
    /// Only tasks in this state (repeatable; default: every unfinished state).
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Abort running tasks instead of asking them to stop.
    #[arg(long)]
    pub terminate: bool,
    #[command(flatten)]
    pub selector: SelectorArgs,
}

pub async fn retry_tasks(args: RetryTasksArgs) -> anyhow::Result<ExitCode> {
    let arguments = args.selector;
    let selector = selector(&arguments, &[])?;
    let mut client = arguments.coordinator.connect().await?;
    let act = !arguments.dry_run && arguments.yes;
    let outcome = client.retry_tasks(&selector, !act).await?;
    report(&arguments, act, outcome, "failed", "retried")
}

pub async fn cancel_tasks(args: CancelTasksArgs) -> anyhow::Result<ExitCode> {
    let arguments = args.selector;
    let selector = selector(&arguments, &args.states)?;
    let mut client = arguments.coordinator.connect().await?;
    let act = !arguments.dry_run && arguments.yes;
    let outcome = client.cancel_tasks(&selector, args.terminate, !act).await?;
    report(&arguments, act, outcome, "unfinished", "cancelled")
}

/// Prints what matched and what was done; without `--yes` (and not a dry run), says how to act
/// and fails.
fn report(
    arguments: &SelectorArgs,
    acted: bool,
    outcome: BulkOutcome,
    which: &str,
    done: &str,
) -> anyhow::Result<ExitCode> {
    if arguments.json {
        outln!(
            "{}",
            json!({ "matched": outcome.matched, done: outcome.changed, "dry_run": !acted })
        );
    } else if acted {
        outln!(
            "{} {which} tasks matched; {} {done}",
            outcome.matched,
            outcome.changed
        );
    } else {
        outln!("{} {which} tasks match", outcome.matched);
    }
    if !acted && !arguments.dry_run {
        anyhow::bail!(
            "nothing was {done}: pass --yes to act on the {} tasks that match (or --dry-run to only count them)",
            outcome.matched
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn selector(arguments: &SelectorArgs, states: &[String]) -> anyhow::Result<TaskSelector> {
    Ok(TaskSelector {
        names: arguments
            .names
            .iter()
            .map(|name| TaskName::parse("--name", name))
            .collect::<Result<_, _>>()?,
        queues: arguments
            .queues
            .iter()
            .map(|queue| QueueName::parse("--queue", queue))
            .collect::<Result<_, _>>()?,
        root: arguments
            .root
            .as_deref()
            .map(|root| TaskId::parse("--root", root))
            .transpose()?,
        states: states
            .iter()
            .map(|state| parse_state("--state", state))
            .collect::<Result<_, _>>()?,
        error_kinds: arguments.error_kinds.clone(),
        created: TimeRange {
            after: arguments.created_after,
            before: arguments.created_before,
        },
        finished: TimeRange {
            after: arguments.finished_after,
            before: arguments.finished_before,
        },
    })
}

/// A moment: RFC 3339 (`2026-12-03T10:00:00Z`), or a duration before now (`90m`, `2h`).
fn parse_moment(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(moment) = DateTime::parse_from_rfc3339(text) {
        return Ok(moment.with_timezone(&Utc));
    }
    let ago = parse_duration(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 moment nor a duration ago such as 2h")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} is too long ago"))
}
