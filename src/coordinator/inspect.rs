//! Inspection, as `celery inspect` answers it. Worker-level answers come from the store, so any
//! coordinator answers for every worker; pings are round trips over this coordinator's streams.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::sessions::Session;
use super::{Coordinator, CoordinatorError};
use crate::domain::{
    ControlCommand, PingResult, QueueDepth, QueueName, TaskQuery, TaskRecord, TaskState,
    ValidationError, WorkerInfo,
};
use crate::store::TaskFilter;

/// The most tasks one inspection lists.
pub const MAX_LISTED: u32 = 10_000;

/// The most tasks one answer lists with their args and results.
pub const MAX_LISTED_WITH_PAYLOADS: u32 = 100;

/// Workers not seen for this long are left out of `workers` (Inspect's stats, active queues,
/// registered).
const FORGET_WORKERS_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a ping waits.
pub const MAX_PING_WAIT: Duration = Duration::from_secs(30);

impl Coordinator {
    /// The tasks `query` asks for, longest quiet first; at most `MAX_LISTED_WITH_PAYLOADS`
    /// when their payloads are asked for.
    pub async fn list_tasks(&self, query: TaskQuery) -> Result<Vec<TaskRecord>, CoordinatorError> {
        let TaskQuery {
            root,
            names,
            states,
            quiet_for,
            limit,
            with_payloads,
        } = query;
        let states = if states.is_empty() {
            TaskState::ALL
                .into_iter()
                .filter(|state| !state.is_terminal())
                .collect()
        } else {
            states
        };
        let quiet_since = quiet_for
            .map(|quiet| {
                chrono::Duration::from_std(quiet)
                    .ok()
                    .and_then(|quiet| self.clock.now().checked_sub_signed(quiet))
                    .ok_or_else(|| ValidationError::new("quiet_for", "is too long"))
            })
            .transpose()?;
        let filter = TaskFilter {
            with_payloads,
            root,
            names,
            states,
            quiet_since,
            limit: if (1..=MAX_LISTED).contains(&limit) {
                if with_payloads {
                    limit.min(MAX_LISTED_WITH_PAYLOADS)
                } else {
                    limit
                }
            } else {
                return Err(
                    ValidationError::new("limit", format!("must be 1 to {}", MAX_LISTED)).into(),
                );
            },
            ..TaskFilter::default()
        };
        Ok(self.store.list_tasks(&filter).await?)
    }

