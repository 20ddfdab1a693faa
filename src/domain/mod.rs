//! The domain: the values celeritas reasons about, each created by a parser so that holding one
//! proves it is valid. Nothing here knows about protobuf or SQL, or derives serde: JSON is
//! checked by walking it with serde's visitor (`json.rs`) and built as `serde_json` values by
//! hand (`tree.rs`).

mod auth;
mod error_kind;
mod file;
mod flow;
mod ids;
mod inspect;
mod json;
mod lease;
mod names;
mod protocol;
mod query;
mod rate;
mod record;
mod schedule;
mod spec;
mod task;
mod text;
mod tree;

pub use auth::{
    AcceptedToken, Caller, MAX_TOKEN_BYTES, Role, Roles, TOKEN_PREFIX, TokenDigest, TokenName,
    TokenSecret, find_token,
};
pub use error_kind::ErrorKind;
pub use file::{
    ContentType, DEFAULT_CONTENT_TYPE, FileChunk, FileId, FileInfo, FileName, MAX_FILE_CHUNK_BYTES,
    MAX_FILE_NAME_BYTES, NewFile, hex_digest,
};
pub use flow::{GroupKey, MAX_CONCURRENCY_LIMIT, MAX_GROUP_KEY_BYTES, parse_max_concurrency};
pub use ids::{TaskId, WorkerId};
pub use inspect::{KeyRate, PingResult, QueueDepth, RateLimitsReport, RateRule, WorkerInfo};
pub use json::{JsonText, MAX_JSON_DEPTH};
pub use lease::LeaseToken;
pub use names::{BUILTIN_TASK_NAMES, QueueName, TaskName};
pub use protocol::{
    ControlCommand, CoordinatorMessage, Hello, Lease, MAX_FAILURE_KIND_BYTES,
    MAX_FAILURE_MESSAGE_BYTES, MAX_HOSTNAME_BYTES, MAX_NOTE_BYTES, MAX_VERSION_BYTES,
    ProgressReport, Refusal, RequestError, WorkerMessage,
};
pub use query::{BulkOutcome, RecordsPage, RecordsRequest, TaskQuery, TaskSelector, TimeRange};
pub use rate::{
    DEFAULT_RATE_RECOVERY, MAX_RATE_KEYS, Rate, RateKeys, RateLimitSetting, RateLimits,
    SLOWEST_FACTOR, parse_rate_key, parse_rate_pattern, recovered_factor, slowed_factor,
};
pub use record::{
    MAX_RECORD_DATA_BYTES, MAX_RECORD_KEY_BYTES, RecordEntry, StoredRecord, WorkerStats,
    parse_short_name,
};
pub use schedule::{MIN_INTERVAL, Schedule, ScheduleSource, Timing, parse_schedule_name};
pub use spec::{
    ExpiresAt, MAX_BATCH_SUBMIT, MAX_IDEMPOTENCY_KEY_LENGTH, MAX_RETRIES_LIMIT, StartAt, TaskSpec,
    parse_idempotency_key, parse_max_retries,
};
pub use task::{
    AttemptFailure, Failure, Inserted, NewTask, Outcome, Priority, RetryPolicy, TaskRecord,
    TaskState, TimeLimits,
};
pub use text::{check_text, quoted, sanitize};
pub use tree::{
    Aggregate, Observed, Plan, Reported, TreeEvent, TreeEventKind, event_from_json, event_to_json,
    opening, plan_events, progress_from_json, progress_to_json, single_task_aggregate,
    synthesized_events,
};

/// An input that does not make sense, named by the field it came from.
///
/// The field is a path a client can find in its own request, such as `tasks[3].queue`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Where the bad value was, as a path into the request.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, seen from an enclosing message: `queue` becomes `tasks[3].queue`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}
