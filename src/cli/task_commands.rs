//! `tasks` and `close-idle-connections`: what is in flight, and a control sent to workers.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::table::{print_table, task_json, task_row};
use super::{CoordinatorAddress, parse_duration};
use crate::domain::TaskQuery;
use crate::domain::{QueueName, TaskId, TaskName, TaskState};

/// `celeritas tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks with this name (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Only tasks in this state (repeatable; default: the unfinished states).
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Only tasks of this tree.
    #[arg(long, value_name = "ID")]
    pub root: Option<String>,
    /// Only tasks with no progress, start or submission for this long (seconds, or `15m`).
    #[arg(long, value_parser = parse_duration)]
    pub quiet_for: Option<Duration>,
    /// The most tasks to list.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Also read each task's args (with --json).
    #[arg(long)]
    pub with_args: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeritas close-idle-connections`.
#[derive(Debug, Args)]
pub struct CloseIdleArgs {
    /// Only the workers consuming this queue (default: every connected worker).
    #[arg(short = 'Q', long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A task state by name; the error names `flag` and the states there are.
pub(super) fn parse_state(flag: &str, name: &str) -> anyhow::Result<TaskState> {
    TaskState::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = TaskState::ALL.iter().map(TaskState::as_str).collect();
        anyhow::anyhow!("{flag}: {name:?} is not one of {}", known.join(", "))
    })
}

pub async fn tasks(args: TasksArgs) -> anyhow::Result<ExitCode> {
    let query = TaskQuery {
        root: args
            .root
            .as_deref()
            .map(|root| TaskId::parse("--root", root))
            .transpose()?,
        names: args
            .names
            .iter()
            .map(|name| TaskName::parse("--name", name))
            .collect::<Result<_, _>>()?,
        states: args
            .states
            .iter()
            .map(|state| parse_state("--state", state))
            .collect::<Result<_, _>>()?,
        quiet_for: args.quiet_for,
        limit: args.limit,
        with_payloads: args.with_args,
    };
    let mut client = args.coordinator.connect().await?;
    let tasks = client.list_tasks(&query).await?;
    if args.json {
        outln!("{}", Value::Array(tasks.iter().map(task_json).collect()));
    } else {
        print_table(
            &[
                "WORKER", "TASK", "NAME", "QUEUE", "SINCE", "PROGRESS", "STATE", "ATTEMPT",
            ],
            tasks
                .iter()
                .map(|task| {
                    let mut row = task_row(task);
                    row.push(task.state.to_string());
                    row.push(task.attempt.to_string());
                    row
                })
                .collect(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn close_idle(args: CloseIdleArgs) -> anyhow::Result<ExitCode> {
    let queue = args
        .queue
        .as_deref()
        .map(|queue| QueueName::parse("--queue", queue))
        .transpose()?;
    let mut client = args.coordinator.connect().await?;
    let answers = client
        .close_idle_connections(queue.as_ref(), Duration::from_secs(5))
        .await?;
    if args.json {
        let answers: Vec<Value> = answers
            .iter()
            .map(|answer| {
                json!({
                    "worker_id": answer.worker_id,
                    "hostname": answer.hostname,
                    "answered": answer.round_trip.is_some(),
                    "detail": answer.detail,
                })
            })
            .collect();
        outln!("{}", Value::Array(answers));
    } else {
        print_table(
            &["WORKER", "HOST", "ANSWER"],
            answers
                .iter()
                .map(|answer| {
                    vec![
                        answer.worker_id.clone(),
                        answer.hostname.clone(),
                        answer.detail.clone(),
                    ]
                })
                .collect(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
