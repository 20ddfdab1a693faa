//! The commands that talk to a coordinator: `submit` and `status`.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Value, json};

use super::{CoordinatorAddress, parse_duration};
use crate::domain::{
    ExpiresAt, GroupKey, JsonText, Priority, QueueName, StartAt, TaskId, TaskName, TaskRecord,
    TaskSpec, TaskState, parse_idempotency_key, parse_max_concurrency, parse_max_retries,
};
use crate::grpc::CoordinatorClient;

/// `celeritas submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The task's name.
    pub name: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// The arguments, as JSON; `@FILE` reads them from a file, `@-` from standard input.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub args: String,
    /// The queue (default: the task's route).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Priority within the queue, 0 to 255; higher runs first.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub priority: u32,
    /// Run no earlier than this long from now (seconds, or `2m`).
    #[arg(long, value_parser = parse_duration, conflicts_with = "eta", value_name = "DURATION")]
    pub countdown: Option<Duration>,
    /// Run no earlier than this moment (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub eta: Option<DateTime<Utc>>,
    /// Give up if not started within this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires: Option<Duration>,
    /// Retries allowed (default: the task's policy).
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// A key that makes repeated submissions return the first task.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// The soft time limit.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub soft_time_limit: Option<Duration>,
    /// The hard time limit.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub time_limit: Option<Duration>,
    /// Its fairness group (a tenant, a campaign): groups take turns within a queue.
    #[arg(long, value_name = "KEY")]
    pub group_key: Option<String>,
    /// At most this many tasks of its name and group leased or running at once.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Wait for this task alone to finish (not the children it submits), print its result, and
    /// exit non-zero unless it succeeded. A root that fans out (`send_campaign`, `fan_out`)
    /// finishes when its children are submitted; use --wait-tree to wait for them.
    #[arg(long, conflicts_with = "wait_tree")]
    pub wait: bool,
    /// Wait for the whole tree (the task, its children, theirs, and callbacks) to finish, then
    /// print the root's result; exit non-zero unless the root succeeded.
    #[arg(long)]
    pub wait_tree: bool,
    /// With --wait or --wait-tree: give up after this long (exit code 3).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeritas status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The task's id.
    pub id: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print the whole args and result; without it, long ones are cut at 200 characters.
    #[arg(long)]
    pub full: bool,
    /// Print JSON (always whole).
    #[arg(long)]
    pub json: bool,
}

/// `celeritas cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The task's id.
    pub id: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Abort a running task at once instead of asking it to stop.
    #[arg(long)]
    pub terminate: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeritas requeue` and `celeritas fail`.
#[derive(Debug, Args)]
pub struct InterveneArgs {
    /// The task's id.
    pub id: String,
    /// Why; recorded as the failed attempt's message.
    #[arg(long)]
    pub reason: String,
    /// Act only if the task is still on this attempt (default: its current one).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeritas purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The queue.
    pub queue: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Confirm: every pending and scheduled task of the queue is cancelled.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `celeritas pause-queue` and `resume-queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue.
    pub queue: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// `celeritas pause-tree` and `resume-tree`.
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// The tree's root task id (a campaign's `send_campaign`).
    pub root: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// `celeritas health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// The service to ask about (default: the whole server).
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,
}

/// The exit code of a task that ended without succeeding.
const EXIT_TASK_FAILED: u8 = 1;
/// The exit code when --timeout passed.
const EXIT_TIMEOUT: u8 = 3;

/// `--args`: JSON text, or `@FILE`, or `@-` for standard input.
fn read_args(args: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    match args.strip_prefix('@') {
        None => Ok(args.to_owned()),
        Some("-") => std::io::read_to_string(std::io::stdin()).context("--args: reading stdin"),
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("--args: {path}")),
    }
}

