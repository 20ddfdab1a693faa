//! The client's inspect calls: what `celery inspect` answers, and closing idle connections.

use std::time::Duration;

use super::{ClientError, CoordinatorClient};
use crate::domain::{
    PingResult, QueueDepth, QueueName, RateLimitsReport, Schedule, TaskRecord, WorkerInfo,
};
use crate::grpc::convert::{
    duration_to_pb, key_rate_from_pb, ping_from_pb, queue_depth_from_pb, rate_rule_from_pb,
    schedule_from_stored_pb, task_from_pb, worker_stats_from_pb,
};
use crate::grpc::pb;

impl CoordinatorClient {
    /// Tells the workers consuming `queue` (all, without one) to close their idle pooled
    /// connections; their answers.
    pub async fn close_idle_connections(
        &mut self,
        queue: Option<&QueueName>,
        timeout: Duration,
    ) -> Result<Vec<PingResult>, ClientError> {
        let response = self
            .inspect
            .close_idle_connections(pb::CloseIdleConnectionsRequest {
                queue: queue.map(ToString::to_string).unwrap_or_default(),
                timeout: Some(duration_to_pb(timeout)),
            })
            .await?
            .into_inner();
        Ok(response
            .workers
            .into_iter()
            .map(ping_from_pb)
            .collect::<Result<_, _>>()?)
    }

    /// A round trip to every connected worker.
    pub async fn ping(&mut self, timeout: Duration) -> Result<Vec<PingResult>, ClientError> {
        let response = self
            .inspect
            .ping(pb::PingRequest {
                timeout: Some(duration_to_pb(timeout)),
            })
            .await?
            .into_inner();
        Ok(response
            .workers
            .into_iter()
            .map(ping_from_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Running (`running = true`) or reserved tasks.
    pub async fn held_tasks(&mut self, running: bool) -> Result<Vec<TaskRecord>, ClientError> {
        let workers = if running {
            self.inspect
                .active(pb::ActiveRequest::default())
                .await?
                .into_inner()
                .workers
        } else {
            self.inspect
                .reserved(pb::ReservedRequest::default())
                .await?
                .into_inner()
                .workers
        };
        Ok(workers
            .into_iter()
            .flat_map(|worker| worker.tasks)
            .map(task_from_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Scheduled tasks and the periodic schedules.
    pub async fn scheduled(
        &mut self,
        limit: u32,
    ) -> Result<(Vec<TaskRecord>, Vec<Schedule>), ClientError> {
        let response = self
            .inspect
            .scheduled(pb::ScheduledRequest { limit })
            .await?
            .into_inner();
        let tasks = response
            .tasks
            .into_iter()
            .map(task_from_pb)
            .collect::<Result<_, _>>()?;
        let schedules = response
            .schedules
            .into_iter()
            .map(schedule_from_stored_pb)
            .collect::<Result<_, _>>()?;
        Ok((tasks, schedules))
    }

    /// Every known worker with its queues, task names and counters.
    pub async fn workers(&mut self) -> Result<Vec<WorkerInfo>, ClientError> {
        let now = chrono::Utc::now();
        let stats = self.inspect.stats(pb::StatsRequest {}).await?.into_inner();
        let queues = self
            .inspect
            .active_queues(pb::ActiveQueuesRequest {})
            .await?
            .into_inner();
        let registered = self
            .inspect
            .registered(pb::RegisteredRequest {})
            .await?
            .into_inner();
        let mut workers: Vec<WorkerInfo> = stats
            .workers
            .into_iter()
            .map(|entry| worker_stats_from_pb(entry, now))
            .collect();
        for worker in &mut workers {
            if let Some(entry) = queues
                .workers
                .iter()
                .find(|entry| entry.worker_id == worker.id)
            {
                worker.queues = entry
                    .queues
                    .iter()
                    .filter_map(|queue| {
                        Some((
                            QueueName::parse("queue", &queue.name).ok()?,
                            u8::try_from(queue.priority).unwrap_or(u8::MAX),
                        ))
                    })
                    .collect();
            }
            if let Some(entry) = registered
                .workers
                .iter()
                .find(|entry| entry.worker_id == worker.id)
            {
                worker.task_names = entry.task_names.clone();
            }
        }
        Ok(workers)
    }

    /// Queue depths.
    pub async fn queues(&mut self) -> Result<Vec<QueueDepth>, ClientError> {
        let response = self
            .inspect
            .queues(pb::QueuesRequest {})
            .await?
            .into_inner();
        Ok(response
            .queues
            .into_iter()
            .map(queue_depth_from_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Each rate-limited key used so far, with the rate it runs at now, and the limits in
    /// force.
    pub async fn rate_limits(&mut self) -> Result<RateLimitsReport, ClientError> {
        let response = self
            .inspect
            .rate_limits(pb::RateLimitsRequest {})
            .await?
            .into_inner();
        Ok(RateLimitsReport {
            keys: response
                .keys
                .into_iter()
                .map(key_rate_from_pb)
                .collect::<Result<_, _>>()?,
            limits: response
                .limits
                .into_iter()
                .map(rate_rule_from_pb)
                .collect::<Result<_, _>>()?,
        })
    }
}
