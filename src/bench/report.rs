//! What a benchmark found: figures, a table for people, JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{ClusterPlan, ProcessMemory, moments, succeeded};
use crate::domain::TaskRecord;

/// The clocks behind the figures, as the report states them.
const CLOCKS: &str = "submit rate and round trips: the client's monotonic clock (round trip = \
    SubmitTask(s) sent -> long-polling GetTask answers with the finished task); pickup \
    latency and throughput: the moments the store records (created_at when the coordinator \
    accepted the task, started_at as the worker reported it, finished_at when the result arrived)";

/// A latency distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// How many measurements.
    pub samples: usize,
    /// Percentiles and the maximum.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl LatencySummary {
    /// Nearest-rank percentiles of `values`; `None` when there are none.
    pub fn of(mut values: Vec<Duration>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |percent: usize| {
            let index = (values.len() * percent).div_ceil(100).max(1) - 1;
            values[index.min(values.len() - 1)]
        };
        Some(Self {
            samples: values.len(),
            p50: rank(50),
            p95: rank(95),
            p99: rank(99),
            max: values[values.len() - 1],
        })
    }

    fn to_json(self) -> Value {
        json!({
            "samples": self.samples,
            "p50_ms": milliseconds(self.p50),
            "p95_ms": milliseconds(self.p95),
            "p99_ms": milliseconds(self.p99),
            "max_ms": milliseconds(self.max),
        })
    }
}

/// The figures of one phase.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// Tasks in the phase.
    pub tasks: usize,
    /// Tasks that did not succeed.
    pub failed: usize,
    /// Tasks per second accepted by `SubmitTasks` (client clock); load phase only.
    pub submit_rate: Option<f64>,
    /// Tasks per second from the first accepted to the last finished (store moments).
    pub throughput: Option<f64>,
    /// How long the phase took on the client's clock (the load phase: submitting).
    pub client_elapsed: Duration,
    /// Started − created (store moments).
    pub pickup: Option<LatencySummary>,
    /// Submit sent → finished task seen (client clock).
    pub round_trip: Option<LatencySummary>,
}

impl PhaseReport {
    /// Figures from finished tasks and measured round trips.
    pub fn from_measurements(
        tasks: usize,
        client_elapsed: Duration,
        records: &[TaskRecord],
        round_trips: Vec<Duration>,
    ) -> Self {
        let moments: Vec<_> = records.iter().filter_map(moments).collect();
        let pickups = moments
            .iter()
            .map(|(created, started, _)| (*started - *created).to_std().unwrap_or_default())
            .collect();
        let first_created = moments.iter().map(|(created, _, _)| *created).min();
        let last_finished = moments.iter().map(|(_, _, finished)| *finished).max();
        let throughput = match (first_created, last_finished) {
            (Some(first), Some(last)) => (last - first)
                .to_std()
                .ok()
                .filter(|span| !span.is_zero())
                .map(|span| records.len() as f64 / span.as_secs_f64()),
            _ => None,
        };
        Self {
            tasks,
            failed: records.iter().filter(|record| !succeeded(record)).count(),
            submit_rate: None,
            throughput,
            client_elapsed,
            pickup: LatencySummary::of(pickups),
            round_trip: LatencySummary::of(round_trips),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "tasks": self.tasks,
            "failed": self.failed,
            "submit_rate_per_second": self.submit_rate.map(round1),
            "throughput_per_second": self.throughput.map(round1),
            "client_elapsed_seconds": round3(self.client_elapsed.as_secs_f64()),
            "pickup_latency": self.pickup.map(LatencySummary::to_json),
            "round_trip_latency": self.round_trip.map(LatencySummary::to_json),
        })
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The coordinator's URL.
    pub coordinator: String,
    /// Whether the bench started the coordinator and workers itself.
    pub started_coordinator: bool,
    /// Workers connected to the coordinator when measuring began.
    pub workers: usize,
    /// What the bench started, when it did.
    pub plan: Option<ClusterPlan>,
    /// Tasks in the load phase.
    pub tasks: usize,
    /// Tasks per `SubmitTasks` call.
    pub batch_size: usize,
    /// Tasks pending underneath the measured ones at the start.
    pub preload: usize,
    /// Sequential single tasks; `None` when skipped.
    pub idle: Option<PhaseReport>,
    /// The load phase.
    pub load: PhaseReport,
    /// Peak memory of the processes the bench started; `None` for an external coordinator.
    pub memory: Option<Vec<ProcessMemory>>,
}

