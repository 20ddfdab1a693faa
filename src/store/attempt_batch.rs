//! What running attempts report, written together by `Store::record_attempts`: starts,
//! progress, records and ends, each fenced by its lease.

use chrono::{DateTime, Utc};

use crate::domain::{JsonText, LeaseToken, ProgressReport, RecordEntry, TaskId, WorkerId};

/// What becomes of a task whose attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// It succeeded with this result.
    Succeeded(JsonText),
    /// It failed and runs again at `run_at`.
    Retry {
        /// The failure's kind.
        kind: String,
        /// The failure's message.
        message: String,
        /// When to run again.
        run_at: DateTime<Utc>,
    },
    /// It stopped because its tree was paused: it waits again, parked with its tree, with no
    /// retry counted and no failure kept.
    Requeued {
        /// When it may run again (once its tree is resumed).
        run_at: DateTime<Utc>,
    },
    /// It failed for good.
    Failed {
        /// The failure's kind.
        kind: String,
        /// The failure's message.
        message: String,
    },
}

/// An attempt's end, fenced by its lease: it applies only if the lease is still current and held
/// by `worker`.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The lease the attempt ran under.
    pub token: LeaseToken,
    /// The worker reporting it.
    pub worker: WorkerId,
    /// When it started, if the worker said so; the start's own write may not have landed yet.
    pub started_at: Option<DateTime<Utc>>,
    /// What becomes of the task.
    pub resolution: Resolution,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// An attempt's start, fenced like a completion.
#[derive(Debug, Clone)]
pub struct Start {
    /// The lease.
    pub token: LeaseToken,
    /// The worker reporting it.
    pub worker: WorkerId,
    /// When it started.
    pub at: DateTime<Utc>,
    /// When the lease expires unless renewed: the hard limit plus a margin.
    pub lease_expires_at: DateTime<Utc>,
}

/// A running task's progress report, fenced by its lease.
#[derive(Debug, Clone)]
pub struct ProgressWrite {
    /// The lease.
    pub token: LeaseToken,
    /// The reporting worker.
    pub worker: WorkerId,
    /// The report.
    pub report: ProgressReport,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// Records a running task emitted, fenced by its lease.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    /// The lease.
    pub token: LeaseToken,
    /// The emitting worker.
    pub worker: WorkerId,
    /// The records.
    pub records: Vec<RecordEntry>,
    /// When they arrived.
    pub at: DateTime<Utc>,
}

/// What running attempts reported, to write together.
#[derive(Debug, Clone, Default)]
pub struct AttemptBatch {
    /// Attempts that started.
    pub starts: Vec<Start>,
    /// Progress reports.
    pub progress: Vec<ProgressWrite>,
    /// Records.
    pub records: Vec<RecordWrite>,
    /// Attempts that ended.
    pub completions: Vec<Completion>,
}

impl AttemptBatch {
    /// Every task the batch touches, for locking in one order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .starts
            .iter()
            .map(|start| start.token.task_id)
            .chain(self.progress.iter().map(|write| write.token.task_id))
            .chain(self.records.iter().map(|write| write.token.task_id))
            .chain(
                self.completions
                    .iter()
                    .map(|completion| completion.token.task_id),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The latest progress per lease: earlier reports in the same batch are superseded.
    pub fn latest_progress(&self) -> Vec<&ProgressWrite> {
        let mut latest: std::collections::HashMap<LeaseToken, &ProgressWrite> =
            std::collections::HashMap::new();
        for write in &self.progress {
            latest.insert(write.token, write);
        }
        let mut writes: Vec<&ProgressWrite> = latest.into_values().collect();
        writes.sort_by_key(|write| write.token.task_id);
        writes
    }
}
