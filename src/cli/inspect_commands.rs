//! `inspect`: what `celery inspect` answers.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::CoordinatorAddress;
use super::table::{
    SCHEDULE_HEADER, moment, print_table, schedule_json, schedule_row, task_json, task_row,
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
    /// Each rate-limited key: its configured rate and the rate it runs at now.
    RateLimits,
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

/// `celeritas inspect`.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.coordinator.connect().await?;
    let client = &mut client;
    match args.command {
        InspectCommand::Ping => ping(client, args.json).await?,
        InspectCommand::Active => held(client, true, args.json).await?,
        InspectCommand::Reserved => held(client, false, args.json).await?,
        InspectCommand::Scheduled => scheduled(client, args.json).await?,
        InspectCommand::Stats | InspectCommand::ActiveQueues | InspectCommand::Registered => {
            workers(client, args.command, args.json).await?
        }
        InspectCommand::Queues => queues(client, args.json).await?,
        InspectCommand::RateLimits => rate_limits(client, args.json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `inspect ping`: a round trip to every connected worker.
async fn ping(client: &mut CoordinatorClient, json_out: bool) -> anyhow::Result<()> {
    let pings = client.ping(Duration::from_secs(2)).await?;
    if json_out {
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
    Ok(())
}

/// `inspect active` and `inspect reserved`: tasks running, or leased and not started.
async fn held(client: &mut CoordinatorClient, active: bool, json_out: bool) -> anyhow::Result<()> {
    let tasks = client.held_tasks(active).await?;
    if json_out {
        outln!("{}", Value::Array(tasks.iter().map(task_json).collect()));
    } else {
        print_table(
            &["WORKER", "TASK", "NAME", "QUEUE", "SINCE", "PROGRESS"],
            tasks.iter().map(task_row).collect(),
        );
    }
    Ok(())
}

/// `inspect scheduled`: tasks waiting for their time, and the periodic schedules.
async fn scheduled(client: &mut CoordinatorClient, json_out: bool) -> anyhow::Result<()> {
    let (tasks, schedules) = client.scheduled(100).await?;
    if json_out {
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
    Ok(())
}

/// `inspect stats`, `active_queues` and `registered`: what each worker said about itself.
async fn workers(
    client: &mut CoordinatorClient,
    command: InspectCommand,
    json_out: bool,
) -> anyhow::Result<()> {
    let workers = client.workers().await?;
    let now = Utc::now();
    if json_out {
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
        return Ok(());
    }
    match command {
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
        _ => {
            print_table(
                &["WORKER", "TASKS"],
                workers
                    .iter()
                    .map(|worker| vec![worker.id.clone(), worker.task_names.join(", ")])
                    .collect(),
            );
            // Tasks are leased only to workers that registered their names: say what waits.
            let waiting: Vec<Vec<String>> = client
                .queues()
                .await?
                .iter()
                .filter(|queue| !queue.unserved.is_empty())
                .map(|queue| vec![queue.queue.to_string(), unserved_text(&queue.unserved)])
                .collect();
            if !waiting.is_empty() {
                outln!("");
                outln!("Pending tasks that no connected worker of their queue registered:");
                print_table(&["QUEUE", "WAITING"], waiting);
            }
        }
    }
    Ok(())
}

/// Pending tasks no worker can run, as `name (count), …`, or `-`.
fn unserved_text(unserved: &std::collections::BTreeMap<String, u64>) -> String {
    if unserved.is_empty() {
        return "-".to_owned();
    }
    unserved
        .iter()
        .map(|(name, count)| format!("{name} ({count})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `inspect rate_limits`: the limits in force (configured or set through the API) and what
/// each limited key runs at, slowed down by pushback or not.
async fn rate_limits(client: &mut CoordinatorClient, json_out: bool) -> anyhow::Result<()> {
    let report = client.rate_limits().await?;
    if json_out {
        let keys: Vec<Value> = report
            .keys
            .iter()
            .map(|key| {
                json!({
                    "key": key.key,
                    "configured_per_second": key.configured,
                    "effective_per_second": key.effective,
                    "tokens": key.tokens,
                    "slowed_at": key.slowed_at.map(|at| at.to_rfc3339()),
                })
            })
            .collect();
        let limits: Vec<Value> = report
            .limits
            .iter()
            .map(|rule| {
                json!({
                    "pattern": rule.pattern,
                    "per_second": rule.per_second,
                    "source": if rule.set_through_api { "api" } else { "config" },
                    "set_at": rule.set_at.map(|at| at.to_rfc3339()),
                    "set_by": rule.set_by,
                })
            })
            .collect();
        outln!("{}", json!({ "limits": limits, "keys": keys }));
        return Ok(());
    }
    print_table(
        &["LIMIT", "PER SECOND", "SOURCE", "SET AT", "SET BY"],
        report
            .limits
            .iter()
            .map(|rule| {
                vec![
                    rule.pattern.clone(),
                    format!("{:.2}", rule.per_second),
                    if rule.set_through_api {
                        "api"
                    } else {
                        "config"
                    }
                    .to_owned(),
                    rule.set_at
                        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                    rule.set_by.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect(),
    );
    outln!("");
    print_table(
        &["KEY", "CONFIGURED/S", "NOW/S", "TOKENS", "SLOWED AT"],
        report
            .keys
            .iter()
            .map(|key| {
                vec![
                    key.key.clone(),
                    format!("{:.2}", key.configured),
                    format!("{:.2}", key.effective),
                    format!("{:.1}", key.tokens),
                    key.slowed_at
                        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// `inspect queues`: each queue's depth by state, and what waits for a worker that has it.
async fn queues(client: &mut CoordinatorClient, json_out: bool) -> anyhow::Result<()> {
    let queues = client.queues().await?;
    let states = ["pending", "scheduled", "leased", "running", "waiting"];
    if json_out {
        let queues: Vec<Value> = queues.iter().map(|queue| json!({
            "name": queue.queue.as_str(),
            "priority": queue.priority,
            "tasks_by_state": queue.by_state,
            "oldest_pending_age_seconds": queue.oldest_pending_age.map(|age| age.as_secs_f64()),
            "consumers": queue.consumers,
            "unserved": queue.unserved,
            "paused": queue.paused_at.is_some(),
            "paused_at": queue.paused_at.map(|at| at.to_rfc3339()),
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
        header.extend(["OLDEST PENDING", "CONSUMERS", "NO WORKER HAS", "PAUSED"]);
        print_table(
            &header,
            queues
                .iter()
                .map(|queue| {
                    let mut row = vec![queue.queue.to_string(), queue.priority.to_string()];
                    row.extend(
                        states.iter().map(|state| {
                            queue.by_state.get(*state).copied().unwrap_or(0).to_string()
                        }),
                    );
                    row.push(queue.oldest_pending_age.map_or("-".to_owned(), |age| {
                        humantime::format_duration(Duration::from_secs(age.as_secs())).to_string()
                    }));
                    row.push(queue.consumers.to_string());
                    row.push(unserved_text(&queue.unserved));
                    row.push(queue.paused_at.map_or("-".to_owned(), |at| {
                        format!("since {}", at.format("%Y-%m-%d %H:%M:%S UTC"))
                    }));
                    row
                })
                .collect(),
        );
    }
    Ok(())
}