impl BenchReport {
    /// The report as JSON, for scripts.
    pub fn to_json(&self) -> Value {
        json!({
            "coordinator": self.coordinator,
            "started_coordinator": self.started_coordinator,
            "workers": self.workers,
            "concurrency": self.plan.as_ref().map(|plan| plan.concurrency),
            "prefetch_multiplier": self.plan.as_ref().map(|plan| plan.prefetch_multiplier),
            "tasks": self.tasks,
            "batch_size": self.batch_size,
            "preload": self.preload,
            "clocks": CLOCKS,
            "idle": self.idle.as_ref().map(PhaseReport::to_json),
            "load": self.load.to_json(),
            "peak_memory": match &self.memory {
                Some(memory) => Value::Array(
                    memory
                        .iter()
                        .map(|process| json!({
                            "process": process.role,
                            "pid": process.pid,
                            "vm_hwm_bytes": process.peak_bytes,
                        }))
                        .collect(),
                ),
                None => Value::String("unknown: the coordinator was not started by the bench".into()),
            },
        })
    }

    /// The report as a table, for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let setup = match &self.plan {
            Some(plan) => format!(
                "{} worker process(es) x concurrency {} (prefetch multiplier {}), coordinator and workers started by the bench",
                plan.workers, plan.concurrency, plan.prefetch_multiplier
            ),
            None => format!(
                "{} worker(s) connected to {}",
                self.workers, self.coordinator
            ),
        };
        let _ = writeln!(
            out,
            "celeritas bench: {} noop tasks in batches of {}; {}",
            self.tasks, self.batch_size, setup
        );
        if self.preload > 0 {
            let _ = writeln!(
                out,
                "backlog: {} tasks preloaded at priority 0 before the workers started; measured tasks at priority 1",
                self.preload
            );
        }
        let _ = writeln!(out);
        let rate = |value: Option<f64>| {
            value.map_or_else(|| "-".to_owned(), |value| format!("{value:.0} tasks/s"))
        };
        let _ = writeln!(
            out,
            "{:<24}{:>16}   client clock",
            "submit rate",
            rate(self.load.submit_rate)
        );
        let _ = writeln!(
            out,
            "{:<24}{:>16}   store moments: first created -> last finished",
            "end-to-end throughput",
            rate(self.load.throughput)
        );
        let failed = self.load.failed + self.idle.as_ref().map_or(0, |idle| idle.failed);
        if failed > 0 {
            let _ = writeln!(out, "{:<24}{:>16}", "tasks not succeeded", failed);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24}{:>9}{:>9}{:>9}{:>9}{:>9}   clock",
            "latency (ms)", "p50", "p95", "p99", "max", "samples"
        );
        let mut row = |label: &str, summary: Option<LatencySummary>, clock: &str| match summary {
            Some(summary) => {
                let _ = writeln!(
                    out,
                    "{:<24}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9}   {clock}",
                    label,
                    milliseconds(summary.p50),
                    milliseconds(summary.p95),
                    milliseconds(summary.p99),
                    milliseconds(summary.max),
                    summary.samples
                );
            }
            None => {
                let _ = writeln!(out, "{label:<24}{:>9}", "skipped");
            }
        };
        row(
            "idle pickup",
            self.idle.as_ref().and_then(|idle| idle.pickup),
            "store",
        );
        row(
            "idle round trip",
            self.idle.as_ref().and_then(|idle| idle.round_trip),
            "client",
        );
        row("load pickup", self.load.pickup, "store");
        row("load round trip", self.load.round_trip, "client");
        let _ = writeln!(out);
        match &self.memory {
            Some(memory) => {
                let peaks: Vec<String> = memory
                    .iter()
                    .map(|process| match process.peak_bytes {
                        Some(bytes) => format!("{} {:.1} MB", process.role, bytes as f64 / 1e6),
                        None => format!("{} unknown", process.role),
                    })
                    .collect();
                let _ = writeln!(out, "peak memory (VmHWM): {}", peaks.join(", "));
            }
            None => {
                let _ = writeln!(
                    out,
                    "peak memory: unknown (the coordinator and workers were not started by the bench)"
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "clocks: {CLOCKS}");
        out
    }
}

fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let summary = LatencySummary::of(values).unwrap();
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p95, Duration::from_millis(95));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        let one = LatencySummary::of(vec![Duration::from_millis(7)]).unwrap();
        assert_eq!(one.p50, Duration::from_millis(7));
        assert_eq!(one.p99, Duration::from_millis(7));
        assert!(LatencySummary::of(Vec::new()).is_none());
    }
}
