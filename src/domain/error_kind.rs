//! What kind of failure a call met, in the terms every client and the coordinator share.

/// What kind of failure a call met: the canonical kinds gRPC names, one for each of its codes,
/// so a caller can tell "try again later" from "the request is wrong" without knowing the wire.
///
/// The coordinator's errors have a kind (`CoordinatorError::kind`) and a failed call to a
/// coordinator carries one (`ClientError::Status`); `grpc/status.rs` maps kinds to gRPC codes
/// and back, one code per kind, so nothing is lost either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request does not make sense; the message names the field.
    InvalidArgument,
    /// Something the request names does not exist.
    NotFound,
    /// Something the request would create exists already.
    AlreadyExists,
    /// The request is valid but cannot be done in the current state (a task that finished, a
    /// hello the coordinator refuses); trying again will not help until the state changes.
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller did not say who it is.
    Unauthenticated,
    /// A limit was reached (a message too large, a quota).
    ResourceExhausted,
    /// A value is outside the range the request allows.
    OutOfRange,
    /// The request was abandoned midway, typically by a concurrent change.
    Aborted,
    /// The coordinator, or its database, cannot be reached now; the request may be retried.
    Unavailable,
    /// The call took longer than its deadline.
    DeadlineExceeded,
    /// The call was cancelled, usually by the caller.
    Cancelled,
    /// The coordinator does not know this call (an older version).
    Unimplemented,
    /// A bug or a broken store on the other side; its log has the detail.
    Internal,
    /// Data was lost or corrupted.
    DataLoss,
    /// A failure of no known kind.
    Unknown,
}
