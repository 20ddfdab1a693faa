//! `celeritas.v1.TaskService`: thin handlers that parse, delegate to the coordinator and convert
//! the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::caller_of;
use super::convert::{
    record_to_pb, selector_from_pb, state_from_pb, task_spec_from_pb, task_to_pb, timestamp_to_pb,
    tree_event_to_pb, wait_from_pb,
};
use super::pb;
use super::status::invalid;
use crate::coordinator::{Coordinator, CoordinatorError, Intervention};
use crate::domain::RecordsRequest;
use crate::domain::{
    MAX_BATCH_SUBMIT, QueueName, TaskId, TaskName, TaskQuery, ValidationError, parse_short_name,
};

/// How many tasks `ListTasks` answers unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 1_000;

/// The task API of one coordinator.
pub struct TaskApi {
    coordinator: Arc<Coordinator>,
}

impl TaskApi {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskApi {
    #[tracing::instrument(skip_all, fields(rpc = "SubmitTask"))]
    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskResponse>, Status> {
        let caller = caller_of(&request);
        let spec = request
            .into_inner()
            .task
            .ok_or_else(|| invalid(ValidationError::new("task", "is required")))?;
        let spec = task_spec_from_pb(spec, self.coordinator.settings().max_args_bytes)
            .map_err(|error| invalid(error.within("task")))?;
        let inserted = self
            .coordinator
            .submit(&caller, vec![spec], |_| "task".to_owned())
            .await?;
        let inserted = inserted.first().ok_or_else(|| {
            Status::from(CoordinatorError::Internal(
                "the store answered no task for a submit of one".to_owned(),
            ))
        })?;
        Ok(Response::new(pb::SubmitTaskResponse {
            task_id: inserted.id.to_string(),
            created: inserted.created,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SubmitTasks", count))]
    async fn submit_tasks(
        &self,
        request: Request<pb::SubmitTasksRequest>,
    ) -> Result<Response<pb::SubmitTasksResponse>, Status> {
        let caller = caller_of(&request);
        let specs = request.into_inner().tasks;
        tracing::Span::current().record("count", specs.len());
        if specs.is_empty() {
            return Err(invalid(ValidationError::new(
                "tasks",
                "at least one task is required",
            )));
        }
        if specs.len() > MAX_BATCH_SUBMIT {
            return Err(invalid(ValidationError::new(
                "tasks",
                format!(
                    "{} tasks is more than the limit of {MAX_BATCH_SUBMIT} per call",
                    specs.len()
                ),
            )));
        }
        let max_args_bytes = self.coordinator.settings().max_args_bytes;
        let specs = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                task_spec_from_pb(spec, max_args_bytes)
                    .map_err(|error| invalid(error.within(&format!("tasks[{index}]"))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inserted = self
            .coordinator
            .submit(&caller, specs, |index| format!("tasks[{index}]"))
            .await?;
        Ok(Response::new(pb::SubmitTasksResponse {
            tasks: inserted
                .into_iter()
                .map(|inserted| pb::SubmittedTask {
                    task_id: inserted.id.to_string(),
                    created: inserted.created,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetTask"))]
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let id = TaskId::parse("task_id", &request.task_id).map_err(invalid)?;
        let wait = wait_from_pb(request.wait).map_err(invalid)?;
        // Checked before any wait, so a caller that may not read the task never waits on it.
        self.coordinator
            .check_reader(&caller, id, "GetTask")
            .await?;
        let task = if wait.is_zero() {
            self.coordinator.task(id).await?
        } else {
            self.coordinator.task_waiting(id, wait).await?
        };
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task_to_pb(task)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CancelTask"))]
    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let request = request.into_inner();
        let id = TaskId::parse("task_id", &request.task_id).map_err(invalid)?;
        let cancellation = self.coordinator.cancel(id, request.terminate).await?;
        Ok(Response::new(pb::CancelTaskResponse {
            task: Some(task_to_pb(cancellation.task)),
            descendants_cancelled: cancellation.descendants_cancelled,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PurgeQueue"))]
    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> Result<Response<pb::PurgeQueueResponse>, Status> {
        let queue = QueueName::parse("queue", &request.into_inner().queue).map_err(invalid)?;
        let cancelled = self.coordinator.purge(&queue).await?;
        Ok(Response::new(pb::PurgeQueueResponse { cancelled }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RetryTasks"))]
    async fn retry_tasks(
        &self,
        request: Request<pb::RetryTasksRequest>,
    ) -> Result<Response<pb::RetryTasksResponse>, Status> {
        let request = request.into_inner();
        let selector = selector_from_pb(request.selector).map_err(invalid)?;
        let outcome = self
            .coordinator
            .retry_tasks(selector, request.dry_run)
            .await?;
        Ok(Response::new(pb::RetryTasksResponse {
            matched: outcome.matched,
            retried: outcome.changed,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CancelTasks"))]
    async fn cancel_tasks(
        &self,
        request: Request<pb::CancelTasksRequest>,
    ) -> Result<Response<pb::CancelTasksResponse>, Status> {
        let request = request.into_inner();
        let selector = selector_from_pb(request.selector).map_err(invalid)?;
        let outcome = self
            .coordinator
            .cancel_tasks(selector, request.terminate, request.dry_run)
            .await?;
        Ok(Response::new(pb::CancelTasksResponse {
            matched: outcome.matched,
            cancelled: outcome.changed,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PauseQueue"))]
    async fn pause_queue(
        &self,
        request: Request<pb::PauseQueueRequest>,
    ) -> Result<Response<pb::PauseQueueResponse>, Status> {
        let caller = caller_of(&request);
        let queue = QueueName::parse("queue", &request.into_inner().queue).map_err(invalid)?;
        let pause = self.coordinator.pause_queue(&caller, &queue).await?;
        Ok(Response::new(pb::PauseQueueResponse {
            changed: pause.changed,
            paused_at: pause.paused_at.map(timestamp_to_pb),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ResumeQueue"))]
    async fn resume_queue(
        &self,
        request: Request<pb::ResumeQueueRequest>,
    ) -> Result<Response<pb::ResumeQueueResponse>, Status> {
        let caller = caller_of(&request);
        let queue = QueueName::parse("queue", &request.into_inner().queue).map_err(invalid)?;
        let pause = self.coordinator.resume_queue(&caller, &queue).await?;
        Ok(Response::new(pb::ResumeQueueResponse {
            changed: pause.changed,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetRateLimit"))]
    async fn set_rate_limit(
        &self,
        request: Request<pb::SetRateLimitRequest>,
    ) -> Result<Response<pb::SetRateLimitResponse>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let change = self
            .coordinator
            .set_rate_limit(&caller, &request.key, &request.rate)
            .await?;
        Ok(Response::new(pb::SetRateLimitResponse {
            previous: change.previous,
            governed: change.governed,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ClearRateLimit"))]
    async fn clear_rate_limit(
        &self,
        request: Request<pb::ClearRateLimitRequest>,
    ) -> Result<Response<pb::ClearRateLimitResponse>, Status> {
        let caller = caller_of(&request);
        let change = self
            .coordinator
            .clear_rate_limit(&caller, &request.into_inner().key)
            .await?;
        Ok(Response::new(pb::ClearRateLimitResponse {
            previous: change.previous.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PauseTree"))]
    async fn pause_tree(
        &self,
        request: Request<pb::PauseTreeRequest>,
    ) -> Result<Response<pb::PauseTreeResponse>, Status> {
        let caller = caller_of(&request);
        let root = TaskId::parse("task_id", &request.into_inner().task_id).map_err(invalid)?;
        let pause = self.coordinator.pause_tree(&caller, root).await?;
        Ok(Response::new(pb::PauseTreeResponse {
            changed: pause.changed,
            paused_at: Some(timestamp_to_pb(pause.paused_at)),
            stopping: pause.stopping,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ResumeTree"))]
    async fn resume_tree(
        &self,
        request: Request<pb::ResumeTreeRequest>,
    ) -> Result<Response<pb::ResumeTreeResponse>, Status> {
        let caller = caller_of(&request);
        let root = TaskId::parse("task_id", &request.into_inner().task_id).map_err(invalid)?;
        let changed = self.coordinator.resume_tree(&caller, root).await?;
        Ok(Response::new(pb::ResumeTreeResponse { changed }))
    }

    type StreamProgressStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamProgressResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(rpc = "StreamProgress"))]
    async fn stream_progress(
        &self,
        request: Request<pb::StreamProgressRequest>,
    ) -> Result<Response<Self::StreamProgressStream>, Status> {
        let caller = caller_of(&request);
        let request = request.into_inner();
        let id = TaskId::parse("task_id", &request.task_id).map_err(invalid)?;
        self.coordinator
            .check_reader(&caller, id, "StreamProgress")
            .await?;
        let events = self
            .coordinator
            .stream_progress(id, request.from_sequence)
            .await?;
        let stream = ReceiverStream::new(events)
            .map(|event| event.map(tree_event_to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListRecords"))]
    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let request = request.into_inner();
        let optional_name = |field: &str, text: &str| {
            if text.is_empty() {
                Ok(None)
            } else {
                parse_short_name(field, text).map(Some).map_err(invalid)
            }
        };
        let page = self
            .coordinator
            .list_records(RecordsRequest {
                task: TaskId::parse("task_id", &request.task_id).map_err(invalid)?,
                whole_tree: request.whole_tree,
                kind: optional_name("kind", &request.kind)?,
                status: optional_name("status", &request.status)?,
                page_size: request.page_size,
                page_token: Some(request.page_token).filter(|token| !token.is_empty()),
            })
            .await?;
        Ok(Response::new(pb::ListRecordsResponse {
            records: page.records.into_iter().map(record_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListTasks"))]
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let request = request.into_inner();
        let names = request
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| TaskName::parse(&format!("names[{index}]"), name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let states = request
            .states
            .iter()
            .enumerate()
            .map(|(index, state)| state_from_pb(&format!("states[{index}]"), *state))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let quiet_for = request
            .quiet_for
            .map(|quiet| {
                std::time::Duration::try_from(quiet)
                    .map_err(|_| invalid(ValidationError::new("quiet_for", "must not be negative")))
            })
            .transpose()?;
        let limit = match request.limit {
            0 => DEFAULT_LIST_LIMIT,
            limit => limit,
        };
        let root = (!request.root_id.is_empty())
            .then(|| TaskId::parse("root_id", &request.root_id))
            .transpose()
            .map_err(invalid)?;
        let tasks = self
            .coordinator
            .list_tasks(TaskQuery {
                root,
                names,
                states,
                quiet_for,
                limit,
                with_payloads: request.include_payloads,
            })
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(task_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RequeueTask"))]
    async fn requeue_task(
        &self,
        request: Request<pb::RequeueTaskRequest>,
    ) -> Result<Response<pb::RequeueTaskResponse>, Status> {
        let request = request.into_inner();
        let task = self
            .intervene(
                &request.task_id,
                request.attempt,
                Intervention::Requeue,
                &request.reason,
            )
            .await?;
        Ok(Response::new(pb::RequeueTaskResponse { task: Some(task) }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "FailTask"))]
    async fn fail_task(
        &self,
        request: Request<pb::FailTaskRequest>,
    ) -> Result<Response<pb::FailTaskResponse>, Status> {
        let request = request.into_inner();
        let task = self
            .intervene(
                &request.task_id,
                request.attempt,
                Intervention::Fail,
                &request.reason,
            )
            .await?;
        Ok(Response::new(pb::FailTaskResponse { task: Some(task) }))
    }
}

impl TaskApi {
    async fn intervene(
        &self,
        task_id: &str,
        attempt: u32,
        intervention: Intervention,
        reason: &str,
    ) -> Result<pb::Task, Status> {
        let id = TaskId::parse("task_id", task_id).map_err(invalid)?;
        let attempt = (attempt != 0).then_some(attempt);
        let task = self
            .coordinator
            .intervene(id, attempt, intervention, reason)
            .await?;
        Ok(task_to_pb(task))
    }
}
