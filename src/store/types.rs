//! The values the `Store` trait takes and answers: claims and what they lease, registrations,
//! adoptions, reaps, cancellations, filters and counts.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    Lease, LeaseToken, QueueName, RateLimits, TaskId, TaskName, TaskState, TimeRange, WorkerId,
};

/// A request for leases for one worker.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The worker the leases go to.
    pub worker: WorkerId,
    /// The worker's stream the leases travel on; only that session may release them.
    pub session: Uuid,
    /// Its queues with their priorities; higher priorities are served first.
    pub queues: Vec<(QueueName, u8)>,
    /// The task names it registered: only tasks of these names are leased to it, so a task no
    /// worker knows waits instead of failing.
    pub names: Vec<TaskName>,
    /// The most leases to hand out.
    pub limit: u32,
    /// The claim's moment; tasks expired by then are marked expired instead of leased.
    pub now: DateTime<Utc>,
    /// When the leases expire unless renewed.
    pub lease_expires_at: DateTime<Utc>,
    /// The limits rate-limited tasks are leased within; with none, such tasks are not read.
    pub rate_limits: std::sync::Arc<RateLimits>,
}

/// The outcome of a claim.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The new leases, in service order.
    pub tasks: Vec<Lease>,
    /// Tasks that were due but had expired; they will never run.
    pub expired: u32,
    /// When rate-limited tasks this claim passed over because their keys' buckets were empty
    /// may be leased: the earliest moment one of those buckets has tokens again.
    pub limited_until: Option<DateTime<Utc>>,
    /// Whether governed tasks wait anywhere, when the plain claim learnt it on the way (so the
    /// governed claim needs no probe of its own).
    pub governed_waiting: Option<bool>,
}

impl Claimed {
    /// How many pending tasks the claim consumed; fewer than asked means the queues ran dry.
    pub fn consumed(&self) -> u32 {
        self.tasks.len() as u32 + self.expired
    }
}

/// What the coordinator records about a connected worker.
#[derive(Debug, Clone)]
pub struct WorkerRegistration {
    /// Its id.
    pub id: WorkerId,
    /// Its host.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// Its queues.
    pub queues: Vec<QueueName>,
    /// The task names it runs.
    pub task_names: Vec<TaskName>,
    /// How many tasks it runs at once.
    pub concurrency: u32,
    /// Its prefetch multiplier.
    pub prefetch_multiplier: u32,
    /// Its software version.
    pub version: String,
    /// The coordinator it is connected to.
    pub coordinator_id: String,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
}

/// The outcome of adopting a reconnecting worker's leases.
#[derive(Debug, Clone, Default)]
pub struct Adopted {
    /// The leases the worker keeps.
    pub kept: Vec<Lease>,
    /// Leases the store showed the worker holding that it no longer has; now pending again
    /// (or failed, for a lost attempt out of retries).
    pub released: u64,
    /// Of those, running attempts counted as lost.
    pub lost: u64,
}

/// A rate key's bucket as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RateBucket {
    /// The key.
    pub key: String,
    /// Tokens (thousandths) as of `updated_at`.
    pub tokens: i64,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
    /// The share of its rate it ran at when last slowed (thousandths).
    pub factor: i64,
    /// When pushback last slowed it.
    pub slowed_at: Option<DateTime<Utc>>,
}

/// Where a parent puts its children: its tree, and its fairness group, which they inherit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parentage {
    /// The root of the parent's tree.
    pub root_id: TaskId,
    /// The parent's group.
    pub group_key: Option<crate::domain::GroupKey>,
}

/// How far a paused tree's waiting tasks are parked: a thousand years of 365.25 days, added to
/// their run time while the tree is paused and taken off when it resumes.
pub const PARKED_FOR: chrono::TimeDelta = chrono::TimeDelta::days(365_250);

/// The message of the failure a running attempt gets when its worker comes back without it.
pub const LOST_ON_RECONNECT: &str =
    "the worker reconnected without this running attempt (it restarted or lost the task)";

/// Which tasks `list_tasks` answers and `count_tasks` counts; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this tree.
    pub root: Option<TaskId>,
    /// Only these names; empty means any.
    pub names: Vec<TaskName>,
    /// Only these states; at least one.
    pub states: Vec<TaskState>,
    /// Only these queues; empty means any.
    pub queues: Vec<QueueName>,
    /// Only tasks whose last failure is of one of these kinds; empty means any.
    pub error_kinds: Vec<String>,
    /// Only tasks submitted in this range.
    pub created: TimeRange,
    /// Only tasks finished in this range.
    pub finished: TimeRange,
    /// Only tasks whose last sign of life (latest of progress, start and submission) is no later
    /// than this.
    pub quiet_since: Option<DateTime<Utc>>,
    /// The most tasks to answer.
    pub limit: u32,
    /// Whether to read each task's args and result; without, they are `{}` and none.
    pub with_payloads: bool,
}

/// How an attempt is ended from outside its worker (`Store::interrupt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// Put the task back on its queue (while it has retries left) instead of failing it.
    pub requeue: bool,
    /// The failure's kind.
    pub kind: String,
    /// The failure's message.
    pub message: String,
}

/// What a reaping pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Tasks whose lease expired and that became pending again.
    pub requeued: u64,
    /// Tasks whose lease expired and that failed (time limit, or no retries left).
    pub failed: u64,
    /// Tasks that expired before they started.
    pub expired: u64,
}

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The task's state before; a terminal state means the task itself did not change.
    pub previous: TaskState,
    /// The current leases of the cancelled tasks that were leased or running, so their workers
    /// can be told.
    pub leases: Vec<LeaseToken>,
    /// How many tasks were cancelled, descendants included.
    pub cancelled: u64,
}

/// Unfinished tasks by queue and state, and pending ones by queue and name.
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    /// `(queue, state) → count`.
    pub by_state: Vec<(String, String, u64)>,
    /// `(queue, task name) → (pending count, oldest pending created_at)`.
    pub pending_by_name: Vec<(String, String, u64, DateTime<Utc>)>,
}

impl QueueCounts {
    /// When the oldest pending task of `queue` was created.
    pub fn oldest_pending(&self, queue: &str) -> Option<DateTime<Utc>> {
        self.pending_by_name
            .iter()
            .filter(|(queue_name, _, _, _)| queue_name == queue)
            .map(|(_, _, _, oldest)| *oldest)
            .min()
    }
}

/// What updating a tree did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUpdate {
    /// Events written.
    pub events: u64,
    /// Whether the tree finished.
    pub finished: bool,
    /// Callbacks made pending.
    pub callbacks_released: u64,
}

/// Which records to list.
#[derive(Debug, Clone)]
pub struct RecordQuery {
    /// The task whose records (or, with `whole_tree`, whose tree's records) to list.
    pub task: TaskId,
    /// Records of the whole tree rooted at `task`.
    pub whole_tree: bool,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// After this position.
    pub after: i64,
    /// At most this many.
    pub limit: u32,
}

/// The result of moving due scheduled tasks to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// How many tasks became pending.
    pub count: u64,
    /// When the next scheduled task is due, if any is left.
    pub next_due: Option<DateTime<Utc>>,
}
