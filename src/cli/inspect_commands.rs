//! `inspect`, `follow` and `schedules`: what operators look at.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{CoordinatorAddress, parse_duration};
use crate::coordinator::TaskQuery;
use crate::domain::{
    JsonText, QueueName, Schedule, ScheduleSource, TaskId, TaskName, TaskRecord, TaskSpec,
    TaskState, Timing, TreeEventKind, parse_schedule_name,
};
use crate::grpc::CoordinatorClient;

/// What `celeritas inspect` can show.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum InspectCommand {
    /// A round trip to every connected worker.
    Ping,
    /// Tasks running now.
    Active,
    /// Tasks leased but not started.
    Reserved,
    /// Tasks waiting for their time, and the periodic schedules.
    Scheduled,
    /// Each worker's process and counters.
    Stats,
    /// The queues each worker consumes.
    ActiveQueues,
    /// The task names each worker runs.
    Registered,
    /// Each queue's depth by state.
    Queues,
}

/// `celeritas inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to show.
    pub command: InspectCommand,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

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

/// `celeritas schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub command: SchedulesCommand,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// What `celeritas schedules` does.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Lists every schedule.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Creates or replaces a schedule.
    Add {
        /// The schedule's name.
        name: String,
        /// The task each tick submits.
        #[arg(long)]
        task: String,
        /// Tick every this long (seconds, or `5m`).
        #[arg(long, value_parser = parse_duration, conflicts_with = "cron", required_unless_present = "cron")]
        every: Option<Duration>,
        /// Tick on this cron expression: five fields (minute hour day month weekday), six with
        /// seconds first, or seven with seconds first and a year last.
        #[arg(long)]
        cron: Option<String>,
        /// The IANA zone the cron expression is read in.
        #[arg(long, default_value = "UTC", requires = "cron")]
        timezone: String,
        /// The task's arguments, as JSON.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The task's queue (default: its route).
        #[arg(long)]
        queue: Option<String>,
    },
    /// Removes a schedule.
    Remove {
        /// The schedule's name.
        name: String,
    },
    /// Pauses a schedule.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resumes a paused schedule.
    Resume {
        /// The schedule's name.
        name: String,
    },
}

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

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
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
fn moment(value: Option<DateTime<Utc>>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |value| value.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn task_row(task: &TaskRecord) -> Vec<String> {
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

fn task_json(task: &TaskRecord) -> Value {
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
    })
}

