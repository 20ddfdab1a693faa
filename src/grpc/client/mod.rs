//! A client of a coordinator's APIs, in domain terms, for the CLI, tests, benchmarks and (for
//! files) workers: connecting and errors here, the calls one file per service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::pb::file_service_client::FileServiceClient;
use super::pb::inspect_service_client::InspectServiceClient;
use super::pb::schedule_service_client::ScheduleServiceClient;
use super::pb::task_service_client::TaskServiceClient;
use super::status::kind_of;
use crate::domain::{ErrorKind, TokenSecret, ValidationError};

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

/// Where a coordinator is, and what to show it: a CA to trust for `https://` URLs, a client
/// certificate (a worker's identity), a token.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, or `https://host:port` for TLS.
    pub url: String,
    /// A PEM file of the CA that signed the coordinator's certificate; without one, the public
    /// web roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate and its key, for a coordinator that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The token sent with every call, as `authorization: Bearer <token>`.
    pub token: Option<TokenSecret>,
}

impl Target {
    /// A coordinator reached with no credentials.
    pub fn plain(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ca_file: None,
            identity: None,
            token: None,
        }
    }
}

/// A channel that sends the target's token with every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to each call, marked sensitive (never logged).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BearerToken(…)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn read_pem(url: &str, what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| ClientError::BadUrl {
        url: url.to_owned(),
        reason: format!("cannot read the {what} {}: {error}", path.display()),
    })
}

/// The TLS a target asks for: none for `http://`, rustls for `https://`.
fn tls_config(target: &Target) -> Result<Option<ClientTlsConfig>, ClientError> {
    let url = target.url.as_str();
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => {
            if target.ca_file.is_some() || target.identity.is_some() {
                return Err(bad(
                    "a CA or a client certificate is for TLS: use an https:// URL (celeritas \
                     never sends them in plaintext)",
                ));
            }
            Ok(None)
        }
        Some("https") => {
            let mut config = ClientTlsConfig::new();
            config = match &target.ca_file {
                Some(path) => config.ca_certificate(Certificate::from_pem(read_pem(
                    url,
                    "CA file (--tls-ca)",
                    path,
                )?)),
                None => config.with_webpki_roots(),
            };
            if let Some((cert, key)) = &target.identity {
                config = config.identity(Identity::from_pem(
                    read_pem(url, "client certificate (--tls-cert)", cert)?,
                    read_pem(url, "client key (--tls-key)", key)?,
                ));
            }
            Ok(Some(config))
        }
        _ => Err(bad("a coordinator URL starts with http:// or https://")),
    }
}

/// Opens a channel to a coordinator.
pub async fn connect_channel(target: &Target) -> Result<AuthChannel, ClientError> {
    let url = target.url.as_str();
    let tls = tls_config(target)?;
    let token =
        target
            .token
            .as_ref()
            .map(|token| {
                let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| ClientError::BadUrl {
                        url: url.to_owned(),
                        reason: "the token is not visible ASCII".to_owned(),
                    })?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| ClientError::BadUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| ClientError::BadUrl {
                url: url.to_owned(),
                reason: error_chain(&error),
            })?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| ClientError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&error),
        })?;
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

/// An error and its causes, as one line: TLS failures say what went wrong only in a cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let line = next.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = next.source();
    }
    text
}

/// Asks a coordinator's `grpc.health.v1` whether `service` ("" for the whole server) is serving.
pub async fn check_health(target: &Target, service: &str) -> Result<bool, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = connect_channel(target).await?;
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
    tasks: TaskServiceClient<AuthChannel>,
    inspect: InspectServiceClient<AuthChannel>,
    schedules: ScheduleServiceClient<AuthChannel>,
    files: FileServiceClient<AuthChannel>,
}

impl CoordinatorClient {
    /// Connects to the coordinator at `url` (`http://host:port`) with no credentials.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_to(&Target::plain(url)).await
    }

    /// Connects to a coordinator with the target's TLS and token.
    pub async fn connect_to(target: &Target) -> Result<Self, ClientError> {
        let channel = connect_channel(target).await?;
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