impl SubmitArgs {
    fn spec(&self) -> anyhow::Result<TaskSpec> {
        let mut spec = TaskSpec::new(
            TaskName::parse("NAME", &self.name)?,
            JsonText::parse("--args", &read_args(&self.args)?, usize::MAX)?,
        );
        spec.queue = self
            .queue
            .as_deref()
            .map(|queue| QueueName::parse("--queue", queue))
            .transpose()?;
        spec.priority = Priority::parse("--priority", self.priority)?;
        spec.start = match (self.countdown, self.eta) {
            (Some(countdown), _) => StartAt::After(countdown),
            (None, Some(eta)) => StartAt::At(eta),
            (None, None) => StartAt::Now,
        };
        spec.expires = self.expires.map_or(ExpiresAt::Never, ExpiresAt::After);
        spec.max_retries = self
            .max_retries
            .map(|retries| parse_max_retries("--max-retries", retries))
            .transpose()?;
        spec.idempotency_key = match &self.idempotency_key {
            Some(key) => parse_idempotency_key("--idempotency-key", key)?,
            None => None,
        };
        spec.soft_time_limit = self.soft_time_limit;
        spec.hard_time_limit = self.time_limit;
        spec.group_key = self
            .group_key
            .as_deref()
            .map(|key| GroupKey::parse("--group-key", key))
            .transpose()?;
        spec.max_concurrency = self
            .max_concurrency
            .map(|limit| parse_max_concurrency("--max-concurrency", limit))
            .transpose()?;
        Ok(spec)
    }
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = args.spec()?;
    let mut client = args.coordinator.connect().await?;
    if args.timeout.is_some() && !args.wait && !args.wait_tree {
        anyhow::bail!("--timeout needs --wait or --wait-tree");
    }
    let submitted = client.submit(&spec).await?;
    if args.wait_tree {
        return wait_for_tree(&mut client, submitted.id, &args).await;
    }
    if !args.wait {
        if args.json {
            outln!(
                "{}",
                json!({"task_id": submitted.id.to_string(), "created": submitted.created})
            );
        } else {
            outln!("{}", submitted.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = args
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let mut pause = Duration::from_millis(20);
    let task = loop {
        let task = client.task(submitted.id).await?;
        if task.state.is_terminal() {
            break task;
        }
        if deadline.is_some_and(|deadline| tokio::time::Instant::now() + pause > deadline) {
            errln!("task {} is still {} after the timeout", task.id, task.state);
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    print_outcome(&task, args.json);
    Ok(exit_code_for(task.state))
}

/// `--wait-tree`: follows the tree's progress stream until its `tree_finished` event, then
/// prints the root as `--wait` does.
async fn wait_for_tree(
    client: &mut CoordinatorClient,
    id: TaskId,
    args: &SubmitArgs,
) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    let mut events = Box::pin(client.stream_progress(id, None).await?);
    let finished = async {
        while let Some(event) = events.next().await {
            if let crate::domain::TreeEventKind::TreeFinished { .. } = event?.kind {
                return Ok(true);
            }
        }
        Ok::<bool, anyhow::Error>(false)
    };
    let finished = match args.timeout {
        Some(timeout) => match tokio::time::timeout(timeout, finished).await {
            Ok(finished) => finished?,
            Err(_) => {
                let task = client.task(id).await?;
                errln!(
                    "the tree of task {id} is unfinished after the timeout (root {})",
                    task.state
                );
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
        },
        None => finished.await?,
    };
    if !finished {
        anyhow::bail!("the progress stream of task {id} ended before its tree finished");
    }
    let task = client.task(id).await?;
    print_outcome(&task, args.json);
    Ok(exit_code_for(task.state))
}

/// What `--wait` and `--wait-tree` print: the result, or the task when there is none.
fn print_outcome(task: &TaskRecord, json: bool) {
    if json {
        outln!("{}", task_json(task));
    } else if let Some(result) = &task.result {
        outln!("{result}");
    } else {
        errln!("{}", describe(task, false));
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let id = TaskId::parse("ID", &args.id)?;
    let mut client = args.coordinator.connect().await?;
    let task = client.task(id).await?;
    if args.json {
        outln!("{}", task_json(&task));
    } else {
        outln!("{}", describe(&task, args.full));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let id = TaskId::parse("ID", &args.id)?;
    let mut client = args.coordinator.connect().await?;
    let (task, descendants) = client.cancel_counted(id, args.terminate).await?;
    if args.json {
        let mut value = task_json(&task);
        value["descendants_cancelled"] = json!(descendants);
        outln!("{value}");
    } else {
        // Say what this request did: a root that has fanned out is finished itself, while its
        // unstarted children are what gets cancelled.
        let itself = if task.state == TaskState::Cancelled {
            format!("task {} cancelled", task.id)
        } else {
            format!("task {} had already finished ({})", task.id, task.state)
        };
        outln!("{itself}; {descendants} unfinished descendant(s) cancelled");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn intervene(args: InterveneArgs, fail: bool) -> anyhow::Result<ExitCode> {
    let id = TaskId::parse("ID", &args.id)?;
    let mut client = args.coordinator.connect().await?;
    let task = client
        .intervene(id, args.attempt.unwrap_or(0), fail, &args.reason)
        .await?;
    if args.json {
        outln!("{}", task_json(&task));
    } else {
        outln!(
            "task {} is {} (attempt {})",
            task.id,
            task.state,
            task.attempt
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn purge(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let queue = QueueName::parse("QUEUE", &args.queue)?;
    if !args.yes {
        anyhow::bail!(
            "purge cancels every pending and scheduled task of queue {queue}; pass --yes to confirm"
        );
    }
    let mut client = args.coordinator.connect().await?;
    let cancelled = client.purge(&queue).await?;
    outln!("{cancelled} tasks of queue {queue} cancelled");
    Ok(ExitCode::SUCCESS)
}

/// Pauses (or resumes) a queue.
pub async fn pause_queue(args: QueueArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let queue = QueueName::parse("QUEUE", &args.queue)?;
    let mut client = args.coordinator.connect().await?;
    let message = if pause {
        if client.pause_queue(&queue).await? {
            "paused: workers get no new leases from it; running tasks finish"
        } else {
            "was paused already"
        }
    } else if client.resume_queue(&queue).await? {
        "resumed"
    } else {
        "was not paused"
    };
    outln!("queue {queue} {message}");
    Ok(ExitCode::SUCCESS)
}

/// Pauses (or resumes) a task tree.
pub async fn pause_tree(args: TreeArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let root = TaskId::parse("ROOT", &args.root)?;
    let mut client = args.coordinator.connect().await?;
    let message = if pause {
        match client.pause_tree(root).await? {
            (true, stopping) => format!(
                "paused: its waiting tasks are held; {stopping} running tasks asked to stop"
            ),
            (false, _) => "was paused already".to_owned(),
        }
    } else if client.resume_tree(root).await? {
        "resumed".to_owned()
    } else {
        "was not paused".to_owned()
    };
    outln!("tree {root} {message}");
    Ok(ExitCode::SUCCESS)
}

pub async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let serving =
        crate::grpc::client::check_health(&args.coordinator.target()?, &args.service).await?;
    outln!("{}", if serving { "SERVING" } else { "NOT_SERVING" });
    Ok(if serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn exit_code_for(state: TaskState) -> ExitCode {
    if state == TaskState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TASK_FAILED)
    }
}

fn task_json(task: &TaskRecord) -> Value {
    let moment = |value: Option<DateTime<Utc>>| value.map(|value| value.to_rfc3339());
    json!({
        "id": task.id.to_string(),
        "name": task.name.as_str(),
        "queue": task.queue.as_str(),
        "priority": task.priority.value(),
        "state": task.state.as_str(),
        "args": task.args.to_value(),
        "result": task.result.as_ref().map(JsonText::to_value),
        "error": task.error.as_ref().map(|(kind, message)| json!({"kind": kind, "message": message})),
        "attempt": task.attempt,
        "retries": task.retries,
        "max_retries": task.max_retries,
        "created_at": task.created_at.to_rfc3339(),
        "run_at": task.run_at.to_rfc3339(),
        "started_at": moment(task.started_at),
        "finished_at": moment(task.finished_at),
        "expires_at": moment(task.expires_at),
        "worker_id": task.worker_id.as_ref().map(ToString::to_string),
        "parent_id": task.parent_id.map(|id| id.to_string()),
        "root_id": task.root_id.to_string(),
        "idempotency_key": task.idempotency_key,
        "failures": task.failures.iter().map(|failure| json!({
            "attempt": failure.attempt,
            "worker_id": failure.worker_id,
            "kind": failure.kind,
            "message": failure.message,
            "at": failure.at.to_rfc3339(),
        })).collect::<Vec<_>>(),
    })
}

/// How many characters of args and results `status` shows without `--full`.
const SHOWN_CHARACTERS: usize = 200;

/// `text`, or its first `SHOWN_CHARACTERS` characters and how much was left out.
fn shortened(text: &str, full: bool) -> String {
    let total = text.chars().count();
    if full || total <= SHOWN_CHARACTERS {
        return text.to_owned();
    }
    let shown: String = text.chars().take(SHOWN_CHARACTERS).collect();
    format!(
        "{shown}… ({} more characters, {total} in all; --full shows them)",
        total - SHOWN_CHARACTERS
    )
}

fn describe(task: &TaskRecord, full: bool) -> String {
    let moment = |value: Option<DateTime<Utc>>| {
        value.map_or_else(|| "-".to_owned(), |value| value.to_rfc3339())
    };
    let mut lines = vec![
        format!("id:        {}", task.id),
        format!("name:      {}", task.name),
        format!(
            "queue:     {} (priority {})",
            task.queue,
            task.priority.value()
        ),
        format!("state:     {}", task.state),
        format!(
            "attempt:   {} (retries used {} of {})",
            task.attempt, task.retries, task.max_retries
        ),
        format!(
            "worker:    {}",
            task.worker_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string)
        ),
        format!("created:   {}", task.created_at.to_rfc3339()),
        format!("runs at:   {}", task.run_at.to_rfc3339()),
        format!("started:   {}", moment(task.started_at)),
        format!("finished:  {}", moment(task.finished_at)),
        format!("args:      {}", shortened(task.args.as_str(), full)),
    ];
    if let Some(paused_at) = task.tree_paused_at {
        lines.push(format!(
            "paused:    its tree since {} (resume-tree {})",
            paused_at.to_rfc3339(),
            task.root_id
        ));
    }
    if let Some(group) = &task.group_key {
        lines.push(format!("group:     {group}"));
    }
    if let Some(limit) = task.max_concurrency {
        lines.push(format!("at most:   {limit} of its name and group at once"));
    }
    if !task.rate_keys.is_empty() {
        let keys: Vec<String> = task
            .rate_keys
            .iter()
            .map(|(key, cost)| format!("{key} ({cost})"))
            .collect();
        lines.push(format!("rate keys: {}", keys.join(", ")));
    }
    if let Some(result) = &task.result {
        lines.push(format!("result:    {}", shortened(result.as_str(), full)));
    }
    if let Some((kind, message)) = &task.error {
        lines.push(format!("error:     {kind}: {message}"));
    }
    for failure in &task.failures {
        lines.push(format!(
            "failed:    attempt {} on {} at {}: {}: {}",
            failure.attempt,
            failure.worker_id.as_deref().unwrap_or("-"),
            failure.at.to_rfc3339(),
            failure.kind,
            failure.message
        ));
    }
    lines.join("\n")
}
