//! A client of a coordinator's task API, in domain terms, for the CLI, tests and benchmarks.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::convert::{
    duration_to_pb, ping_from_pb, queue_depth_from_pb, schedule_from_stored_pb, schedule_to_pb,
    state_to_pb, task_from_pb, task_spec_to_pb, tree_event_from_pb, worker_stats_from_pb,
};
use super::pb;
use super::pb::inspect_service_client::InspectServiceClient;
use super::pb::schedule_service_client::ScheduleServiceClient;
use super::pb::task_service_client::TaskServiceClient;
use super::status::kind_of;
use crate::domain::{
    ErrorKind, Inserted, PingResult, QueueDepth, QueueName, Schedule, TaskId, TaskQuery,
    TaskRecord, TaskSpec, TreeEvent, ValidationError, WorkerInfo,
};

/// Why a call to a coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator's address is not a URL.
    #[error("{url:?} is not a coordinator URL: {reason}")]
    BadUrl {
        /// The address given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable {
        /// The address tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The coordinator (or the transport on its behalf) answered with an error.
    #[error("{kind:?}: {message}")]
    Status {
        /// What kind of failure it is.
        kind: ErrorKind,
        /// What the coordinator said.
        message: String,
    },
    /// The coordinator's answer does not parse.
    #[error("the coordinator's answer does not parse: {0}")]
    Malformed(#[from] ValidationError),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status {
            kind: kind_of(status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// Opens a channel to a coordinator.
pub async fn connect_channel(url: &str) -> Result<Channel, ClientError> {
    // tonic would connect to an https:// URL in plaintext without TLS configured: refuse
    // instead, never downgrade silently.
    match url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
    {
        Some(scheme) if scheme == "http" => {}
        Some(scheme) if scheme == "https" => {
            return Err(ClientError::BadUrl {
                url: url.to_owned(),
                reason: "TLS to a coordinator is not supported yet; use http:// on a network you \
                         trust (celeritas never connects to an https:// URL in plaintext)"
                    .to_owned(),
            });
        }
        _ => {
            return Err(ClientError::BadUrl {
                url: url.to_owned(),
                reason: "a coordinator URL starts with http://".to_owned(),
            });
        }
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| ClientError::BadUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    endpoint
        .connect()
        .await
        .map_err(|error| ClientError::Unreachable {
            url: url.to_owned(),
            reason: std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.to_string()),
        })
}

/// Asks a coordinator's `grpc.health.v1` whether `service` ("" for the whole server) is serving.
pub async fn check_health(url: &str, service: &str) -> Result<bool, ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = connect_channel(url).await?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    Ok(response.status() == ServingStatus::Serving)
}

/// A connection to a coordinator's APIs.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    tasks: TaskServiceClient<Channel>,
    inspect: InspectServiceClient<Channel>,
    schedules: ScheduleServiceClient<Channel>,
}

impl CoordinatorClient {
    /// Connects to the coordinator at `url` (`http://host:port`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let channel = connect_channel(url).await?;
        Ok(Self {
            tasks: TaskServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            inspect: InspectServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            schedules: ScheduleServiceClient::new(channel),
        })
    }

    /// Submits one task.
    pub async fn submit(&mut self, spec: &TaskSpec) -> Result<Inserted, ClientError> {
        let response = self
            .tasks
            .submit_task(pb::SubmitTaskRequest {
                task: Some(task_spec_to_pb(spec)),
            })
            .await?
            .into_inner();
        Ok(Inserted {
            id: TaskId::parse("task_id", &response.task_id)?,
            created: response.created,
        })
    }

    /// Submits many tasks in one call.
    pub async fn submit_many(&mut self, specs: &[TaskSpec]) -> Result<Vec<Inserted>, ClientError> {
        let response = self
            .tasks
            .submit_tasks(pb::SubmitTasksRequest {
                tasks: specs.iter().map(task_spec_to_pb).collect(),
            })
            .await?
            .into_inner();
        response
            .tasks
            .into_iter()
            .map(|task| {
                Ok(Inserted {
                    id: TaskId::parse("task_id", &task.task_id)?,
                    created: task.created,
                })
            })
            .collect()
    }

    /// One task.
    pub async fn task(&mut self, id: TaskId) -> Result<TaskRecord, ClientError> {
        let response = self
            .tasks
            .get_task(pb::GetTaskRequest {
                task_id: id.to_string(),
                wait: None,
            })
            .await?
            .into_inner();
        let task = response
            .task
            .ok_or_else(|| ValidationError::new("task", "is missing"))?;
        Ok(task_from_pb(task)?)
    }

    /// One task, once it has finished or `wait` has passed (a long poll; the coordinator caps
    /// the wait at a minute), whichever comes first.
    pub async fn task_waiting(
        &mut self,
        id: TaskId,
        wait: Duration,
    ) -> Result<TaskRecord, ClientError> {
        let response = self
            .tasks
            .get_task(pb::GetTaskRequest {
                task_id: id.to_string(),
                wait: Some(duration_to_pb(wait)),
            })
            .await?
            .into_inner();
        let task = response
            .task
            .ok_or_else(|| ValidationError::new("task", "is missing"))?;
        Ok(task_from_pb(task)?)
    }

    /// Cancels a task; `terminate` aborts it if it is running.
    pub async fn cancel(&mut self, id: TaskId, terminate: bool) -> Result<TaskRecord, ClientError> {
        Ok(self.cancel_counted(id, terminate).await?.0)
    }

    /// Cancels a task as `cancel` does; also returns how many of its unfinished descendants
    /// were cancelled.
    pub async fn cancel_counted(
        &mut self,
        id: TaskId,
        terminate: bool,
    ) -> Result<(TaskRecord, u64), ClientError> {
        let response = self
            .tasks
            .cancel_task(pb::CancelTaskRequest {
                task_id: id.to_string(),
                terminate,
            })
            .await?
            .into_inner();
        let task = response
            .task
            .ok_or_else(|| ValidationError::new("task", "is missing"))?;
        Ok((task_from_pb(task)?, response.descendants_cancelled))
    }

    /// The tasks `query` asks for, longest quiet first.
    pub async fn list_tasks(&mut self, query: &TaskQuery) -> Result<Vec<TaskRecord>, ClientError> {
        let response = self
            .tasks
            .list_tasks(pb::ListTasksRequest {
                names: query.names.iter().map(ToString::to_string).collect(),
                states: query
                    .states
                    .iter()
                    .map(|state| state_to_pb(*state) as i32)
                    .collect(),
                quiet_for: query.quiet_for.map(duration_to_pb),
                limit: query.limit,
                root_id: query.root.map(|root| root.to_string()).unwrap_or_default(),
                include_payloads: query.with_payloads,
            })
            .await?
            .into_inner();
        Ok(response
            .tasks
            .into_iter()
            .map(task_from_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Ends attempt `attempt` of a leased or running task and requeues the task (or fails it,
    /// with `fail`), recording `reason`.
    pub async fn intervene(
        &mut self,
        id: TaskId,
        attempt: u32,
        fail: bool,
        reason: &str,
    ) -> Result<TaskRecord, ClientError> {
        let task = if fail {
            self.tasks
                .fail_task(pb::FailTaskRequest {
                    task_id: id.to_string(),
                    attempt,
                    reason: reason.to_owned(),
                })
                .await?
                .into_inner()
                .task
        } else {
            self.tasks
                .requeue_task(pb::RequeueTaskRequest {
                    task_id: id.to_string(),
                    attempt,
                    reason: reason.to_owned(),
                })
                .await?
                .into_inner()
                .task
        };
        let task = task.ok_or_else(|| ValidationError::new("task", "is missing"))?;
        Ok(task_from_pb(task)?)
    }

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

    /// Cancels every pending and scheduled task of a queue; returns how many.
    pub async fn purge(&mut self, queue: &QueueName) -> Result<u64, ClientError> {
        let response = self
            .tasks
            .purge_queue(pb::PurgeQueueRequest {
                queue: queue.to_string(),
            })
            .await?
            .into_inner();
        Ok(response.cancelled)
    }

    /// The events of a task tree after `from`, until it finishes.
    pub async fn stream_progress(
        &mut self,
        id: TaskId,
        from: Option<u64>,
    ) -> Result<impl futures::Stream<Item = Result<TreeEvent, ClientError>> + use<>, ClientError>
    {
        use futures::StreamExt;
        let stream = self
            .tasks
            .stream_progress(pb::StreamProgressRequest {
                task_id: id.to_string(),
                from_sequence: from,
            })
            .await?
            .into_inner();
        Ok(stream.map(|event| Ok(tree_event_from_pb(event?)?)))
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

    /// Every periodic schedule.
    pub async fn list_schedules(&mut self) -> Result<Vec<Schedule>, ClientError> {
        let response = self
            .schedules
            .list_schedules(pb::ListSchedulesRequest {})
            .await?
            .into_inner();
        Ok(response
            .schedules
            .into_iter()
            .map(schedule_from_stored_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Creates or replaces a schedule.
    pub async fn put_schedule(&mut self, schedule: &Schedule) -> Result<Schedule, ClientError> {
        let response = self
            .schedules
            .put_schedule(pb::PutScheduleRequest {
                schedule: Some(schedule_to_pb(schedule.clone())),
            })
            .await?
            .into_inner();
        let schedule = response
            .schedule
            .ok_or_else(|| ValidationError::new("schedule", "is missing"))?;
        Ok(schedule_from_stored_pb(schedule)?)
    }

    /// Removes a schedule.
    pub async fn delete_schedule(&mut self, name: &str) -> Result<(), ClientError> {
        self.schedules
            .delete_schedule(pb::DeleteScheduleRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Pauses or resumes a schedule.
    pub async fn pause_schedule(
        &mut self,
        name: &str,
        paused: bool,
    ) -> Result<Schedule, ClientError> {
        let response = self
            .schedules
            .pause_schedule(pb::PauseScheduleRequest {
                name: name.to_owned(),
                paused,
            })
            .await?
            .into_inner();
        let schedule = response
            .schedule
            .ok_or_else(|| ValidationError::new("schedule", "is missing"))?;
        Ok(schedule_from_stored_pb(schedule)?)
    }
}
