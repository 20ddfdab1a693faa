//! Conversions between the wire (`pb`) and the domain, both ways. Everything a client or worker
//! sends is parsed here into domain types, with errors that name the field.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::pb;
use crate::domain::{
    Aggregate, AttemptFailure, ControlCommand, CoordinatorMessage, ExpiresAt, Failure, Hello,
    JsonText, Lease, LeaseToken, Outcome, PingResult, Priority, ProgressReport, QueueDepth,
    QueueName, RecordEntry, RequestError, Schedule, ScheduleSource, StartAt, StoredRecord, TaskId,
    TaskName, TaskRecord, TaskSpec, TaskState, TimeLimits, Timing, TreeEvent, TreeEventKind,
    ValidationError, WorkerId, WorkerInfo, WorkerMessage, WorkerStats, parse_idempotency_key,
    parse_max_retries, parse_schedule_name, parse_short_name,
};
use crate::domain::{
    MAX_FAILURE_KIND_BYTES, MAX_FAILURE_MESSAGE_BYTES, MAX_HOSTNAME_BYTES, MAX_NOTE_BYTES,
    MAX_VERSION_BYTES, Refusal, check_text, sanitize,
};

/// No limit on JSON size, for messages from a coordinator this process trusts.
const UNLIMITED: usize = usize::MAX;

