//! What inspection answers, in domain terms.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{QueueName, WorkerStats};

/// A worker as the store and this coordinator know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// Its host.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// Its queues, with their priorities (highest first).
    pub queues: Vec<(QueueName, u8)>,
    /// The task names it runs.
    pub task_names: Vec<String>,
    /// Tasks it runs at once.
    pub concurrency: u32,
    /// Its prefetch multiplier.
    pub prefetch_multiplier: u32,
    /// Its software version.
    pub version: String,
    /// The coordinator it is (or was last) connected to.
    pub coordinator_id: String,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
    /// When it was last heard from.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Its latest counters.
    pub stats: Option<WorkerStats>,
    /// Whether it is connected now.
    pub connected: bool,
}

/// One worker's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingResult {
    /// The worker.
    pub worker_id: String,
    /// Its host.
    pub hostname: String,
    /// The coordinator it is connected to.
    pub coordinator_id: String,
    /// The round trip, when it answered.
    pub round_trip: Option<Duration>,
    /// Why there is none.
    pub detail: String,
}

/// A queue's unfinished work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: u8,
    /// Unfinished tasks by state name.
    pub by_state: BTreeMap<String, u64>,
    /// How long the oldest pending task has waited.
    pub oldest_pending_age: Option<Duration>,
    /// Workers connected to this coordinator that consume it.
    pub consumers: u32,
    /// Pending tasks, by name, that no connected worker consuming the queue registered: they
    /// wait for one that does.
    pub unserved: BTreeMap<String, u64>,
    /// Since when the queue is paused, if it is: its tasks are not leased until resumed.
    pub paused_at: Option<DateTime<Utc>>,
}

/// A limited key as inspection shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRate {
    /// The key.
    pub key: String,
    /// Its configured rate, per second.
    pub configured: f64,
    /// The rate it runs at now, per second (lower after pushback).
    pub effective: f64,
    /// Tokens left in its bucket now (negative after a costly lease).
    pub tokens: f64,
    /// When pushback last slowed it.
    pub slowed_at: Option<DateTime<Utc>>,
}

/// A rate limit in force, as inspection shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    /// Its key or pattern.
    pub pattern: String,
    /// Its rate, per second.
    pub per_second: f64,
    /// Set through the API (over a configured limit of the pattern, if any).
    pub set_through_api: bool,
    /// When it was set through the API.
    pub set_at: Option<DateTime<Utc>>,
    /// Who set it, when known.
    pub set_by: Option<String>,
}

/// What `Inspect.RateLimits` answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimitsReport {
    /// Each limited key used so far, with the rate it runs at now.
    pub keys: Vec<KeyRate>,
    /// Every limit in force, the first match first.
    pub limits: Vec<RateRule>,
}
