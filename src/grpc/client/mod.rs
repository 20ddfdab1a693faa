//! A client of a coordinator's APIs, in domain terms, for the CLI, tests, benchmarks and (for
//! files) workers: connecting and errors here, the calls one file per service.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::pb::file_service_client::FileServiceClient;
use super::pb::inspect_service_client::InspectServiceClient;
use super::pb::schedule_service_client::ScheduleServiceClient;
use super::pb::task_service_client::TaskServiceClient;
use super::status::kind_of;
use crate::domain::{ErrorKind, ValidationError};

mod files;
mod inspect;
mod schedules;
mod tasks;

/// Why a call to a coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator's address is not a URL.
    #[error("{url:?} is not a coordinator URL: {reason}")]
    BadUrl {
        /// The address given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable {
        /// The address tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The coordinator (or the transport on its behalf) answered with an error.
    #[error("{kind:?}: {message}")]
    Status {
        /// What kind of failure it is.
        kind: ErrorKind,
        /// What the coordinator said.
        message: String,
    },
    /// The coordinator's answer does not parse.
    #[error("the coordinator's answer does not parse: {0}")]
    Malformed(#[from] ValidationError),
    /// A file to upload could not be read; the upload was abandoned, and nothing was kept.
    #[error("cannot read {what}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status {
            kind: kind_of(status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// Opens a channel to a coordinator.
pub async fn connect_channel(url: &str) -> Result<Channel, ClientError> {
    // tonic would connect to an https:// URL in plaintext without TLS configured: refuse
    // instead, never downgrade silently.
    match url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
    {
        Some(scheme) if scheme == "http" => {}
        Some(scheme) if scheme == "https" => {
            return Err(ClientError::BadUrl {
                url: url.to_owned(),
                reason: "TLS to a coordinator is not supported yet; use http:// on a network you \
                         trust (celeritas never connects to an https:// URL in plaintext)"
                    .to_owned(),
            });
        }
        _ => {
            return Err(ClientError::BadUrl {
                url: url.to_owned(),
                reason: "a coordinator URL starts with http://".to_owned(),
            });
        }
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| ClientError::BadUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    endpoint
        .connect()
        .await
        .map_err(|error| ClientError::Unreachable {
            url: url.to_owned(),
            reason: std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.to_string()),
        })
}

/// Asks a coordinator's `grpc.health.v1` whether `service` ("" for the whole server) is serving.
pub async fn check_health(url: &str, service: &str) -> Result<bool, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = connect_channel(url).await?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(response.status() == ServingStatus::Serving)
}

/// A connection to a coordinator's APIs.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    tasks: TaskServiceClient<Channel>,
    inspect: InspectServiceClient<Channel>,
    schedules: ScheduleServiceClient<Channel>,
    files: FileServiceClient<Channel>,
}

impl CoordinatorClient {
    /// Connects to the coordinator at `url` (`http://host:port`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let channel = connect_channel(url).await?;
        Ok(Self {
            tasks: TaskServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            inspect: InspectServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            schedules: ScheduleServiceClient::new(channel.clone()),
            files: FileServiceClient::new(channel)
                .max_decoding_message_size(files::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(files::MAX_MESSAGE_BYTES),
        })
    }
}