    /// Every known worker; `connected` for those connected here or heard from recently by any
    /// coordinator; the counters of those connected here are the latest.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, CoordinatorError> {
        let now = self.clock.now();
        let liveness = self.settings.heartbeat_interval * super::worker_stream::MISSED_HEARTBEATS;
        let sessions = self.sessions.snapshot();
        let mut workers = self.store.workers().await?;
        // A worker gone for a day is history, not part of the fleet.
        workers.retain(|worker| {
            let seen = worker
                .last_seen_at
                .unwrap_or(worker.connected_at)
                .max(worker.connected_at);
            (now - seen).to_std().unwrap_or(Duration::ZERO) < FORGET_WORKERS_AFTER
        });
        for worker in &mut workers {
            let local = sessions
                .iter()
                .find(|session| session.worker().as_str() == worker.id);
            worker.connected = local.is_some()
                || worker.last_seen_at.is_some_and(|seen| {
                    (now - seen).to_std().unwrap_or(Duration::ZERO) < liveness
                        && worker.coordinator_id != self.id
                });
            if let Some(stats) = local.and_then(|session| session.stats()) {
                worker.stats = Some(stats);
            }
            // A stopped worker has no uptime; its last counters stay.
            if !worker.connected
                && let Some(stats) = &mut worker.stats
            {
                stats.started_at = None;
            }
            for (queue, priority) in &mut worker.queues {
                *priority = self.routing.queue_priority(queue).unwrap_or(0);
            }
            worker
                .queues
                .sort_by_key(|(_, priority)| std::cmp::Reverse(*priority));
        }
        Ok(workers)
    }

    /// Pings every connected worker: a round trip for those connected here, a note for those
    /// connected to another coordinator.
    pub async fn ping_workers(&self, wait: Duration) -> Result<Vec<PingResult>, CoordinatorError> {
        let mut results = self
            .control_workers(self.sessions.snapshot(), ControlCommand::Ping, wait)
            .await;
        for result in &mut results {
            if result.round_trip.is_some() {
                // The worker's "pong" says nothing the round trip does not.
                result.detail.clear();
            }
        }
        let here: HashSet<String> = results
            .iter()
            .map(|result| result.worker_id.clone())
            .collect();
        for worker in self.workers().await? {
            if worker.connected && !here.contains(&worker.id) {
                results.push(PingResult {
                    detail: format!("connected to coordinator {}", worker.coordinator_id),
                    worker_id: worker.id,
                    hostname: worker.hostname,
                    coordinator_id: worker.coordinator_id,
                    round_trip: None,
                });
            }
        }
        Ok(results)
    }

    /// Tells every worker connected here that consumes `queue` (every one, without a queue) to
    /// close its idle pooled connections; each worker's answer, or why there is none.
    pub async fn close_idle_connections(
        &self,
        queue: Option<&QueueName>,
        wait: Duration,
    ) -> Result<Vec<PingResult>, CoordinatorError> {
        if let Some(queue) = queue {
            self.queue_priority("queue", queue)?;
        }
        let sessions = self
            .sessions
            .snapshot()
            .into_iter()
            .filter(|session| queue.is_none_or(|queue| session.hello.queues.contains(queue)))
            .collect();
        Ok(self
            .control_workers(sessions, ControlCommand::CloseIdleConnections, wait)
            .await)
    }

    /// Sends `command` to each of `sessions` at once and waits up to `wait` (at most 30 s) for
    /// the answers: each worker's round trip and reply, or why there is none.
    async fn control_workers(
        &self,
        sessions: Vec<Arc<Session>>,
        command: ControlCommand,
        wait: Duration,
    ) -> Vec<PingResult> {
        let wait = wait.min(MAX_PING_WAIT);
        let answers = futures::future::join_all(
            sessions
                .iter()
                .map(|session| session.control(command, wait)),
        )
        .await;
        sessions
            .iter()
            .zip(answers)
            .map(|(session, answer)| PingResult {
                worker_id: session.worker().to_string(),
                hostname: session.hello.hostname.clone(),
                coordinator_id: self.id.clone(),
                round_trip: answer.as_ref().map(|(round_trip, _)| *round_trip),
                detail: match answer {
                    Some((_, detail)) => detail,
                    None => format!("no answer within {}", humantime::format_duration(wait)),
                },
            })
            .collect()
    }

    /// Tasks in a state, oldest first, at most `limit` (and at most 10,000).
    pub async fn tasks_in_state(
        &self,
        state: TaskState,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, CoordinatorError> {
        Ok(self
            .store
            .tasks_in_state(state, limit.clamp(1, MAX_LISTED))
            .await?)
    }

    /// Each configured queue's unfinished tasks by state, oldest pending age, consumers here,
    /// the pending tasks no connected worker of the queue can run, and whether it is paused.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, CoordinatorError> {
        let counts = self.store.queue_counts().await?;
        let paused = self.store.paused_queues().await?;
        let now = self.clock.now();
        let sessions = self.sessions.snapshot();
        let connected: Vec<WorkerInfo> = self
            .workers()
            .await?
            .into_iter()
            .filter(|worker| worker.connected)
            .collect();
        Ok(self
            .routing
            .queues()
            .into_iter()
            .map(|(queue, priority)| {
                let by_state: BTreeMap<String, u64> = counts
                    .by_state
                    .iter()
                    .filter(|(name, _, _)| name == queue.as_str())
                    .map(|(_, state, count)| (state.clone(), *count))
                    .collect();
                let oldest_pending_age = counts
                    .oldest_pending(queue.as_str())
                    .map(|created| (now - created).to_std().unwrap_or(Duration::ZERO));
                let unserved = counts
                    .pending_by_name
                    .iter()
                    .filter(|(queue_name, task_name, _, _)| {
                        queue_name == queue.as_str()
                            && !connected.iter().any(|worker| {
                                worker.queues.iter().any(|(consumed, _)| *consumed == queue)
                                    && worker.task_names.contains(task_name)
                            })
                    })
                    .map(|(_, task_name, count, _)| (task_name.clone(), *count))
                    .collect();
                let consumers = sessions
                    .iter()
                    .filter(|session| session.queues.iter().any(|(name, _)| *name == queue))
                    .count() as u32;
                let paused_at = paused
                    .iter()
                    .find(|paused| paused.queue == queue)
                    .map(|paused| paused.paused_at);
                QueueDepth {
                    queue,
                    priority,
                    by_state,
                    oldest_pending_age,
                    consumers,
                    unserved,
                    paused_at,
                }
            })
            .collect())
    }
}
