//! The worker protocol in domain terms: what travels on a worker's stream, both ways. The gRPC
//! layer converts these to and from the wire; the coordinator and the worker runtime speak only
//! these.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    JsonText, LeaseToken, Outcome, Priority, QueueName, RecordEntry, TaskId, TaskName, TaskSpec,
    TimeLimits, ValidationError, WorkerId, WorkerStats,
};

/// The longest hostname a worker may give (a DNS name is at most 253 characters).
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// The longest software version a worker may give.
pub const MAX_VERSION_BYTES: usize = 64;
/// The longest failure kind kept; a longer one is cut.
pub const MAX_FAILURE_KIND_BYTES: usize = 128;
/// The longest failure message kept; a longer one is cut.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 16 * 1024;
/// The longest progress message or control reply kept; a longer one is cut.
pub const MAX_NOTE_BYTES: usize = 4 * 1024;

/// A worker's message that cannot be taken as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It breaks the protocol: the stream ends with this error.
    Stream(ValidationError),
    /// A request for children that cannot be submitted: the request is answered with the
    /// error, and the stream goes on.
    Children {
        /// The request refused.
        request_id: u64,
        /// Why.
        error: ValidationError,
    },
    /// Records that cannot be stored: none of the message's records is written, and the
    /// attempt that emitted them fails when it reports its result (so no result commits
    /// without the records it followed).
    Records {
        /// The emitting task's lease.
        token: LeaseToken,
        /// Why.
        error: ValidationError,
    },
}

impl From<ValidationError> for Refusal {
    fn from(error: ValidationError) -> Self {
        Refusal::Stream(error)
    }
}

/// A worker's handshake.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Its stable id.
    pub worker_id: WorkerId,
    /// Its host.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it consumes, at least one.
    pub queues: Vec<QueueName>,
    /// How many tasks it runs at once, at least 1.
    pub concurrency: u32,
    /// Leases per unit of concurrency, at least 1.
    pub prefetch_multiplier: u32,
    /// The task names it runs.
    pub task_names: Vec<TaskName>,
    /// Its software version.
    pub version: String,
    /// Leases it still holds from an earlier stream.
    pub held_leases: Vec<LeaseToken>,
}

impl Hello {
    /// The most leases the worker may hold: concurrency × prefetch multiplier.
    pub fn capacity(&self) -> u32 {
        self.concurrency.saturating_mul(self.prefetch_multiplier)
    }
}

/// A running task's progress report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressReport {
    /// Units done.
    pub done: u64,
    /// Units in all; 0 when unknown.
    pub total: u64,
    /// A short note.
    pub message: String,
}

/// Worker → coordinator.
#[derive(Debug, Clone)]
pub enum WorkerMessage {
    /// The handshake.
    Hello(Hello),
    /// Room for this many more leases.
    Credit(u32),
    /// A leased task began running.
    Started {
        /// The lease.
        token: LeaseToken,
        /// When, by the worker's clock.
        at: DateTime<Utc>,
    },
    /// A running task's progress.
    Progress {
        /// The lease.
        token: LeaseToken,
        /// The report.
        report: ProgressReport,
    },
    /// A task's attempt ended.
    Result {
        /// The lease.
        token: LeaseToken,
        /// How it ended.
        outcome: Outcome,
    },
    /// The worker is alive, with its counters.
    Heartbeat(Option<WorkerStats>),
    /// Leases given back unstarted.
    Release(Vec<LeaseToken>),
    /// The answer to a control request.
    ControlReply {
        /// The request answered.
        request_id: u64,
        /// Free-form detail.
        detail: String,
    },
    /// A running task submits children, and perhaps a callback for when they are done.
    SubmitChildren {
        /// Matches the answer.
        request_id: u64,
        /// The parent's lease.
        token: LeaseToken,
        /// The children.
        children: Vec<TaskSpec>,
        /// The callback.
        callback: Option<TaskSpec>,
    },
    /// A running task emits records.
    EmitRecords {
        /// The emitting task's lease.
        token: LeaseToken,
        /// The records.
        records: Vec<RecordEntry>,
    },
    /// A running task met pushback on a rate key: its rate is lowered cluster-wide.
    SlowDown {
        /// The reporting task's lease.
        token: LeaseToken,
        /// The rate key.
        key: String,
    },
    /// A running task asks which keys its tree has records for.
    QueryRecords {
        /// Matches the answer.
        request_id: u64,
        /// The asking task's lease.
        token: LeaseToken,
        /// The kind of record.
        kind: String,
        /// Only keys with this status.
        status: Option<String>,
    },
}

/// A task leased to a worker, with everything the worker needs to run it.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The lease's token.
    pub token: LeaseToken,
    /// The task's name.
    pub name: TaskName,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// Its arguments.
    pub args: JsonText,
    /// Retries used.
    pub retries: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// Its time limits.
    pub time_limits: TimeLimits,
    /// When it must not start any more.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its parent.
    pub parent_id: Option<TaskId>,
    /// The root of its tree.
    pub root_id: TaskId,
    /// When it became due.
    pub run_at: DateTime<Utc>,
}

/// Why a task's request to the coordinator failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// An operational request to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Answer at once.
    Ping,
    /// Stop taking leases, finish running tasks, give back the rest and close.
    Drain,
    /// Close idle pooled connections (the SMTP relays').
    CloseIdleConnections,
    /// A command this worker does not know (sent by a newer coordinator).
    Unsupported,
}

/// Coordinator → worker.
#[derive(Debug, Clone)]
pub enum CoordinatorMessage {
    /// The answer to the hello.
    Welcome {
        /// The coordinator's id.
        coordinator_id: String,
        /// How often to send heartbeats.
        heartbeat_interval: Duration,
        /// Of the held leases, those the worker keeps.
        kept_leases: Vec<LeaseToken>,
    },
    /// A task to run.
    Lease(Lease),
    /// Stop a task.
    Cancel {
        /// The lease.
        token: LeaseToken,
        /// Abort at once.
        terminate: bool,
        /// Why.
        reason: String,
    },
    /// An operational request.
    Control {
        /// Matches the reply.
        request_id: u64,
        /// What to do.
        command: ControlCommand,
    },
    /// A result was recorded or refused.
    ResultAck {
        /// The lease.
        token: LeaseToken,
        /// Whether it was recorded.
        accepted: bool,
        /// Why it was refused.
        reason: String,
    },
    /// The answer to `SubmitChildren`: the children's ids and the callback's, or why not.
    ChildrenSubmitted {
        /// The request answered.
        request_id: u64,
        /// The ids, or the error.
        result: Result<(Vec<TaskId>, Option<TaskId>), RequestError>,
    },
    /// The answer to `QueryRecords`: the keys, or why not.
    RecordsQueried {
        /// The request answered.
        request_id: u64,
        /// The keys, or the error.
        result: Result<Vec<String>, RequestError>,
    },
}
