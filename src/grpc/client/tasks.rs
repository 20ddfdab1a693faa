//! The client's task calls: submit, read, cancel, purge, pause and resume queues, intervene,
//! retry and cancel in bulk, follow progress.

use std::time::Duration;

use super::{ClientError, CoordinatorClient};
use crate::domain::{
    BulkOutcome, Inserted, QueueName, RecordsPage, RecordsRequest, TaskId, TaskQuery, TaskRecord,
    TaskSelector, TaskSpec, TreeEvent, ValidationError,
};
use crate::grpc::convert::{
    duration_to_pb, record_from_pb, selector_to_pb, state_to_pb, task_from_pb, task_spec_to_pb,
    tree_event_from_pb,
};
use crate::grpc::pb;

impl CoordinatorClient {
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

    /// Retries the failed tasks `selector` matches (or, with `dry_run`, counts them).
    pub async fn retry_tasks(
        &mut self,
        selector: &TaskSelector,
        dry_run: bool,
    ) -> Result<BulkOutcome, ClientError> {
        let response = self
            .tasks
            .retry_tasks(pb::RetryTasksRequest {
                selector: Some(selector_to_pb(selector)),
                dry_run,
            })
            .await?
            .into_inner();
        Ok(BulkOutcome {
            matched: response.matched,
            changed: response.retried,
        })
    }

    /// Cancels the unfinished tasks `selector` matches (or, with `dry_run`, counts them).
    pub async fn cancel_tasks(
        &mut self,
        selector: &TaskSelector,
        terminate: bool,
        dry_run: bool,
    ) -> Result<BulkOutcome, ClientError> {
        let response = self
            .tasks
            .cancel_tasks(pb::CancelTasksRequest {
                selector: Some(selector_to_pb(selector)),
                dry_run,
                terminate,
            })
            .await?
            .into_inner();
        Ok(BulkOutcome {
            matched: response.matched,
            changed: response.cancelled,
        })
    }

    /// Pauses a queue; true when it was not paused before.
    pub async fn pause_queue(&mut self, queue: &QueueName) -> Result<bool, ClientError> {
        let response = self
            .tasks
            .pause_queue(pb::PauseQueueRequest {
                queue: queue.to_string(),
            })
            .await?
            .into_inner();
        Ok(response.changed)
    }

    /// Resumes a paused queue; true when it was paused.
    pub async fn resume_queue(&mut self, queue: &QueueName) -> Result<bool, ClientError> {
        let response = self
            .tasks
            .resume_queue(pb::ResumeQueueRequest {
                queue: queue.to_string(),
            })
            .await?
            .into_inner();
        Ok(response.changed)
    }

    /// Sets the rate limit of `key` (a key or pattern): the rate it had through the API before,
    /// and how many waiting tasks it now limits.
    pub async fn set_rate_limit(
        &mut self,
        key: &str,
        rate: &str,
    ) -> Result<(Option<String>, u64), ClientError> {
        let response = self
            .tasks
            .set_rate_limit(pb::SetRateLimitRequest {
                key: key.to_owned(),
                rate: rate.to_owned(),
            })
            .await?
            .into_inner();
        Ok((response.previous, response.governed))
    }

    /// Removes the rate limit of `key` set through the API; answers the rate it had.
    pub async fn clear_rate_limit(&mut self, key: &str) -> Result<String, ClientError> {
        let response = self
            .tasks
            .clear_rate_limit(pb::ClearRateLimitRequest {
                key: key.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response.previous)
    }

    /// Pauses the tree rooted at `root`: whether it was not paused before, and how many running
    /// tasks were asked to stop.
    pub async fn pause_tree(&mut self, root: TaskId) -> Result<(bool, u64), ClientError> {
        let response = self
            .tasks
            .pause_tree(pb::PauseTreeRequest {
                task_id: root.to_string(),
            })
            .await?
            .into_inner();
        Ok((response.changed, response.stopping))
    }

    /// Resumes a paused tree; true when it was paused.
    pub async fn resume_tree(&mut self, root: TaskId) -> Result<bool, ClientError> {
        let response = self
            .tasks
            .resume_tree(pb::ResumeTreeRequest {
                task_id: root.to_string(),
            })
            .await?
            .into_inner();
        Ok(response.changed)
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

    /// A page of records of a task, or of its whole tree.
    pub async fn records(&mut self, request: &RecordsRequest) -> Result<RecordsPage, ClientError> {
        let response = self
            .tasks
            .list_records(pb::ListRecordsRequest {
                task_id: request.task.to_string(),
                whole_tree: request.whole_tree,
                kind: request.kind.clone().unwrap_or_default(),
                status: request.status.clone().unwrap_or_default(),
                page_size: request.page_size,
                page_token: request.page_token.clone().unwrap_or_default(),
            })
            .await?
            .into_inner();
        Ok(RecordsPage {
            records: response
                .records
                .into_iter()
                .map(record_from_pb)
                .collect::<Result<_, _>>()?,
            next_page_token: Some(response.next_page_token).filter(|token| !token.is_empty()),
        })
    }
}
