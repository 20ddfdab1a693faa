//! `celeritas.v1.WorkerService`: converts a worker's stream at the edge and hands it to the
//! coordinator.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{coordinator_message_to_pb, worker_message_from_pb};
use super::pb;
use crate::coordinator::worker_stream::InboundError;
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::domain::{CoordinatorMessage, Refusal, ValidationError, WorkerMessage};

/// The worker API of one coordinator.
pub struct WorkerApi {
    coordinator: Arc<Coordinator>,
}

impl WorkerApi {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerApi {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(rpc = "Connect"))]
    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        // Batches are framing: they are opened here, and the coordinator sees the messages one
        // by one. A worker whose hello accepts them gets what is ready for it in one message.
        let caller = super::auth::caller_of(&request);
        let accepts_batches = Arc::new(AtomicBool::new(false));
        let hello_accepts = accepts_batches.clone();
        let inbound = request
            .into_inner()
            .flat_map(move |message| {
                let messages = match message {
                    Ok(message) => {
                        if let Some(pb::connect_request::Message::Hello(hello)) = &message.message {
                            hello_accepts.store(hello.accepts_batches, Ordering::Relaxed);
                        }
                        unbatched(message)
                    }
                    // A message that does not decode: the worker is told why its stream ended.
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        vec![Err(InboundError::Invalid(ValidationError::new(
                            "message",
                            status.message(),
                        )))]
                    }
                    Err(status) => vec![Err(InboundError::Broken(status.to_string()))],
                };
                futures::stream::iter(messages)
            })
            .boxed();
        let replies = self.coordinator.spawn_worker_stream(caller, inbound);
        let outbound = replies
            .ready_chunks(MAX_BATCH_MESSAGES)
            .flat_map(move |ready| {
                futures::stream::iter(batched(ready, accepts_batches.load(Ordering::Relaxed)))
            });
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// The most messages one batch holds, either way.
pub const MAX_BATCH_MESSAGES: usize = 1_000;

/// A worker's message as the coordinator reads it: a batch's messages one by one, in order.
fn unbatched(message: pb::ConnectRequest) -> Vec<Result<WorkerMessage, InboundError>> {
    let Some(pb::connect_request::Message::Batch(batch)) = message.message else {
        return vec![converted(message)];
    };
    if batch.messages.len() > MAX_BATCH_MESSAGES {
        return vec![Err(InboundError::Invalid(ValidationError::new(
            "batch.messages",
            format!("at most {MAX_BATCH_MESSAGES} messages in a batch"),
        )))];
    }
    batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            if let Some(pb::connect_request::Message::Batch(_)) = message.message {
                return Err(InboundError::Invalid(ValidationError::new(
                    format!("batch.messages[{index}]"),
                    "a batch may not hold a batch",
                )));
            }
            converted(message)
        })
        .collect()
}

fn converted(message: pb::ConnectRequest) -> Result<WorkerMessage, InboundError> {
    worker_message_from_pb(message).map_err(|refusal| match refusal {
        Refusal::Stream(error) => InboundError::Invalid(error),
        refusal => InboundError::Refused(refusal),
    })
}

/// What is ready for the worker, as wire messages: one batch when the worker accepts them and
/// more than one message is ready, each on its own otherwise. An error ends the stream after
/// the messages before it.
fn batched(
    ready: Vec<Result<CoordinatorMessage, CoordinatorError>>,
    accepts_batches: bool,
) -> Vec<Result<pb::ConnectResponse, Status>> {
    let mut out = Vec::new();
    let mut pending: Vec<pb::ConnectResponse> = Vec::new();
    let flush = |pending: &mut Vec<pb::ConnectResponse>, out: &mut Vec<_>| {
        if pending.len() > 1 && accepts_batches {
            out.push(Ok(pb::ConnectResponse {
                message: Some(pb::connect_response::Message::Batch(pb::CoordinatorBatch {
                    messages: std::mem::take(pending),
                })),
            }));
        } else {
            out.extend(pending.drain(..).map(Ok));
        }
    };
    for reply in ready {
        match reply {
            Ok(message) => pending.push(coordinator_message_to_pb(message)),
            Err(error) => {
                flush(&mut pending, &mut out);
                out.push(Err(Status::from(error)));
            }
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> pb::ConnectRequest {
        pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Heartbeat(pb::Heartbeat {
                stats: None,
            })),
        }
    }

    fn batch(messages: Vec<pb::ConnectRequest>) -> pb::ConnectRequest {
        pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Batch(pb::WorkerBatch {
                messages,
            })),
        }
    }

    #[test]
    fn a_batch_is_read_as_its_messages_in_order_and_may_not_nest() {
        let opened = unbatched(batch(vec![
            heartbeat(),
            pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Credit(pb::Credit {
                    grant: 3,
                })),
            },
        ]));
        assert!(matches!(opened[0], Ok(WorkerMessage::Heartbeat(None))));
        assert!(matches!(opened[1], Ok(WorkerMessage::Credit(3))));

        let nested = unbatched(batch(vec![heartbeat(), batch(vec![heartbeat()])]));
        assert!(nested[0].is_ok());
        match &nested[1] {
            Err(InboundError::Invalid(error)) => assert_eq!(error.field, "batch.messages[1]"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let huge = unbatched(batch(vec![heartbeat(); MAX_BATCH_MESSAGES + 1]));
        match &huge[..] {
            [Err(InboundError::Invalid(error))] => assert_eq!(error.field, "batch.messages"),
            other => panic!("expected one refusal, got {other:?}"),
        }
    }

    #[test]
    fn ready_replies_go_in_one_batch_only_to_a_worker_that_accepts_them() {
        let ready = || {
            vec![
                Ok(CoordinatorMessage::Control {
                    request_id: 1,
                    command: crate::domain::ControlCommand::Ping,
                }),
                Ok(CoordinatorMessage::Control {
                    request_id: 2,
                    command: crate::domain::ControlCommand::Ping,
                }),
            ]
        };
        let one = batched(ready(), true);
        assert_eq!(one.len(), 1);
        match &one[0] {
            Ok(pb::ConnectResponse {
                message: Some(pb::connect_response::Message::Batch(batch)),
            }) => assert_eq!(batch.messages.len(), 2),
            other => panic!("expected a batch, got {other:?}"),
        }
        assert_eq!(batched(ready(), false).len(), 2);
        assert_eq!(
            batched(ready().into_iter().take(1).collect(), true).len(),
            1
        );
    }
}
