//! The worker runtime: a process that holds one stream to a coordinator, receives leases for its
//! queues and runs them, at most `concurrency` at once, never holding more than
//! `concurrency × prefetch_multiplier` leases.
//!
//! Invariants:
//! - All of a worker's state belongs to one event loop (`runtime`); task handlers run as tokio
//!   tasks in its `JoinSet` and report back only through their return value and the context.
//! - A result stays with the worker until the coordinator acknowledges it, across reconnects.

mod runtime;
mod task;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use task::{Registry, Retry, TaskContext, TaskError, TaskHandler};

use crate::domain::{QueueName, WorkerId};
use crate::grpc::client::Target;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator to connect to, and the credentials to show it.
    pub coordinator: Target,
    /// The worker's id, kept across reconnects.
    pub worker_id: WorkerId,
    /// The host it reports.
    pub hostname: String,
    /// The queues it consumes.
    pub queues: Vec<QueueName>,
    /// How many tasks it runs at once.
    pub concurrency: u32,
    /// Leases it may hold per unit of concurrency.
    pub prefetch_multiplier: u32,
    /// How long a stopping worker waits for running tasks.
    pub shutdown_timeout: Duration,
    /// The longest pause between reconnection attempts.
    pub reconnect_backoff_max: Duration,
    /// After this many tasks the worker drains and asks to be replaced by a fresh process.
    pub max_tasks_per_child: Option<u64>,
    /// A file to append one JSON line to per attempt started.
    pub execution_log: Option<std::path::PathBuf>,
}

impl WorkerOptions {
    /// The most leases the worker holds.
    pub fn capacity(&self) -> u32 {
        self.concurrency.saturating_mul(self.prefetch_multiplier)
    }
}

/// Why a worker stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refused the worker's hello: its configuration is wrong.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}

/// What a worker did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Attempts that ended, in any way.
    pub processed: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// The most leases held at once.
    pub peak_leases: usize,
    /// The worker stopped because it reached `max_tasks_per_child`: its process should be
    /// replaced by a fresh one.
    pub recycle: bool,
}

/// The default worker id, `host:pid`, like Celery's `celery@host`.
pub fn default_worker_id(hostname: &str) -> Result<WorkerId, crate::domain::ValidationError> {
    WorkerId::parse("--name", &format!("{hostname}:{}", std::process::id()))
}

/// The host name, cleaned for use in ids: no whitespace or control characters, at most 100.
pub fn hostname() -> String {
    let name: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .take(100)
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// Runs a worker until `shutdown` fires and it has drained, or the coordinator asks it to drain.
pub async fn run(
    options: WorkerOptions,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    tracing::info!(
        worker = %options.worker_id,
        coordinator = %options.coordinator.url,
        queues = ?options.queues.iter().map(QueueName::as_str).collect::<Vec<_>>(),
        concurrency = options.concurrency,
        prefetch_multiplier = options.prefetch_multiplier,
        tasks = ?registry,
        "worker starting"
    );
    runtime::Runtime::new(options, registry).run(shutdown).await
}
