//! What inspection shows: workers, their queues and counters, pings, queue depths, and the tasks
//! workers hold.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::primitives::{duration_from_pb, duration_to_pb, timestamp_from_pb, timestamp_to_pb};
use super::tasks::task_to_pb;
use crate::domain::{
    KeyRate, PingResult, QueueDepth, QueueName, RateRule, TaskRecord, ValidationError, WorkerInfo,
    WorkerStats,
};
use crate::grpc::pb;

/// A worker's queues as inspection shows them.
pub fn worker_queues_to_pb(worker: &WorkerInfo) -> Vec<pb::QueueRef> {
    worker
        .queues
        .iter()
        .map(|(queue, priority)| pb::QueueRef {
            name: queue.to_string(),
            priority: u32::from(*priority),
        })
        .collect()
}

/// A worker's process and counters as inspection shows them.
pub fn worker_stats_to_pb(worker: &WorkerInfo, now: DateTime<Utc>) -> pb::WorkerStatsEntry {
    let stats = worker.stats.clone().unwrap_or_default();
    pb::WorkerStatsEntry {
        worker_id: worker.id.clone(),
        hostname: worker.hostname.clone(),
        pid: worker.pid,
        uptime: stats
            .started_at
            .and_then(|started| (now - started).to_std().ok())
            .map(duration_to_pb),
        concurrency: worker.concurrency,
        prefetch_multiplier: worker.prefetch_multiplier,
        processed: stats.processed.into_iter().collect(),
        failed: stats.failed.into_iter().collect(),
        memory_rss_bytes: stats.memory_rss_bytes,
        connected: worker.connected,
        coordinator_id: worker.coordinator_id.clone(),
        version: worker.version.clone(),
    }
}

/// A ping result as inspection shows it.
pub fn ping_to_pb(ping: PingResult) -> pb::WorkerPing {
    pb::WorkerPing {
        worker_id: ping.worker_id,
        hostname: ping.hostname,
        answered: ping.round_trip.is_some(),
        round_trip: ping.round_trip.map(duration_to_pb),
        coordinator_id: ping.coordinator_id,
        detail: ping.detail,
    }
}

/// A queue's depth as inspection shows it.
pub fn queue_depth_to_pb(depth: QueueDepth) -> pb::QueueDepth {
    pb::QueueDepth {
        name: depth.queue.to_string(),
        priority: u32::from(depth.priority),
        tasks_by_state: depth.by_state.into_iter().collect(),
        oldest_pending_age: depth.oldest_pending_age.map(duration_to_pb),
        consumers: depth.consumers,
        unserved: depth.unserved.into_iter().collect(),
        paused_at: depth.paused_at.map(timestamp_to_pb),
    }
}

/// Tasks grouped by the worker holding them, as inspection shows them.
pub fn tasks_by_worker_to_pb(tasks: Vec<TaskRecord>) -> Vec<pb::WorkerTasks> {
    let mut by_worker: std::collections::BTreeMap<String, Vec<pb::Task>> = Default::default();
    for task in tasks {
        let worker = task
            .worker_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        by_worker.entry(worker).or_default().push(task_to_pb(task));
    }
    by_worker
        .into_iter()
        .map(|(worker_id, tasks)| pb::WorkerTasks { worker_id, tasks })
        .collect()
}

/// A ping result as a client reads it.
pub fn ping_from_pb(ping: pb::WorkerPing) -> Result<PingResult, ValidationError> {
    Ok(PingResult {
        worker_id: ping.worker_id,
        hostname: ping.hostname,
        coordinator_id: ping.coordinator_id,
        round_trip: ping
            .round_trip
            .map(|round_trip| duration_from_pb("round_trip", round_trip))
            .transpose()?,
        detail: ping.detail,
    })
}

/// A queue depth as a client reads it.
pub fn queue_depth_from_pb(depth: pb::QueueDepth) -> Result<QueueDepth, ValidationError> {
    Ok(QueueDepth {
        queue: QueueName::parse("queues.name", &depth.name)?,
        priority: u8::try_from(depth.priority).unwrap_or(u8::MAX),
        by_state: depth.tasks_by_state.into_iter().collect(),
        oldest_pending_age: depth
            .oldest_pending_age
            .map(|age| duration_from_pb("oldest_pending_age", age))
            .transpose()?,
        consumers: depth.consumers,
        unserved: depth.unserved.into_iter().collect(),
        paused_at: depth
            .paused_at
            .map(|at| timestamp_from_pb("paused_at", at))
            .transpose()?,
    })
}

/// Worker statistics as a client reads them (queues and task names are left empty).
pub fn worker_stats_from_pb(entry: pb::WorkerStatsEntry, now: DateTime<Utc>) -> WorkerInfo {
    let uptime = entry
        .uptime
        .and_then(|uptime| Duration::try_from(uptime).ok());
    WorkerInfo {
        id: entry.worker_id,
        hostname: entry.hostname,
        pid: entry.pid,
        queues: Vec::new(),
        task_names: Vec::new(),
        concurrency: entry.concurrency,
        prefetch_multiplier: entry.prefetch_multiplier,
        version: entry.version,
        coordinator_id: entry.coordinator_id,
        connected_at: now,
        last_seen_at: None,
        stats: Some(WorkerStats {
            processed: entry.processed.into_iter().collect(),
            failed: entry.failed.into_iter().collect(),
            memory_rss_bytes: entry.memory_rss_bytes,
            started_at: uptime.and_then(|uptime| {
                chrono::Duration::from_std(uptime)
                    .ok()
                    .and_then(|uptime| now.checked_sub_signed(uptime))
            }),
        }),
        connected: entry.connected,
    }
}

/// A rate-limited key as inspection shows it.
pub fn key_rate_to_pb(rate: KeyRate) -> pb::KeyRate {
    pb::KeyRate {
        key: rate.key,
        configured_per_second: rate.configured,
        effective_per_second: rate.effective,
        tokens: rate.tokens,
        slowed_at: rate.slowed_at.map(timestamp_to_pb),
    }
}

pub fn rate_rule_to_pb(rule: RateRule) -> pb::RateLimitRule {
    pb::RateLimitRule {
        pattern: rule.pattern,
        per_second: rule.per_second,
        set_through_api: rule.set_through_api,
        set_at: rule.set_at.map(timestamp_to_pb),
        set_by: rule.set_by.unwrap_or_default(),
    }
}

/// A limit in force as a client reads it.
pub fn rate_rule_from_pb(rule: pb::RateLimitRule) -> Result<RateRule, ValidationError> {
    Ok(RateRule {
        pattern: rule.pattern,
        per_second: rule.per_second,
        set_through_api: rule.set_through_api,
        set_at: rule
            .set_at
            .map(|at| timestamp_from_pb("set_at", at))
            .transpose()?,
        set_by: Some(rule.set_by).filter(|by| !by.is_empty()),
    })
}

/// A rate-limited key as a client reads it.
pub fn key_rate_from_pb(rate: pb::KeyRate) -> Result<KeyRate, ValidationError> {
    Ok(KeyRate {
        key: rate.key,
        configured: rate.configured_per_second,
        effective: rate.effective_per_second,
        tokens: rate.tokens,
        slowed_at: rate
            .slowed_at
            .map(|at| timestamp_from_pb("slowed_at", at))
            .transpose()?,
    })
}
