//! The worker protocol, coordinator to worker: what the coordinator sends on a worker's stream
//! (welcome, leases, cancellations, controls, acknowledgements, answers to requests), parsed by
//! the worker.

use std::time::Duration;

use chrono::Utc;

use super::primitives::{
    UNLIMITED, duration_to_pb, lease_token_from_pb, lease_token_to_pb, optional_task_id,
    positive_duration, timestamp_from_pb, timestamp_to_pb,
};
use crate::domain::{
    ControlCommand, CoordinatorMessage, JsonText, Lease, Priority, QueueName, RequestError, TaskId,
    TaskName, TimeLimits, ValidationError,
};
use crate::grpc::pb;

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
        Message::Batch(_) => {
            return Err(ValidationError::new(
                "batch",
                "this worker's hello did not accept batches",
            ));
        }
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
