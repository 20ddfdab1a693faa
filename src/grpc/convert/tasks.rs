//! Task specs (what a client submits, and a worker's children) and task records (what a client
//! reads).

use super::primitives::{
    UNLIMITED, duration_from_pb, duration_to_pb, optional_task_id, positive_duration,
    state_from_pb, state_to_pb, timestamp_from_pb, timestamp_to_pb,
};
use super::progress::progress_to_pb;
use crate::domain::{
    AttemptFailure, ExpiresAt, GroupKey, JsonText, Priority, ProgressReport, QueueName, RateKeys,
    StartAt, TaskId, TaskName, TaskRecord, TaskSelector, TaskSpec, TimeRange, ValidationError,
    WorkerId, parse_idempotency_key, parse_max_concurrency, parse_max_retries, parse_short_name,
};
use crate::grpc::pb;

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
        rate_keys: RateKeys::parse("rate_keys", &spec.rate_keys.into_iter().collect())?,
        group_key: (!spec.group_key.is_empty())
            .then(|| GroupKey::parse("group_key", &spec.group_key))
            .transpose()?,
        max_concurrency: spec
            .max_concurrency
            .map(|limit| parse_max_concurrency("max_concurrency", limit))
            .transpose()?,
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
        rate_keys: spec
            .rate_keys
            .iter()
            .map(|(key, cost)| (key.to_owned(), cost))
            .collect(),
        group_key: spec
            .group_key
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        max_concurrency: spec.max_concurrency,
    }
}

/// A task as a client or inspection reads it.
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
        rate_keys: task
            .rate_keys
            .iter()
            .map(|(key, cost)| (key.to_owned(), cost))
            .collect(),
        group_key: task
            .group_key
            .map(|key| key.to_string())
            .unwrap_or_default(),
        max_concurrency: task.max_concurrency,
        tree_paused_at: task.tree_paused_at.map(timestamp_to_pb),
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
        submitted_by: None,
        rate_keys: RateKeys::parse("task.rate_keys", &task.rate_keys.into_iter().collect())?,
        group_key: (!task.group_key.is_empty())
            .then(|| GroupKey::parse("task.group_key", &task.group_key))
            .transpose()?,
        max_concurrency: task.max_concurrency,
        tree_paused_at: moment("task.tree_paused_at", task.tree_paused_at)?,
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

/// A bulk operation's selector; fields are named `selector.…`. Absent means empty (which the
/// coordinator refuses, naming `selector`).
pub fn selector_from_pb(
    selector: Option<pb::TaskSelector>,
) -> Result<TaskSelector, ValidationError> {
    let Some(selector) = selector else {
        return Ok(TaskSelector::default());
    };
    let each = |field: &str, values: &[String]| -> Vec<(String, String)> {
        values
            .iter()
            .enumerate()
            .map(|(index, value)| (format!("selector.{field}[{index}]"), value.clone()))
            .collect()
    };
    let moment = |field: &str, value: Option<prost_types::Timestamp>| {
        value
            .map(|value| timestamp_from_pb(&format!("selector.{field}"), value))
            .transpose()
    };
    let range = |after: TimeRange| -> Result<TimeRange, ValidationError> {
        match (after.after, after.before) {
            (Some(start), Some(end)) if end <= start => Err(ValidationError::new(
                "selector",
                "a time range ends before it begins",
            )),
            _ => Ok(after),
        }
    };
    Ok(TaskSelector {
        names: each("names", &selector.names)
            .iter()
            .map(|(field, name)| TaskName::parse(field, name))
            .collect::<Result<_, _>>()?,
        queues: each("queues", &selector.queues)
            .iter()
            .map(|(field, queue)| QueueName::parse(field, queue))
            .collect::<Result<_, _>>()?,
        root: optional_task_id("selector.root_id", &selector.root_id)?,
        states: selector
            .states
            .iter()
            .enumerate()
            .map(|(index, state)| state_from_pb(&format!("selector.states[{index}]"), *state))
            .collect::<Result<_, _>>()?,
        error_kinds: each("error_kinds", &selector.error_kinds)
            .iter()
            .map(|(field, kind)| parse_short_name(field, kind))
            .collect::<Result<_, _>>()?,
        created: range(TimeRange {
            after: moment("created_after", selector.created_after)?,
            before: moment("created_before", selector.created_before)?,
        })?,
        finished: range(TimeRange {
            after: moment("finished_after", selector.finished_after)?,
            before: moment("finished_before", selector.finished_before)?,
        })?,
    })
}

/// A selector as a client sends it.
pub fn selector_to_pb(selector: &TaskSelector) -> pb::TaskSelector {
    pb::TaskSelector {
        names: selector.names.iter().map(ToString::to_string).collect(),
        queues: selector.queues.iter().map(ToString::to_string).collect(),
        root_id: selector
            .root
            .map(|root| root.to_string())
            .unwrap_or_default(),
        states: selector
            .states
            .iter()
            .map(|state| state_to_pb(*state) as i32)
            .collect(),
        error_kinds: selector.error_kinds.clone(),
        created_after: selector.created.after.map(timestamp_to_pb),
        created_before: selector.created.before.map(timestamp_to_pb),
        finished_after: selector.finished.after.map(timestamp_to_pb),
        finished_before: selector.finished.before.map(timestamp_to_pb),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

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
}
