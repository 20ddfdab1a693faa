//! The primitives every message shares: durations, timestamps, task ids, lease tokens and task
//! states.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{LeaseToken, TaskId, TaskState, ValidationError};
use crate::grpc::pb;

/// No limit on JSON size, for messages from a coordinator this process trusts.
pub(super) const UNLIMITED: usize = usize::MAX;

/// A duration on the wire; one too long for protobuf is sent as the longest it holds.
pub fn duration_to_pb(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

pub(super) fn duration_from_pb(
    field: &str,
    duration: prost_types::Duration,
) -> Result<Duration, ValidationError> {
    Duration::try_from(duration).map_err(|_| ValidationError::new(field, "must not be negative"))
}

pub(super) fn positive_duration(
    field: &str,
    duration: prost_types::Duration,
) -> Result<Duration, ValidationError> {
    let duration = duration_from_pb(field, duration)?;
    if duration.is_zero() {
        return Err(ValidationError::new(field, "must be positive"));
    }
    Ok(duration)
}

/// A moment on the wire.
pub fn timestamp_to_pb(moment: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: moment.timestamp(),
        nanos: i32::try_from(moment.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn timestamp_from_pb(
    field: &str,
    timestamp: prost_types::Timestamp,
) -> Result<DateTime<Utc>, ValidationError> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| ValidationError::new(field, "is not a valid timestamp"))
}

pub(super) fn optional_task_id(field: &str, text: &str) -> Result<Option<TaskId>, ValidationError> {
    if text.is_empty() {
        Ok(None)
    } else {
        TaskId::parse(field, text).map(Some)
    }
}

pub(super) fn lease_token_from_pb(
    field: &str,
    token: Option<pb::LeaseToken>,
) -> Result<LeaseToken, ValidationError> {
    let token = token.ok_or_else(|| ValidationError::new(field, "is required"))?;
    LeaseToken::parse(field, &token.task_id, token.attempt)
}

pub(super) fn lease_token_to_pb(token: LeaseToken) -> pb::LeaseToken {
    pb::LeaseToken {
        task_id: token.task_id.to_string(),
        attempt: token.attempt,
    }
}

/// A task state on the wire.
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

/// Parses a task state; an unknown or unspecified one is refused, naming `field`.
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

/// Parses the wait of a `GetTask`.
pub fn wait_from_pb(wait: Option<prost_types::Duration>) -> Result<Duration, ValidationError> {
    wait.map(|wait| duration_from_pb("wait", wait))
        .transpose()
        .map(Option::unwrap_or_default)
}
