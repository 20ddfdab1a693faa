//! The one table from coordinator errors to gRPC status codes. Internal errors are logged with
//! their cause and shown to clients only as "internal error".

use tonic::Status;

use crate::coordinator::CoordinatorError;

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::Invalid(error) => Status::invalid_argument(error.to_string()),
            CoordinatorError::NotFound(error) => Status::not_found(error.to_string()),
            CoordinatorError::FailedPrecondition(message) => Status::failed_precondition(message),
            CoordinatorError::Unavailable(message) => Status::unavailable(message),
            CoordinatorError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error; the coordinator's log has the detail")
            }
        }
    }
}

/// INVALID_ARGUMENT for a validation error.
pub fn invalid(error: crate::domain::ValidationError) -> Status {
    Status::from(CoordinatorError::Invalid(error))
}