fn schedule_json(schedule: &Schedule) -> Value {
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

fn schedule_row(schedule: &Schedule) -> Vec<String> {
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

const SCHEDULE_HEADER: &[&str] = &["NAME", "TASK", "WHEN", "STATE", "NEXT", "LAST"];

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
            .map(|state| {
                TaskState::from_name(state).ok_or_else(|| {
                    let known: Vec<&str> = TaskState::ALL.iter().map(TaskState::as_str).collect();
                    anyhow::anyhow!("--state: {state:?} is not one of {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?,
        quiet_for: args.quiet_for,
        limit: args.limit,
        with_payloads: args.with_args,
    };
    let mut client = CoordinatorClient::connect(&args.coordinator.url).await?;
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
    let mut client = CoordinatorClient::connect(&args.coordinator.url).await?;
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

pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut client = CoordinatorClient::connect(&args.coordinator.url).await?;
    match args.command {
        InspectCommand::Ping => {
            let pings = client.ping(Duration::from_secs(2)).await?;
            if args.json {
                let pings: Vec<Value> = pings.iter().map(|ping| json!({
                    "worker_id": ping.worker_id,
                    "hostname": ping.hostname,
                    "coordinator_id": ping.coordinator_id,
                    "round_trip_ms": ping.round_trip.map(|round_trip| round_trip.as_secs_f64() * 1000.0),
                    "detail": ping.detail,
                })).collect();
                outln!("{}", Value::Array(pings));
            } else {
                print_table(
                    &["WORKER", "HOST", "ROUND TRIP", "DETAIL"],
                    pings
                        .iter()
                        .map(|ping| {
                            vec![
                                ping.worker_id.clone(),
                                ping.hostname.clone(),
                                ping.round_trip.map_or("-".to_owned(), |round_trip| {
                                    format!("{:.2} ms", round_trip.as_secs_f64() * 1000.0)
                                }),
                                ping.detail.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        InspectCommand::Active | InspectCommand::Reserved => {
            let tasks = client
                .held_tasks(matches!(args.command, InspectCommand::Active))
                .await?;
            if args.json {
                outln!("{}", Value::Array(tasks.iter().map(task_json).collect()));
            } else {
                print_table(
                    &["WORKER", "TASK", "NAME", "QUEUE", "SINCE", "PROGRESS"],
                    tasks.iter().map(task_row).collect(),
                );
            }
        }
        InspectCommand::Scheduled => {
            let (tasks, schedules) = client.scheduled(100).await?;
            if args.json {
                outln!(
                    "{}",
                    json!({
                        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
                        "schedules": schedules.iter().map(schedule_json).collect::<Vec<_>>(),
                    })
                );
            } else {
                print_table(
                    &["TASK", "NAME", "QUEUE", "RUNS AT", "ATTEMPT"],
                    tasks
                        .iter()
                        .map(|task| {
                            vec![
                                task.id.to_string(),
                                task.name.to_string(),
                                task.queue.to_string(),
                                moment(Some(task.run_at)),
                                task.attempt.to_string(),
                            ]
                        })
                        .collect(),
                );
                outln!("");
                print_table(
                    SCHEDULE_HEADER,
                    schedules.iter().map(schedule_row).collect(),
                );
            }
        }
        InspectCommand::Stats | InspectCommand::ActiveQueues | InspectCommand::Registered => {
            let workers = client.workers().await?;
            let now = Utc::now();
            if args.json {
                let workers: Vec<Value> = workers.iter().map(|worker| {
                    let stats = worker.stats.clone().unwrap_or_default();
                    json!({
                        "worker_id": worker.id,
                        "hostname": worker.hostname,
                        "pid": worker.pid,
                        "connected": worker.connected,
                        "coordinator_id": worker.coordinator_id,
                        "concurrency": worker.concurrency,
                        "prefetch_multiplier": worker.prefetch_multiplier,
                        "version": worker.version,
                        "uptime_seconds": stats.started_at.map(|started| (now - started).num_seconds()),
                        "memory_rss_bytes": stats.memory_rss_bytes,
                        "processed": stats.processed,
                        "failed": stats.failed,
                        "queues": worker.queues.iter().map(|(queue, priority)| json!({"name": queue.as_str(), "priority": priority})).collect::<Vec<_>>(),
                        "task_names": worker.task_names,
                    })
                }).collect();
                outln!("{}", Value::Array(workers));
                return Ok(ExitCode::SUCCESS);
            }
            match args.command {
                InspectCommand::Stats => print_table(
                    &[
                        "WORKER",
                        "HOST",
                        "PID",
                        "UP",
                        "C×P",
                        "PROCESSED",
                        "FAILED",
                        "MEMORY",
                        "CONNECTED",
                    ],
                    workers
                        .iter()
                        .map(|worker| {
                            let stats = worker.stats.clone().unwrap_or_default();
                            vec![
                                worker.id.clone(),
                                worker.hostname.clone(),
                                worker.pid.to_string(),
                                stats.started_at.map_or("-".to_owned(), |started| {
                                    humantime::format_duration(Duration::from_secs(
                                        (now - started).num_seconds().max(0) as u64,
                                    ))
                                    .to_string()
                                }),
                                format!("{}×{}", worker.concurrency, worker.prefetch_multiplier),
                                stats.processed.values().sum::<u64>().to_string(),
                                stats.failed.values().sum::<u64>().to_string(),
                                format!("{:.1} MiB", stats.memory_rss_bytes as f64 / 1_048_576.0),
                                if worker.connected { "yes" } else { "no" }.to_owned(),
                            ]
                        })
                        .collect(),
                ),
                InspectCommand::ActiveQueues => print_table(
                    &["WORKER", "QUEUES", "CONNECTED"],
                    workers
                        .iter()
                        .map(|worker| {
                            vec![
                                worker.id.clone(),
                                worker
                                    .queues
                                    .iter()
                                    .map(|(queue, priority)| format!("{queue} ({priority})"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if worker.connected { "yes" } else { "no" }.to_owned(),
                            ]
                        })
                        .collect(),
                ),
                _ => print_table(
                    &["WORKER", "TASKS"],
                    workers
                        .iter()
                        .map(|worker| vec![worker.id.clone(), worker.task_names.join(", ")])
                        .collect(),
                ),
            }
        }
        InspectCommand::Queues => {
            let queues = client.queues().await?;
            let states = ["pending", "scheduled", "leased", "running", "waiting"];
            if args.json {
                let queues: Vec<Value> = queues.iter().map(|queue| json!({
                    "name": queue.queue.as_str(),
                    "priority": queue.priority,
                    "tasks_by_state": queue.by_state,
                    "oldest_pending_age_seconds": queue.oldest_pending_age.map(|age| age.as_secs_f64()),
                    "consumers": queue.consumers,
                })).collect();
                outln!("{}", Value::Array(queues));
            } else {
                let mut header = vec!["QUEUE", "PRIORITY"];
                header.extend(states.iter().map(|state| match *state {
                    "pending" => "PENDING",
                    "scheduled" => "SCHEDULED",
                    "leased" => "LEASED",
                    "running" => "RUNNING",
                    _ => "WAITING",
                }));
                header.extend(["OLDEST PENDING", "CONSUMERS"]);
                print_table(
                    &header,
                    queues
                        .iter()
                        .map(|queue| {
                            let mut row = vec![queue.queue.to_string(), queue.priority.to_string()];
                            row.extend(states.iter().map(|state| {
                                queue.by_state.get(*state).copied().unwrap_or(0).to_string()
                            }));
                            row.push(queue.oldest_pending_age.map_or("-".to_owned(), |age| {
                                humantime::format_duration(Duration::from_secs(age.as_secs()))
                                    .to_string()
                            }));
                            row.push(queue.consumers.to_string());
                            row
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `follow` counts: the tree's summed progress when its tasks report one (a campaign's
/// batches count recipients), else its tasks.
fn follow_counts(aggregate: &crate::domain::Aggregate) -> (u64, u64, &'static str) {
    if aggregate.progress.total > 0 {
        (aggregate.progress.done, aggregate.progress.total, "done")
    } else {
        (aggregate.tasks_finished, aggregate.tasks_total, "tasks")
    }
}

/// `delivered 3, failed 1`, or empty when the tree has no records.
fn records_summary(aggregate: &crate::domain::Aggregate) -> String {
    aggregate
        .records_by_status
        .iter()
        .map(|(status, count)| format!("{status} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for logs and pipes: the counts, the records and the latest message.
fn follow_line(aggregate: &crate::domain::Aggregate, elapsed: Duration) -> String {
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

pub async fn schedules(args: SchedulesArgs) -> anyhow::Result<ExitCode> {
    let mut client = CoordinatorClient::connect(&args.coordinator.url).await?;
    match args.command {
        SchedulesCommand::List { json } => {
            let schedules = client.list_schedules().await?;
            if json {
                outln!(
                    "{}",
                    Value::Array(schedules.iter().map(schedule_json).collect())
                );
            } else {
                print_table(
                    SCHEDULE_HEADER,
                    schedules.iter().map(schedule_row).collect(),
                );
            }
        }
        SchedulesCommand::Add {
            name,
            task,
            every,
            cron,
            timezone,
            args,
            queue,
        } => {
            let timing = match (every, cron) {
                (Some(every), _) => Timing::every("--every", every)?,
                (None, Some(cron)) => Timing::cron("--cron", &cron, "--timezone", &timezone)?,
                (None, None) => anyhow::bail!("give --every or --cron"),
            };
            let mut spec = TaskSpec::new(
                TaskName::parse("--task", &task)?,
                JsonText::parse("--args", &args, usize::MAX)?,
            );
            spec.queue = queue
                .as_deref()
                .map(|queue| QueueName::parse("--queue", queue))
                .transpose()?;
            let schedule = Schedule {
                name: parse_schedule_name("NAME", &name)?,
                task: spec,
                timing,
                paused: false,
                next_run_at: None,
                last_run_at: None,
                last_task_id: None,
                source: ScheduleSource::Api,
            };
            let stored = client.put_schedule(&schedule).await?;
            outln!(
                "schedule {} ticks next at {}",
                stored.name,
                moment(stored.next_run_at)
            );
        }
        SchedulesCommand::Remove { name } => {
            client.delete_schedule(&name).await?;
            outln!("schedule {name} removed");
        }
        SchedulesCommand::Pause { name } => {
            client.pause_schedule(&name, true).await?;
            outln!("schedule {name} paused");
        }
        SchedulesCommand::Resume { name } => {
            let schedule = client.pause_schedule(&name, false).await?;
            outln!(
                "schedule {name} resumed; next tick at {}",
                moment(schedule.next_run_at)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_mark_their_moments_as_utc() {
        let at: DateTime<Utc> = "2026-12-01T23:05:07.250Z".parse().unwrap();
        assert_eq!(moment(Some(at)), "2026-12-01T23:05:07Z");
        assert_eq!(moment(None), "-");
    }

    #[test]
    fn cron_expressions_take_the_fields_the_help_names() {
        for accepted in ["0 3 * * *", "30 0 3 * * *", "30 0 3 * * * 2030"] {
            Timing::cron("--cron", accepted, "--timezone", "UTC")
                .unwrap_or_else(|error| panic!("{accepted:?}: {error}"));
        }
        let refused = Timing::cron("--cron", "0 3 *", "--timezone", "UTC").unwrap_err();
        assert!(
            refused.to_string().contains("between 5 and 7 fields"),
            "{refused}"
        );
    }
}