pub fn duration_to_pb(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

fn duration_from_pb(
    field: &str,
    duration: prost_types::Duration,
) -> Result<Duration, ValidationError> {
    Duration::try_from(duration).map_err(|_| ValidationError::new(field, "must not be negative"))
}

fn positive_duration(
    field: &str,
    duration: prost_types::Duration,
) -> Result<Duration, ValidationError> {
    let duration = duration_from_pb(field, duration)?;
    if duration.is_zero() {
        return Err(ValidationError::new(field, "must be positive"));
    }
    Ok(duration)
}

pub fn timestamp_to_pb(moment: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: moment.timestamp(),
        nanos: i32::try_from(moment.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn timestamp_from_pb(
    field: &str,
    timestamp: prost_types::Timestamp,
) -> Result<DateTime<Utc>, ValidationError> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| ValidationError::new(field, "is not a valid timestamp"))
}

fn optional_task_id(field: &str, text: &str) -> Result<Option<TaskId>, ValidationError> {
    if text.is_empty() {
        Ok(None)
    } else {
        TaskId::parse(field, text).map(Some)
    }
}

fn lease_token_from_pb(
    field: &str,
    token: Option<pb::LeaseToken>,
) -> Result<LeaseToken, ValidationError> {
    let token = token.ok_or_else(|| ValidationError::new(field, "is required"))?;
    LeaseToken::parse(field, &token.task_id, token.attempt)
}

fn lease_token_to_pb(token: LeaseToken) -> pb::LeaseToken {
    pb::LeaseToken {
        task_id: token.task_id.to_string(),
        attempt: token.attempt,
    }
}

pub fn state_to_pb(state: TaskState) -> pb::TaskState {
    match state {
        TaskState::Pending => pb::TaskState::Pending,
        TaskState::Scheduled => pb::TaskState::Scheduled,
        TaskState::Leased => pb::TaskState::Leased,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
        TaskState::Expired => pb::TaskState::Expired,
        TaskState::Waiting => pb::TaskState::Waiting,
    }
}

pub fn state_from_pb(field: &str, state: i32) -> Result<TaskState, ValidationError> {
    match pb::TaskState::try_from(state) {
        Ok(pb::TaskState::Pending) => Ok(TaskState::Pending),
        Ok(pb::TaskState::Scheduled) => Ok(TaskState::Scheduled),
        Ok(pb::TaskState::Leased) => Ok(TaskState::Leased),
        Ok(pb::TaskState::Running) => Ok(TaskState::Running),
        Ok(pb::TaskState::Succeeded) => Ok(TaskState::Succeeded),
        Ok(pb::TaskState::Failed) => Ok(TaskState::Failed),
        Ok(pb::TaskState::Cancelled) => Ok(TaskState::Cancelled),
        Ok(pb::TaskState::Expired) => Ok(TaskState::Expired),
        Ok(pb::TaskState::Waiting) => Ok(TaskState::Waiting),
        Ok(pb::TaskState::Unspecified) | Err(_) => Err(ValidationError::new(
            field,
            format!("{state} is not a task state"),
        )),
    }
}

/// Parses a client's task spec; fields are named relative to the spec.
pub fn task_spec_from_pb(
    spec: pb::TaskSpec,
    max_args_bytes: usize,
) -> Result<TaskSpec, ValidationError> {
    let name = TaskName::parse("name", &spec.name)?;
    let args = JsonText::parse("args_json", &spec.args_json, max_args_bytes)?;
    let start = match (spec.countdown, spec.eta) {
        (Some(_), Some(_)) => {
            return Err(ValidationError::new(
                "countdown",
                "cannot be combined with eta; give one of them",
            ));
        }
        (Some(countdown), None) => StartAt::After(duration_from_pb("countdown", countdown)?),
        (None, Some(eta)) => StartAt::At(timestamp_from_pb("eta", eta)?),
        (None, None) => StartAt::Now,
    };
    let expires = match (spec.expires_at, spec.expires_in) {
        (Some(_), Some(_)) => {
            return Err(ValidationError::new(
                "expires_at",
                "cannot be combined with expires_in; give one of them",
            ));
        }
        (Some(moment), None) => ExpiresAt::At(timestamp_from_pb("expires_at", moment)?),
        (None, Some(duration)) => ExpiresAt::After(positive_duration("expires_in", duration)?),
        (None, None) => ExpiresAt::Never,
    };
    Ok(TaskSpec {
        name,
        args,
        queue: spec
            .queue
            .as_deref()
            .map(|queue| QueueName::parse("queue", queue))
            .transpose()?,
        priority: Priority::parse("priority", spec.priority)?,
        start,
        expires,
        max_retries: spec
            .max_retries
            .map(|retries| parse_max_retries("max_retries", retries))
            .transpose()?,
        idempotency_key: parse_idempotency_key("idempotency_key", &spec.idempotency_key)?,
        soft_time_limit: spec
            .soft_time_limit
            .map(|limit| positive_duration("soft_time_limit", limit))
            .transpose()?,
        hard_time_limit: spec
            .hard_time_limit
            .map(|limit| positive_duration("hard_time_limit", limit))
            .transpose()?,
        parent_id: optional_task_id("parent_id", &spec.parent_id)?,
    })
}

/// A task spec as a client sends it.
pub fn task_spec_to_pb(spec: &TaskSpec) -> pb::TaskSpec {
    let (countdown, eta) = match spec.start {
        StartAt::Now => (None, None),
        StartAt::After(countdown) => (Some(duration_to_pb(countdown)), None),
        StartAt::At(eta) => (None, Some(timestamp_to_pb(eta))),
    };
    let (expires_at, expires_in) = match spec.expires {
        ExpiresAt::Never => (None, None),
        ExpiresAt::After(duration) => (None, Some(duration_to_pb(duration))),
        ExpiresAt::At(moment) => (Some(timestamp_to_pb(moment)), None),
    };
    pb::TaskSpec {
        name: spec.name.to_string(),
        args_json: spec.args.to_string(),
        queue: spec.queue.as_ref().map(ToString::to_string),
        priority: u32::from(spec.priority.value()),
        countdown,
        eta,
        expires_at,
        expires_in,
        max_retries: spec.max_retries,
        idempotency_key: spec.idempotency_key.clone().unwrap_or_default(),
        soft_time_limit: spec.soft_time_limit.map(duration_to_pb),
        hard_time_limit: spec.hard_time_limit.map(duration_to_pb),
        parent_id: spec.parent_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

pub fn task_to_pb(task: TaskRecord) -> pb::Task {
    pb::Task {
        id: task.id.to_string(),
        name: task.name.to_string(),
        queue: task.queue.to_string(),
        priority: u32::from(task.priority.value()),
        state: state_to_pb(task.state).into(),
        args_json: task.args.into_string(),
        result_json: task.result.map(JsonText::into_string).unwrap_or_default(),
        error: task
            .error
            .map(|(kind, message)| pb::TaskError { kind, message }),
        attempt: task.attempt,
        retries: task.retries,
        max_retries: task.max_retries,
        created_at: Some(timestamp_to_pb(task.created_at)),
        run_at: Some(timestamp_to_pb(task.run_at)),
        started_at: task.started_at.map(timestamp_to_pb),
        finished_at: task.finished_at.map(timestamp_to_pb),
        expires_at: task.expires_at.map(timestamp_to_pb),
        worker_id: task
            .worker_id
            .map(|worker| worker.to_string())
            .unwrap_or_default(),
        parent_id: task.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        root_id: task.root_id.to_string(),
        idempotency_key: task.idempotency_key.unwrap_or_default(),
        failures: task
            .failures
            .into_iter()
            .map(|failure| pb::AttemptFailure {
                attempt: failure.attempt,
                worker_id: failure.worker_id.unwrap_or_default(),
                kind: failure.kind,
                message: failure.message,
                at: Some(timestamp_to_pb(failure.at)),
            })
            .collect(),
        progress: task.progress.as_ref().map(progress_to_pb),
    }
}

/// A task as a client reads it from a coordinator.
pub fn task_from_pb(task: pb::Task) -> Result<TaskRecord, ValidationError> {
    let moment = |field: &str, value: Option<prost_types::Timestamp>| {
        value
            .map(|value| timestamp_from_pb(field, value))
            .transpose()
    };
    Ok(TaskRecord {
        id: TaskId::parse("task.id", &task.id)?,
        name: TaskName::parse("task.name", &task.name)?,
        queue: QueueName::parse("task.queue", &task.queue)?,
        priority: Priority::parse("task.priority", task.priority)?,
        state: state_from_pb("task.state", task.state)?,
        args: JsonText::parse("task.args_json", &task.args_json, UNLIMITED)?,
        result: if task.result_json.is_empty() {
            None
        } else {
            Some(JsonText::parse(
                "task.result_json",
                &task.result_json,
                UNLIMITED,
            )?)
        },
        error: task.error.map(|error| (error.kind, error.message)),
        attempt: task.attempt,
        retries: task.retries,
        max_retries: task.max_retries,
        created_at: moment("task.created_at", task.created_at)?
            .ok_or_else(|| ValidationError::new("task.created_at", "is required"))?,
        run_at: moment("task.run_at", task.run_at)?
            .ok_or_else(|| ValidationError::new("task.run_at", "is required"))?,
        started_at: moment("task.started_at", task.started_at)?,
        finished_at: moment("task.finished_at", task.finished_at)?,
        expires_at: moment("task.expires_at", task.expires_at)?,
        worker_id: if task.worker_id.is_empty() {
            None
        } else {
            Some(WorkerId::parse("task.worker_id", &task.worker_id)?)
        },
        parent_id: optional_task_id("task.parent_id", &task.parent_id)?,
        root_id: TaskId::parse("task.root_id", &task.root_id)?,
        idempotency_key: Some(task.idempotency_key).filter(|key| !key.is_empty()),
        failures: task
            .failures
            .into_iter()
            .enumerate()
            .map(|(index, failure)| {
                Ok(AttemptFailure {
                    attempt: failure.attempt,
                    worker_id: Some(failure.worker_id).filter(|worker| !worker.is_empty()),
                    kind: failure.kind,
                    message: failure.message,
                    at: timestamp_from_pb(
                        &format!("task.failures[{index}].at"),
                        failure.at.unwrap_or_default(),
                    )?,
                })
            })
            .collect::<Result<_, ValidationError>>()?,
        progress: task.progress.map(|progress| ProgressReport {
            done: progress.done,
            total: progress.total,
            message: progress.message,
        }),
    })
}

fn progress_to_pb(progress: &ProgressReport) -> pb::Progress {
    pb::Progress {
        done: progress.done,
        total: progress.total,
        message: progress.message.clone(),
    }
}

fn aggregate_to_pb(aggregate: &Aggregate) -> pb::Aggregate {
    pb::Aggregate {
        tasks_total: aggregate.tasks_total,
        tasks_finished: aggregate.tasks_finished,
        tasks_by_state: aggregate
            .tasks_by_state
            .iter()
            .map(|(state, count)| (state.clone(), *count))
            .collect(),
        records_by_status: aggregate
            .records_by_status
            .iter()
            .map(|(status, count)| (status.clone(), *count))
            .collect(),
        progress: Some(progress_to_pb(&aggregate.progress)),
    }
}

/// A tree event as a progress stream sends it.
pub fn tree_event_to_pb(event: TreeEvent) -> pb::StreamProgressResponse {
    use pb::stream_progress_response::Event;
    let kind = match event.kind {
        TreeEventKind::StateChanged {
            task_id,
            state,
            error,
        } => Event::StateChanged(pb::StateChanged {
            task_id: task_id.to_string(),
            state: state_to_pb(state).into(),
            error: error.map(|(kind, message)| pb::TaskError { kind, message }),
        }),
        TreeEventKind::ProgressUpdated { task_id, progress } => {
            Event::ProgressUpdated(pb::ProgressUpdated {
                task_id: task_id.to_string(),
                progress: Some(progress_to_pb(&progress)),
            })
        }
        TreeEventKind::TreeUpdated {
            tasks_submitted,
            tasks_finished,
            records_added,
            message,
        } => Event::TreeUpdated(pb::TreeUpdated {
            tasks_submitted,
            tasks_finished,
            records_added,
            message,
        }),
        TreeEventKind::TreeFinished { root_state } => Event::TreeFinished(pb::TreeFinished {
            root_state: state_to_pb(root_state).into(),
        }),
    };
    pb::StreamProgressResponse {
        sequence: event.sequence,
        root_id: event.root_id.to_string(),
        at: Some(timestamp_to_pb(event.at)),
        event: Some(kind),
        aggregate: Some(aggregate_to_pb(&event.aggregate)),
    }
}

fn progress_from_pb(progress: Option<pb::Progress>) -> ProgressReport {
    progress
        .map(|progress| ProgressReport {
            done: progress.done,
            total: progress.total,
            message: progress.message,
        })
        .unwrap_or_default()
}

/// A tree event as a client reads it.
pub fn tree_event_from_pb(event: pb::StreamProgressResponse) -> Result<TreeEvent, ValidationError> {
    use pb::stream_progress_response::Event;
    let kind = match event.event {
        Some(Event::StateChanged(changed)) => TreeEventKind::StateChanged {
            task_id: TaskId::parse("state_changed.task_id", &changed.task_id)?,
            state: state_from_pb("state_changed.state", changed.state)?,
            error: changed.error.map(|error| (error.kind, error.message)),
        },
        Some(Event::ProgressUpdated(updated)) => TreeEventKind::ProgressUpdated {
            task_id: TaskId::parse("progress_updated.task_id", &updated.task_id)?,
            progress: progress_from_pb(updated.progress),
        },
        Some(Event::TreeUpdated(updated)) => TreeEventKind::TreeUpdated {
            tasks_submitted: updated.tasks_submitted,
            tasks_finished: updated.tasks_finished,
            records_added: updated.records_added,
            message: updated.message,
        },
        Some(Event::TreeFinished(finished)) => TreeEventKind::TreeFinished {
            root_state: state_from_pb("tree_finished.root_state", finished.root_state)?,
        },
        None => return Err(ValidationError::new("event", "is empty")),
    };
    let aggregate = event.aggregate.unwrap_or_default();
    Ok(TreeEvent {
        sequence: event.sequence,
        root_id: TaskId::parse("root_id", &event.root_id)?,
        at: event
            .at
            .map(|at| timestamp_from_pb("at", at))
            .transpose()?
            .unwrap_or_else(Utc::now),
        kind,
        aggregate: Aggregate {
            tasks_total: aggregate.tasks_total,
            tasks_finished: aggregate.tasks_finished,
            tasks_by_state: aggregate.tasks_by_state.into_iter().collect(),
            records_by_status: aggregate.records_by_status.into_iter().collect(),
            progress: progress_from_pb(aggregate.progress),
        },
    })
}

/// A stored record as a client reads it.
pub fn record_to_pb(record: StoredRecord) -> pb::Record {
    pb::Record {
        task_id: record.task_id.to_string(),
        root_id: record.root_id.to_string(),
        kind: record.entry.kind,
        key: record.entry.key,
        status: record.entry.status,
        data_json: record
            .entry
            .data
            .map(JsonText::into_string)
            .unwrap_or_default(),
        created_at: Some(timestamp_to_pb(record.created_at)),
        updated_at: Some(timestamp_to_pb(record.updated_at)),
    }
}

/// A worker's queues as inspection shows them.
pub fn worker_queues_to_pb(worker: &WorkerInfo) -> Vec<pb::QueueRef> {
    worker
        .queues
        .iter()
        .map(|(queue, priority)| pb::QueueRef {
            name: queue.to_string(),
            priority: u32::from(*priority),
        })
        .collect()
}

/// A worker's process and counters as inspection shows them.
pub fn worker_stats_to_pb(worker: &WorkerInfo, now: DateTime<Utc>) -> pb::WorkerStatsEntry {
    let stats = worker.stats.clone().unwrap_or_default();
    pb::WorkerStatsEntry {
        worker_id: worker.id.clone(),
        hostname: worker.hostname.clone(),
        pid: worker.pid,
        uptime: stats
            .started_at
            .and_then(|started| (now - started).to_std().ok())
            .map(duration_to_pb),
        concurrency: worker.concurrency,
        prefetch_multiplier: worker.prefetch_multiplier,
        processed: stats.processed.into_iter().collect(),
        failed: stats.failed.into_iter().collect(),
        memory_rss_bytes: stats.memory_rss_bytes,
        connected: worker.connected,
        coordinator_id: worker.coordinator_id.clone(),
        version: worker.version.clone(),
    }
}

/// A ping result as inspection shows it.
pub fn ping_to_pb(ping: PingResult) -> pb::WorkerPing {
    pb::WorkerPing {
        worker_id: ping.worker_id,
        hostname: ping.hostname,
        answered: ping.round_trip.is_some(),
        round_trip: ping.round_trip.map(duration_to_pb),
        coordinator_id: ping.coordinator_id,
        detail: ping.detail,
    }
}

/// A queue's depth as inspection shows it.
pub fn queue_depth_to_pb(depth: QueueDepth) -> pb::QueueDepth {
    pb::QueueDepth {
        name: depth.queue.to_string(),
        priority: u32::from(depth.priority),
        tasks_by_state: depth.by_state.into_iter().collect(),
        oldest_pending_age: depth.oldest_pending_age.map(duration_to_pb),
        consumers: depth.consumers,
    }
}

/// Tasks grouped by the worker holding them, as inspection shows them.
pub fn tasks_by_worker_to_pb(tasks: Vec<TaskRecord>) -> Vec<pb::WorkerTasks> {
    let mut by_worker: std::collections::BTreeMap<String, Vec<pb::Task>> = Default::default();
    for task in tasks {
        let worker = task
            .worker_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        by_worker.entry(worker).or_default().push(task_to_pb(task));
    }
    by_worker
        .into_iter()
        .map(|(worker_id, tasks)| pb::WorkerTasks { worker_id, tasks })
        .collect()
}

/// A ping result as a client reads it.
pub fn ping_from_pb(ping: pb::WorkerPing) -> Result<PingResult, ValidationError> {
    Ok(PingResult {
        worker_id: ping.worker_id,
        hostname: ping.hostname,
        coordinator_id: ping.coordinator_id,
        round_trip: ping
            .round_trip
            .map(|round_trip| duration_from_pb("round_trip", round_trip))
            .transpose()?,
        detail: ping.detail,
    })
}

/// A queue depth as a client reads it.
pub fn queue_depth_from_pb(depth: pb::QueueDepth) -> Result<QueueDepth, ValidationError> {
    Ok(QueueDepth {
        queue: QueueName::parse("queues.name", &depth.name)?,
        priority: u8::try_from(depth.priority).unwrap_or(u8::MAX),
        by_state: depth.tasks_by_state.into_iter().collect(),
        oldest_pending_age: depth
            .oldest_pending_age
            .map(|age| duration_from_pb("oldest_pending_age", age))
            .transpose()?,
        consumers: depth.consumers,
    })
}

/// Worker statistics as a client reads them (queues and task names are left empty).
pub fn worker_stats_from_pb(entry: pb::WorkerStatsEntry, now: DateTime<Utc>) -> WorkerInfo {
    let uptime = entry
        .uptime
        .and_then(|uptime| Duration::try_from(uptime).ok());
    WorkerInfo {
        id: entry.worker_id,
        hostname: entry.hostname,
        pid: entry.pid,
        queues: Vec::new(),
        task_names: Vec::new(),
        concurrency: entry.concurrency,
        prefetch_multiplier: entry.prefetch_multiplier,
        version: entry.version,
        coordinator_id: entry.coordinator_id,
        connected_at: now,
        last_seen_at: None,
        stats: Some(WorkerStats {
            processed: entry.processed.into_iter().collect(),
            failed: entry.failed.into_iter().collect(),
            memory_rss_bytes: entry.memory_rss_bytes,
            started_at: uptime.and_then(|uptime| {
                chrono::Duration::from_std(uptime)
                    .ok()
                    .and_then(|uptime| now.checked_sub_signed(uptime))
            }),
        }),
        connected: entry.connected,
    }
}

/// A schedule as clients read it.
pub fn schedule_to_pb(schedule: Schedule) -> pb::Schedule {
    let timing = match &schedule.timing {
        Timing::Every(interval) => pb::schedule::Timing::Every(duration_to_pb(*interval)),
        Timing::Cron { expression, .. } => pb::schedule::Timing::Cron(expression.clone()),
    };
    pb::Schedule {
        timezone: schedule.timing.timezone_name().to_owned(),
        name: schedule.name,
        task: Some(task_spec_to_pb(&schedule.task)),
        timing: Some(timing),
        paused: schedule.paused,
        next_run_at: schedule.next_run_at.map(timestamp_to_pb),
        last_run_at: schedule.last_run_at.map(timestamp_to_pb),
        last_task_id: schedule
            .last_task_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// Parses a schedule a client sends (server-set fields are ignored); fields are named
/// `schedule.…`.
pub fn schedule_from_pb(
    schedule: pb::Schedule,
    max_args_bytes: usize,
) -> Result<Schedule, ValidationError> {
    let name = parse_schedule_name("schedule.name", &schedule.name)?;
    let task = schedule
        .task
        .ok_or_else(|| ValidationError::new("schedule.task", "is required"))?;
    let task =
        task_spec_from_pb(task, max_args_bytes).map_err(|error| error.within("schedule.task"))?;
    let timing = match schedule.timing {
        Some(pb::schedule::Timing::Every(every)) => {
            Timing::every("schedule.every", duration_from_pb("schedule.every", every)?)?
        }
        Some(pb::schedule::Timing::Cron(cron)) => Timing::cron(
            "schedule.cron",
            &cron,
            "schedule.timezone",
            &schedule.timezone,
        )?,
        None => {
            return Err(ValidationError::new(
                "schedule.timing",
                "is required: every or cron",
            ));
        }
    };
    Ok(Schedule {
        name,
        task,
        timing,
        paused: schedule.paused,
        next_run_at: None,
        last_run_at: None,
        last_task_id: None,
        source: ScheduleSource::Api,
    })
}

/// A schedule as a client reads it.
pub fn schedule_from_stored_pb(schedule: pb::Schedule) -> Result<Schedule, ValidationError> {
    let next_run_at = schedule
        .next_run_at
        .map(|at| timestamp_from_pb("schedule.next_run_at", at))
        .transpose()?;
    let last_run_at = schedule
        .last_run_at
        .map(|at| timestamp_from_pb("schedule.last_run_at", at))
        .transpose()?;
    let last_task_id = optional_task_id("schedule.last_task_id", &schedule.last_task_id)?;
    let mut parsed = schedule_from_pb(schedule, UNLIMITED)?;
    parsed.next_run_at = next_run_at;
    parsed.last_run_at = last_run_at;
    parsed.last_task_id = last_task_id;
    Ok(parsed)
}

/// Parses the wait of a `GetTask`.
pub fn wait_from_pb(wait: Option<prost_types::Duration>) -> Result<Duration, ValidationError> {
    wait.map(|wait| duration_from_pb("wait", wait))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Parses a message from a worker.
pub fn worker_message_from_pb(request: pb::ConnectRequest) -> Result<WorkerMessage, Refusal> {
    use pb::connect_request::Message;
    let message = request
        .message
        .ok_or_else(|| ValidationError::new("message", "is empty"))?;
    Ok(match message {
        Message::Hello(hello) => WorkerMessage::Hello(hello_from_pb(hello)?),
        Message::Credit(credit) => WorkerMessage::Credit(credit.grant),
        Message::Started(started) => WorkerMessage::Started {
            token: lease_token_from_pb("started.lease", started.lease)?,
            at: started
                .started_at
                .map(|at| timestamp_from_pb("started.started_at", at))
                .transpose()?
                .unwrap_or_else(Utc::now),
        },
        Message::Progress(progress) => WorkerMessage::Progress {
            token: lease_token_from_pb("progress.lease", progress.lease)?,
            report: ProgressReport {
                done: progress.done,
                total: progress.total,
                message: sanitize(&progress.message, MAX_NOTE_BYTES).into_owned(),
            },
        },
        Message::Result(result) => {
            let token = lease_token_from_pb("result.lease", result.lease)?;
            let outcome = match result.outcome {
                // A result the store cannot hold fails its attempt, naming why: refusing the
                // message instead would have the worker send it again for ever.
                Some(pb::task_result::Outcome::Success(success)) => match JsonText::parse(
                    "result.success.result_json",
                    &success.result_json,
                    UNLIMITED,
                ) {
                    Ok(result) => Outcome::Succeeded(result),
                    Err(error) => Outcome::Failed(Failure::invalid_result(&error)),
                },
                // Foreign text (an exception's message): made storable, never refused.
                Some(pb::task_result::Outcome::Failure(failure)) => Outcome::Failed(Failure {
                    kind: sanitize(&failure.kind, MAX_FAILURE_KIND_BYTES).into_owned(),
                    message: sanitize(&failure.message, MAX_FAILURE_MESSAGE_BYTES).into_owned(),
                    retryable: failure.retryable,
                    retry_after: failure
                        .retry_after
                        .map(|after| duration_from_pb("result.failure.retry_after", after))
                        .transpose()?,
                }),
                None => {
                    return Err(ValidationError::new(
                        "result.outcome",
                        "is required: success or failure",
                    )
                    .into());
                }
            };
            WorkerMessage::Result { token, outcome }
        }
        Message::Heartbeat(heartbeat) => WorkerMessage::Heartbeat(
            heartbeat
                .stats
                .map(|stats| -> Result<WorkerStats, ValidationError> {
                    Ok(WorkerStats {
                        processed: stats.processed.into_iter().collect(),
                        failed: stats.failed.into_iter().collect(),
                        memory_rss_bytes: stats.memory_rss_bytes,
                        started_at: stats
                            .started_at
                            .map(|at| timestamp_from_pb("heartbeat.stats.started_at", at))
                            .transpose()?,
                    })
                })
                .transpose()?,
        ),
        Message::SubmitChildren(submit) => {
            let request_id = submit.request_id;
            let token = lease_token_from_pb("submit_children.lease", submit.lease)?;
            let refused = |error| Refusal::Children { request_id, error };
            WorkerMessage::SubmitChildren {
                request_id,
                token,
                children: submit
                    .children
                    .into_iter()
                    .enumerate()
                    .map(|(index, spec)| {
                        task_spec_from_pb(spec, UNLIMITED).map_err(|error| {
                            error.within(&format!("submit_children.children[{index}]"))
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map_err(refused)?,
                callback: submit
                    .callback
                    .map(|spec| {
                        task_spec_from_pb(spec, UNLIMITED)
                            .map_err(|error| error.within("submit_children.callback"))
                    })
                    .transpose()
                    .map_err(refused)?,
            }
        }
        Message::EmitRecords(emit) => {
            let token = lease_token_from_pb("emit_records.lease", emit.lease)?;
            WorkerMessage::EmitRecords {
                token,
                records: emit
                    .records
                    .iter()
                    .enumerate()
                    .map(|(index, record)| {
                        RecordEntry::parse(
                            &format!("emit_records.records[{index}]"),
                            &record.kind,
                            &record.key,
                            &record.status,
                            &record.data_json,
                        )
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|error| Refusal::Records { token, error })?,
            }
        }
        Message::QueryRecords(query) => WorkerMessage::QueryRecords {
            request_id: query.request_id,
            token: lease_token_from_pb("query_records.lease", query.lease)?,
            kind: parse_short_name("query_records.kind", &query.kind)?,
            status: if query.status.is_empty() {
                None
            } else {
                Some(parse_short_name("query_records.status", &query.status)?)
            },
        },
        Message::Release(release) => WorkerMessage::Release(
            release
                .leases
                .into_iter()
                .enumerate()
                .map(|(index, token)| {
                    lease_token_from_pb(&format!("release.leases[{index}]"), Some(token))
                })
                .collect::<Result<_, _>>()?,
        ),
        Message::ControlReply(reply) => WorkerMessage::ControlReply {
            request_id: reply.request_id,
            detail: sanitize(&reply.detail, MAX_NOTE_BYTES).into_owned(),
        },
    })
}

fn hello_from_pb(hello: pb::Hello) -> Result<Hello, ValidationError> {
    if hello.queues.is_empty() {
        return Err(ValidationError::new(
            "hello.queues",
            "at least one queue is required",
        ));
    }
    if hello.concurrency == 0 {
        return Err(ValidationError::new(
            "hello.concurrency",
            "must be at least 1",
        ));
    }
    if hello.prefetch_multiplier == 0 {
        return Err(ValidationError::new(
            "hello.prefetch_multiplier",
            "must be at least 1",
        ));
    }
    check_text("hello.hostname", &hello.hostname, MAX_HOSTNAME_BYTES)?;
    check_text("hello.version", &hello.version, MAX_VERSION_BYTES)?;
    Ok(Hello {
        worker_id: WorkerId::parse("hello.worker_id", &hello.worker_id)?,
        hostname: hello.hostname,
        pid: hello.pid,
        queues: hello
            .queues
            .iter()
            .enumerate()
            .map(|(index, queue)| QueueName::parse(&format!("hello.queues[{index}]"), queue))
            .collect::<Result<_, _>>()?,
        concurrency: hello.concurrency,
        prefetch_multiplier: hello.prefetch_multiplier,
        task_names: hello
            .task_names
            .iter()
            .enumerate()
            .map(|(index, name)| TaskName::parse(&format!("hello.task_names[{index}]"), name))
            .collect::<Result<_, _>>()?,
        version: hello.version,
        held_leases: hello
            .held_leases
            .into_iter()
            .enumerate()
            .map(|(index, token)| {
                lease_token_from_pb(&format!("hello.held_leases[{index}]"), Some(token))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A message to a coordinator, as a worker sends it.
pub fn worker_message_to_pb(message: WorkerMessage) -> pb::ConnectRequest {
    use pb::connect_request::Message;
    let message = match message {
        WorkerMessage::Hello(hello) => Message::Hello(pb::Hello {
            worker_id: hello.worker_id.to_string(),
            hostname: hello.hostname,
            pid: hello.pid,
            queues: hello.queues.iter().map(ToString::to_string).collect(),
            concurrency: hello.concurrency,
            prefetch_multiplier: hello.prefetch_multiplier,
            task_names: hello.task_names.iter().map(ToString::to_string).collect(),
            version: hello.version,
            held_leases: hello
                .held_leases
                .into_iter()
                .map(lease_token_to_pb)
                .collect(),
        }),
        WorkerMessage::Credit(grant) => Message::Credit(pb::Credit { grant }),
        WorkerMessage::Started { token, at } => Message::Started(pb::TaskStarted {
            lease: Some(lease_token_to_pb(token)),
            started_at: Some(timestamp_to_pb(at)),
        }),
        WorkerMessage::Progress { token, report } => Message::Progress(pb::TaskProgress {
            lease: Some(lease_token_to_pb(token)),
            done: report.done,
            total: report.total,
            message: report.message,
        }),
        WorkerMessage::Result { token, outcome } => Message::Result(pb::TaskResult {
            lease: Some(lease_token_to_pb(token)),
            outcome: Some(match outcome {
                Outcome::Succeeded(result) => pb::task_result::Outcome::Success(pb::TaskSuccess {
                    result_json: result.into_string(),
                }),
                Outcome::Failed(failure) => pb::task_result::Outcome::Failure(pb::TaskFailure {
                    kind: failure.kind,
                    message: failure.message,
                    retryable: failure.retryable,
                    retry_after: failure.retry_after.map(duration_to_pb),
                }),
            }),
        }),
        WorkerMessage::Heartbeat(stats) => Message::Heartbeat(pb::Heartbeat {
            stats: stats.map(|stats| pb::WorkerStats {
                processed: stats.processed.into_iter().collect(),
                failed: stats.failed.into_iter().collect(),
                memory_rss_bytes: stats.memory_rss_bytes,
                started_at: stats.started_at.map(timestamp_to_pb),
            }),
        }),
        WorkerMessage::SubmitChildren {
            request_id,
            token,
            children,
            callback,
        } => Message::SubmitChildren(pb::SubmitChildren {
            request_id,
            lease: Some(lease_token_to_pb(token)),
            children: children.iter().map(task_spec_to_pb).collect(),
            callback: callback.as_ref().map(task_spec_to_pb),
        }),
        WorkerMessage::EmitRecords { token, records } => Message::EmitRecords(pb::EmitRecords {
            lease: Some(lease_token_to_pb(token)),
            records: records
                .into_iter()
                .map(|record| pb::RecordEntry {
                    kind: record.kind,
                    key: record.key,
                    status: record.status,
                    data_json: record.data.map(JsonText::into_string).unwrap_or_default(),
                })
                .collect(),
        }),
        WorkerMessage::QueryRecords {
            request_id,
            token,
            kind,
            status,
        } => Message::QueryRecords(pb::QueryRecords {
            request_id,
            lease: Some(lease_token_to_pb(token)),
            kind,
            status: status.unwrap_or_default(),
        }),
        WorkerMessage::Release(tokens) => Message::Release(pb::ReleaseLeases {
            leases: tokens.into_iter().map(lease_token_to_pb).collect(),
        }),
        WorkerMessage::ControlReply { request_id, detail } => {
            Message::ControlReply(pb::ControlReply { request_id, detail })
        }
    };
    pb::ConnectRequest {
        message: Some(message),
    }
}

/// A message to a worker, as the coordinator sends it.
pub fn coordinator_message_to_pb(message: CoordinatorMessage) -> pb::ConnectResponse {
    use pb::connect_response::Message;
    let message = match message {
        CoordinatorMessage::Welcome {
            coordinator_id,
            heartbeat_interval,
            kept_leases,
        } => Message::Welcome(pb::Welcome {
            coordinator_id,
            heartbeat_interval: Some(duration_to_pb(heartbeat_interval)),
            kept_leases: kept_leases.into_iter().map(lease_token_to_pb).collect(),
        }),
        CoordinatorMessage::Lease(lease) => Message::Lease(pb::Lease {
            token: Some(lease_token_to_pb(lease.token)),
            name: lease.name.to_string(),
            args_json: lease.args.into_string(),
            queue: lease.queue.to_string(),
            retries: lease.retries,
            max_retries: lease.max_retries,
            soft_time_limit: Some(duration_to_pb(lease.time_limits.soft)),
            hard_time_limit: Some(duration_to_pb(lease.time_limits.hard)),
            expires_at: lease.expires_at.map(timestamp_to_pb),
            parent_id: lease.parent_id.map(|id| id.to_string()).unwrap_or_default(),
            root_id: lease.root_id.to_string(),
            priority: u32::from(lease.priority.value()),
            run_at: Some(timestamp_to_pb(lease.run_at)),
        }),
        CoordinatorMessage::Cancel {
            token,
            terminate,
            reason,
        } => Message::Cancel(pb::Cancel {
            lease: Some(lease_token_to_pb(token)),
            terminate,
            reason,
        }),
        CoordinatorMessage::Control {
            request_id,
            command,
        } => Message::Control(pb::Control {
            request_id,
            command: match command {
                ControlCommand::Ping => Some(pb::control::Command::Ping(pb::Ping {})),
                ControlCommand::Drain => Some(pb::control::Command::Drain(pb::Drain {})),
                ControlCommand::CloseIdleConnections => Some(
                    pb::control::Command::CloseIdleConnections(pb::CloseIdleConnections {}),
                ),
                ControlCommand::Unsupported => None,
            },
        }),
        CoordinatorMessage::ResultAck {
            token,
            accepted,
            reason,
        } => Message::ResultAck(pb::ResultAck {
            lease: Some(lease_token_to_pb(token)),
            accepted,
            reason,
        }),
        CoordinatorMessage::ChildrenSubmitted { request_id, result } => {
            Message::ChildrenSubmitted(match result {
                Ok((children, callback)) => pb::ChildrenSubmitted {
                    request_id,
                    task_ids: children.iter().map(ToString::to_string).collect(),
                    callback_id: callback.map(|id| id.to_string()).unwrap_or_default(),
                    error: String::new(),
                    retryable: false,
                },
                Err(error) => pb::ChildrenSubmitted {
                    request_id,
                    task_ids: Vec::new(),
                    callback_id: String::new(),
                    error: error.message,
                    retryable: error.retryable,
                },
            })
        }
        CoordinatorMessage::RecordsQueried { request_id, result } => {
            Message::RecordsQueried(match result {
                Ok(keys) => pb::RecordsQueried {
                    request_id,
                    keys,
                    error: String::new(),
                    retryable: false,
                },
                Err(error) => pb::RecordsQueried {
                    request_id,
                    keys: Vec::new(),
                    error: error.message,
                    retryable: error.retryable,
                },
            })
        }
    };
    pb::ConnectResponse {
        message: Some(message),
    }
}

/// Parses a message from a coordinator.
pub fn coordinator_message_from_pb(
    response: pb::ConnectResponse,
) -> Result<CoordinatorMessage, ValidationError> {
    use pb::connect_response::Message;
    let message = response
        .message
        .ok_or_else(|| ValidationError::new("message", "is empty"))?;
    Ok(match message {
        Message::Welcome(welcome) => CoordinatorMessage::Welcome {
            coordinator_id: welcome.coordinator_id,
            heartbeat_interval: welcome
                .heartbeat_interval
                .map(|interval| positive_duration("welcome.heartbeat_interval", interval))
                .transpose()?
                .unwrap_or(Duration::from_secs(5)),
            kept_leases: welcome
                .kept_leases
                .into_iter()
                .enumerate()
                .map(|(index, token)| {
                    lease_token_from_pb(&format!("welcome.kept_leases[{index}]"), Some(token))
                })
                .collect::<Result<_, _>>()?,
        },
        Message::Lease(lease) => CoordinatorMessage::Lease(Lease {
            token: lease_token_from_pb("lease.token", lease.token)?,
            name: TaskName::parse("lease.name", &lease.name)?,
            queue: QueueName::parse("lease.queue", &lease.queue)?,
            priority: Priority::parse("lease.priority", lease.priority)?,
            args: JsonText::parse("lease.args_json", &lease.args_json, UNLIMITED)?,
            retries: lease.retries,
            max_retries: lease.max_retries,
            time_limits: TimeLimits::new(
                positive_duration(
                    "lease.soft_time_limit",
                    lease.soft_time_limit.unwrap_or_default(),
                )?,
                positive_duration(
                    "lease.hard_time_limit",
                    lease.hard_time_limit.unwrap_or_default(),
                )?,
                "lease.",
            )?,
            expires_at: lease
                .expires_at
                .map(|at| timestamp_from_pb("lease.expires_at", at))
                .transpose()?,
            parent_id: optional_task_id("lease.parent_id", &lease.parent_id)?,
            root_id: TaskId::parse("lease.root_id", &lease.root_id)?,
            run_at: lease
                .run_at
                .map(|at| timestamp_from_pb("lease.run_at", at))
                .transpose()?
                .unwrap_or_else(Utc::now),
        }),
        Message::Cancel(cancel) => CoordinatorMessage::Cancel {
            token: lease_token_from_pb("cancel.lease", cancel.lease)?,
            terminate: cancel.terminate,
            reason: cancel.reason,
        },
        Message::Control(control) => CoordinatorMessage::Control {
            request_id: control.request_id,
            command: match control.command {
                Some(pb::control::Command::Ping(_)) => ControlCommand::Ping,
                Some(pb::control::Command::Drain(_)) => ControlCommand::Drain,
                Some(pb::control::Command::CloseIdleConnections(_)) => {
                    ControlCommand::CloseIdleConnections
                }
                // A command this worker does not know (a newer coordinator's): answered as
                // unsupported rather than treated as a broken stream.
                None => ControlCommand::Unsupported,
            },
        },
        Message::ResultAck(ack) => CoordinatorMessage::ResultAck {
            token: lease_token_from_pb("result_ack.lease", ack.lease)?,
            accepted: ack.accepted,
            reason: ack.reason,
        },
        Message::ChildrenSubmitted(answer) => CoordinatorMessage::ChildrenSubmitted {
            request_id: answer.request_id,
            result: if answer.error.is_empty() {
                let children = answer
                    .task_ids
                    .iter()
                    .enumerate()
                    .map(|(index, id)| {
                        TaskId::parse(&format!("children_submitted.task_ids[{index}]"), id)
                    })
                    .collect::<Result<_, _>>()?;
                let callback =
                    optional_task_id("children_submitted.callback_id", &answer.callback_id)?;
                Ok((children, callback))
            } else {
                Err(RequestError {
                    message: answer.error,
                    retryable: answer.retryable,
                })
            },
        },
        Message::RecordsQueried(answer) => CoordinatorMessage::RecordsQueried {
            request_id: answer.request_id,
            result: if answer.error.is_empty() {
                Ok(answer.keys)
            } else {
                Err(RequestError {
                    message: answer.error,
                    retryable: answer.retryable,
                })
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> pb::TaskSpec {
        pb::TaskSpec {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn a_negative_countdown_is_refused_by_name() {
        let mut request = spec("noop");
        request.countdown = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        let error = task_spec_from_pb(request, 1024).unwrap_err();
        assert_eq!(error.field, "countdown");
        assert!(error.message.contains("negative"), "{error}");
    }

    #[test]
    fn countdown_and_eta_together_are_refused() {
        let mut request = spec("noop");
        request.countdown = Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        });
        request.eta = Some(timestamp_to_pb(Utc::now()));
        assert_eq!(
            task_spec_from_pb(request, 1024).unwrap_err().field,
            "countdown"
        );
    }

    #[test]
    fn a_task_spec_survives_the_round_trip() {
        let mut request = spec("send_campaign");
        request.args_json = r#"{"campaign_id":"c-42"}"#.to_owned();
        request.queue = Some("campaigns".to_owned());
        request.priority = 7;
        request.countdown = Some(duration_to_pb(Duration::from_secs(3)));
        request.expires_in = Some(duration_to_pb(Duration::from_secs(60)));
        request.max_retries = Some(4);
        request.idempotency_key = "campaign-c-42".to_owned();
        request.hard_time_limit = Some(duration_to_pb(Duration::from_secs(90)));
        let parsed = task_spec_from_pb(request.clone(), 1024).unwrap();
        assert_eq!(task_spec_to_pb(&parsed), request);
    }

    #[test]
    fn a_hello_without_queues_is_refused() {
        let request = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                worker_id: "w1".to_owned(),
                concurrency: 1,
                prefetch_multiplier: 1,
                ..Default::default()
            })),
        };
        assert_eq!(stream_refusal(request).field, "hello.queues");
    }

    #[test]
    fn a_result_without_an_outcome_is_refused() {
        let request = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Result(pb::TaskResult {
                lease: Some(pb::LeaseToken {
                    task_id: TaskId::generate().to_string(),
                    attempt: 1,
                }),
                outcome: None,
            })),
        };
        assert_eq!(stream_refusal(request).field, "result.outcome");
    }

    fn stream_refusal(request: pb::ConnectRequest) -> ValidationError {
        match worker_message_from_pb(request) {
            Err(Refusal::Stream(error)) => error,
            other => panic!("expected the stream to be refused, got {other:?}"),
        }
    }

    fn lease() -> Option<pb::LeaseToken> {
        Some(pb::LeaseToken {
            task_id: TaskId::generate().to_string(),
            attempt: 1,
        })
    }

    #[test]
    fn an_unstorable_result_fails_its_attempt_and_foreign_text_is_made_storable() {
        let result = |outcome| pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Result(pb::TaskResult {
                lease: lease(),
                outcome: Some(outcome),
            })),
        };
        let success = result(pb::task_result::Outcome::Success(pb::TaskSuccess {
            result_json: r#"{"reply": "250\u0000ok"}"#.to_owned(),
        }));
        let Ok(WorkerMessage::Result {
            outcome: Outcome::Failed(failure),
            ..
        }) = worker_message_from_pb(success)
        else {
            panic!("an unstorable result must fail its attempt");
        };
        assert_eq!(failure.kind, "invalid_result");
        assert!(
            failure.message.contains("result.success.result_json"),
            "{failure:?}"
        );
        assert!(!failure.retryable);

        let failure = result(pb::task_result::Outcome::Failure(pb::TaskFailure {
            kind: "smtp\0".to_owned(),
            message: format!("550 no\0such user{}", "x".repeat(100_000)),
            retryable: false,
            retry_after: None,
        }));
        let Ok(WorkerMessage::Result {
            outcome: Outcome::Failed(failure),
            ..
        }) = worker_message_from_pb(failure)
        else {
            panic!("a failure is taken");
        };
        assert!(!failure.kind.contains('\0') && !failure.message.contains('\0'));
        assert!(failure.message.len() <= MAX_FAILURE_MESSAGE_BYTES);
        assert!(failure.message.starts_with("550 no\u{fffd}such user"));
    }

    #[test]
    fn bad_children_and_records_are_refused_without_ending_the_stream() {
        let children = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::SubmitChildren(
                pb::SubmitChildren {
                    request_id: 7,
                    lease: lease(),
                    children: vec![pb::TaskSpec {
                        name: "noop".to_owned(),
                        args_json: r#"["\u0000"]"#.to_owned(),
                        ..Default::default()
                    }],
                    callback: None,
                },
            )),
        };
        match worker_message_from_pb(children) {
            Err(Refusal::Children { request_id, error }) => {
                assert_eq!(request_id, 7);
                assert_eq!(error.field, "submit_children.children[0].args_json");
            }
            other => panic!("{other:?}"),
        }
        let records = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::EmitRecords(pb::EmitRecords {
                lease: lease(),
                records: vec![pb::RecordEntry {
                    kind: "delivery".to_owned(),
                    key: "a\0@example.com".to_owned(),
                    status: "delivered".to_owned(),
                    ..Default::default()
                }],
            })),
        };
        match worker_message_from_pb(records) {
            Err(Refusal::Records { error, .. }) => {
                assert_eq!(error.field, "emit_records.records[0].key");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hello_with_a_huge_or_nul_hostname_is_refused() {
        let hello = |hostname: String| pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                worker_id: "w1".to_owned(),
                hostname,
                queues: vec!["default".to_owned()],
                concurrency: 1,
                prefetch_multiplier: 1,
                ..Default::default()
            })),
        };
        assert_eq!(
            stream_refusal(hello("h".repeat(70_000))).field,
            "hello.hostname"
        );
        assert_eq!(
            stream_refusal(hello("h\0".to_owned())).field,
            "hello.hostname"
        );
    }
}
