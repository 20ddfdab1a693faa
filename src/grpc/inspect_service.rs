//! `celeritas.v1.InspectService`: thin handlers over the coordinator's inspection.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert::{
    key_rate_to_pb, ping_to_pb, queue_depth_to_pb, rate_rule_to_pb, task_to_pb,
    tasks_by_worker_to_pb, worker_queues_to_pb, worker_stats_to_pb,
};
use super::pb;
use super::status::invalid;
use crate::coordinator::Coordinator;
use crate::domain::{QueueName, TaskQuery, TaskState, ValidationError};

/// How long a ping waits unless told otherwise.
const DEFAULT_PING_WAIT: Duration = Duration::from_secs(2);
/// How many scheduled tasks are listed unless told otherwise.
const DEFAULT_SCHEDULED_LIMIT: u32 = 100;
/// Running or reserved tasks listed when a request names no limit.
const DEFAULT_WORKERS_TASKS_LIMIT: u32 = 1_000;

/// A request's `timeout`: how long to wait for workers' answers.
fn wait_from_timeout(timeout: Option<prost_types::Duration>) -> Result<Duration, Status> {
    match timeout {
        None => Ok(DEFAULT_PING_WAIT),
        Some(timeout) => Duration::try_from(timeout)
            .ok()
            .filter(|timeout| !timeout.is_zero())
            .ok_or_else(|| invalid(ValidationError::new("timeout", "must be positive"))),
    }
}

/// The inspection API of one coordinator.
pub struct InspectApi {
    coordinator: Arc<Coordinator>,
}

impl InspectApi {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }

    /// Tasks held by workers in `state`, paged by `limit` (0: the default; at most 10,000,
    /// or 100 with args), without their args unless asked: 10,000 running batches of 100 KB
    /// made one answer of a gigabyte.
    async fn workers_tasks(
        &self,
        state: TaskState,
        limit: u32,
        include_args: bool,
    ) -> Result<Vec<crate::domain::TaskRecord>, Status> {
        let limit = match limit {
            0 => DEFAULT_WORKERS_TASKS_LIMIT,
            limit => limit.min(crate::coordinator::MAX_LISTED),
        };
        Ok(self
            .coordinator
            .list_tasks(TaskQuery {
                states: vec![state],
                limit,
                with_payloads: include_args,
                ..TaskQuery::default()
            })
            .await?)
    }
}

#[tonic::async_trait]
impl pb::inspect_service_server::InspectService for InspectApi {
    #[tracing::instrument(skip_all, fields(rpc = "Ping"))]
    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let wait = wait_from_timeout(request.into_inner().timeout)?;
        let pings = self.coordinator.ping_workers(wait).await?;
        Ok(Response::new(pb::PingResponse {
            workers: pings.into_iter().map(ping_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CloseIdleConnections"))]
    async fn close_idle_connections(
        &self,
        request: Request<pb::CloseIdleConnectionsRequest>,
    ) -> Result<Response<pb::CloseIdleConnectionsResponse>, Status> {
        let request = request.into_inner();
        let queue = (!request.queue.is_empty())
            .then(|| QueueName::parse("queue", &request.queue))
            .transpose()
            .map_err(invalid)?;
        let wait = wait_from_timeout(request.timeout)?;
        let answers = self
            .coordinator
            .close_idle_connections(queue.as_ref(), wait)
            .await?;
        Ok(Response::new(pb::CloseIdleConnectionsResponse {
            workers: answers.into_iter().map(ping_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Active"))]
    async fn active(
        &self,
        request: Request<pb::ActiveRequest>,
    ) -> Result<Response<pb::ActiveResponse>, Status> {
        let request = request.into_inner();
        let tasks = self
            .workers_tasks(TaskState::Running, request.limit, request.include_args)
            .await?;
        Ok(Response::new(pb::ActiveResponse {
            workers: tasks_by_worker_to_pb(tasks),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Reserved"))]
    async fn reserved(
        &self,
        request: Request<pb::ReservedRequest>,
    ) -> Result<Response<pb::ReservedResponse>, Status> {
        let request = request.into_inner();
        let tasks = self
            .workers_tasks(TaskState::Leased, request.limit, request.include_args)
            .await?;
        Ok(Response::new(pb::ReservedResponse {
            workers: tasks_by_worker_to_pb(tasks),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Scheduled"))]
    async fn scheduled(
        &self,
        request: Request<pb::ScheduledRequest>,
    ) -> Result<Response<pb::ScheduledResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_SCHEDULED_LIMIT,
            limit => limit,
        };
        let tasks = self
            .coordinator
            .tasks_in_state(TaskState::Scheduled, limit)
            .await?;
        let schedules = self.coordinator.schedules().await?;
        Ok(Response::new(pb::ScheduledResponse {
            tasks: tasks.into_iter().map(task_to_pb).collect(),
            schedules: schedules
                .into_iter()
                .map(super::convert::schedule_to_pb)
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Stats"))]
    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let now = chrono::Utc::now();
        let workers = self.coordinator.workers().await?;
        Ok(Response::new(pb::StatsResponse {
            workers: workers
                .iter()
                .map(|worker| worker_stats_to_pb(worker, now))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ActiveQueues"))]
    async fn active_queues(
        &self,
        _request: Request<pb::ActiveQueuesRequest>,
    ) -> Result<Response<pb::ActiveQueuesResponse>, Status> {
        let workers = self.coordinator.workers().await?;
        Ok(Response::new(pb::ActiveQueuesResponse {
            workers: workers
                .iter()
                .map(|worker| pb::WorkerQueues {
                    worker_id: worker.id.clone(),
                    queues: worker_queues_to_pb(worker),
                    connected: worker.connected,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Registered"))]
    async fn registered(
        &self,
        _request: Request<pb::RegisteredRequest>,
    ) -> Result<Response<pb::RegisteredResponse>, Status> {
        let workers = self.coordinator.workers().await?;
        Ok(Response::new(pb::RegisteredResponse {
            workers: workers
                .into_iter()
                .map(|worker| pb::WorkerTaskNames {
                    worker_id: worker.id,
                    task_names: worker.task_names,
                    connected: worker.connected,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RateLimits"))]
    async fn rate_limits(
        &self,
        _request: Request<pb::RateLimitsRequest>,
    ) -> Result<Response<pb::RateLimitsResponse>, Status> {
        let keys = self.coordinator.key_rates().await?;
        Ok(Response::new(pb::RateLimitsResponse {
            keys: keys.into_iter().map(key_rate_to_pb).collect(),
            limits: self
                .coordinator
                .rate_rules()
                .into_iter()
                .map(rate_rule_to_pb)
                .collect(),
        }))
    }

    async fn queues(
        &self,
        _request: Request<pb::QueuesRequest>,
    ) -> Result<Response<pb::QueuesResponse>, Status> {
        let depths = self.coordinator.queue_depths().await?;
        Ok(Response::new(pb::QueuesResponse {
            queues: depths.into_iter().map(queue_depth_to_pb).collect(),
        }))
    }
}
