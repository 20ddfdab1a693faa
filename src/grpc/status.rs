//! The one table between error kinds and gRPC status codes, both ways: the coordinator's errors
//! leave as codes (`From<CoordinatorError> for Status`), and a client reads a code back as a
//! kind (`kind_of`), so nothing outside `grpc/` names a gRPC code. Internal errors are logged
//! with their cause and shown to clients only as "internal error"
//! (`CoordinatorError::into_shown_message`).

use tonic::{Code, Status};

use crate::coordinator::CoordinatorError;
use crate::domain::ErrorKind;

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        Status::new(code_for(error.kind()), error.into_shown_message())
    }
}

/// INVALID_ARGUMENT for a validation error.
pub fn invalid(error: crate::domain::ValidationError) -> Status {
    Status::from(CoordinatorError::Invalid(error))
}

/// The gRPC code a kind of failure is sent as.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unknown => Code::Unknown,
    }
}

/// The kind of failure a gRPC code tells: the reverse of `code_for`. OK is no failure; a status
/// that carries it anyway is of no known kind.
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::Aborted => ErrorKind::Aborted,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Internal => ErrorKind::Internal,
        Code::DataLoss => ErrorKind::DataLoss,
        Code::Unknown | Code::Ok => ErrorKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ValidationError;

    #[test]
    fn every_code_but_ok_reads_back_as_the_kind_it_was_sent_as() {
        for value in 1..=16 {
            let code = Code::from_i32(value);
            assert_eq!(code_for(kind_of(code)), code, "{code:?}");
        }
        assert_eq!(kind_of(Code::Ok), ErrorKind::Unknown);
    }

    #[test]
    fn coordinator_errors_keep_their_codes_and_internal_detail_stays_in_the_log() {
        let cases = [
            (
                CoordinatorError::Invalid(ValidationError::new("queue", "is empty")),
                Code::InvalidArgument,
                "queue: is empty",
            ),
            (
                CoordinatorError::NotFound(ValidationError::new("task_id", "no task")),
                Code::NotFound,
                "task_id: no task",
            ),
            (
                CoordinatorError::FailedPrecondition("finished".to_owned()),
                Code::FailedPrecondition,
                "finished",
            ),
            (
                CoordinatorError::Unavailable("the database is down".to_owned()),
                Code::Unavailable,
                "the database is down",
            ),
            (
                CoordinatorError::Internal("a secret".to_owned()),
                Code::Internal,
                "internal error; the coordinator's log has the detail",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }
}
