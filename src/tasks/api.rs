//! The coordinator's public API as the built-in tasks use it: the upkeep tasks list and end
//! batches, an import downloads its file, a campaign reads an import's records. Each call dials
//! the coordinator the worker serves, as any client would.

use crate::domain::ErrorKind;
use crate::grpc::client::{ClientError, CoordinatorClient, Target};
use crate::worker::TaskError;

/// Where the tasks reach the coordinator's API.
#[derive(Debug, Clone)]
pub struct CoordinatorApi {
    target: Target,
}

impl CoordinatorApi {
    /// The API of `target`'s coordinator, called with the worker's own credentials.
    pub fn new(target: Target) -> Self {
        Self { target }
    }

    /// A connected client.
    pub async fn client(&self) -> Result<CoordinatorClient, TaskError> {
        CoordinatorClient::connect_to(&self.target)
            .await
            .map_err(api_error)
    }
}

/// A coordinator that cannot be reached (or is unavailable) is worth another try; a refusal is
/// not.
pub fn api_error(error: ClientError) -> TaskError {
    match &error {
        ClientError::Unreachable { .. } => {
            TaskError::retryable("coordinator_unreachable", error.to_string())
        }
        ClientError::Status {
            kind: ErrorKind::Unavailable | ErrorKind::DeadlineExceeded,
            ..
        } => TaskError::retryable("coordinator_unavailable", error.to_string()),
        _ => TaskError::permanent("coordinator_refused", error.to_string()),
    }
}
