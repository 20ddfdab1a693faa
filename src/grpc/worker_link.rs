//! The worker's end of its stream to a coordinator, in domain terms.

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{ClientError, Target, connect_channel};
use super::convert::{coordinator_message_from_pb, worker_message_to_pb};
use super::pb::worker_service_client::WorkerServiceClient;
use super::status::kind_of;
use crate::domain::{CoordinatorMessage, ErrorKind, Hello, WorkerMessage};

/// How many messages may wait to be sent to the coordinator.
const OUTBOUND_CAPACITY: usize = 4096;

/// Why the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No stream could be opened.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The coordinator ended the stream with an error.
    #[error("the coordinator ended the stream: {kind:?}: {message}")]
    Ended {
        /// What kind of failure it is.
        kind: ErrorKind,
        /// What the coordinator said.
        message: String,
    },
    /// The coordinator sent something that does not parse.
    #[error("the coordinator sent a malformed message: {0}")]
    Malformed(crate::domain::ValidationError),
}

/// An open worker stream.
pub struct WorkerLink {
    /// Messages to the coordinator.
    pub outbound: mpsc::Sender<WorkerMessage>,
    /// Messages from the coordinator; the stream ends when the coordinator closes it.
    pub inbound: BoxStream<'static, Result<CoordinatorMessage, LinkError>>,
}

impl WorkerLink {
    /// Opens a stream to the coordinator at `url` with no credentials and says `hello`.
    pub async fn open(url: &str, hello: Hello) -> Result<Self, LinkError> {
        Self::open_to(&Target::plain(url), hello).await
    }

    /// Opens a stream to a coordinator with the target's TLS and token, and says `hello`.
    pub async fn open_to(target: &Target, hello: Hello) -> Result<Self, LinkError> {
        let channel = connect_channel(target).await?;
        let mut client = WorkerServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        // The channel is new and empty: the hello always fits.
        let _ = outbound.try_send(WorkerMessage::Hello(hello));
        let requests = ReceiverStream::new(receiver).map(worker_message_to_pb);
        let response = client
            .connect(requests)
            .await
            .map_err(|status| LinkError::Connect(ClientError::from(status)))?;
        let inbound = response
            .into_inner()
            .map(|message| match message {
                Ok(message) => coordinator_message_from_pb(message).map_err(LinkError::Malformed),
                Err(status) => Err(LinkError::Ended {
                    kind: kind_of(status.code()),
                    message: status.message().to_owned(),
                }),
            })
            .boxed();
        Ok(Self { outbound, inbound })
    }
}
