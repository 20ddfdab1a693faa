//! `celeritas.v1.WorkerService`: converts a worker's stream at the edge and hands it to the
//! coordinator.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{coordinator_message_to_pb, worker_message_from_pb};
use super::pb;
use crate::coordinator::Coordinator;
use crate::coordinator::worker_stream::InboundError;
use crate::domain::{Refusal, ValidationError};

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
        let inbound = request
            .into_inner()
            .map(|message| match message {
                Ok(message) => worker_message_from_pb(message).map_err(|refusal| match refusal {
                    Refusal::Stream(error) => InboundError::Invalid(error),
                    refusal => InboundError::Refused(refusal),
                }),
                // A message that does not decode: the worker is told why its stream ended.
                Err(status) if status.code() == tonic::Code::InvalidArgument => Err(
                    InboundError::Invalid(ValidationError::new("message", status.message())),
                ),
                Err(status) => Err(InboundError::Broken(status.to_string())),
            })
            .boxed();
        let replies = self.coordinator.spawn_worker_stream(inbound);
        let outbound =
            replies.map(|reply| reply.map(coordinator_message_to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(outbound)))
    }
}
