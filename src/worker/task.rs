//! What a task handler sees: the trait it implements, its context, its errors, and the registry
//! that maps task names to handlers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::domain::{
    LeaseToken, ProgressReport, RecordEntry, RequestError, TaskId, TaskName, TaskSpec,
    ValidationError,
};

/// The children's ids and the callback's, as the coordinator answers a submission.
pub type Submitted = (Vec<TaskId>, Option<TaskId>);

/// Where the answer to a child submission goes.
pub(super) type SubmittedReply = oneshot::Sender<Result<Submitted, RequestError>>;

/// What a running task asks of its worker.
pub(super) enum ContextRequest {
    /// Report progress.
    Progress(ProgressReport),
    /// Emit records.
    Records(Vec<RecordEntry>),
    /// Report pushback on a rate key.
    SlowDown(String),
    /// Submit children, and perhaps a callback.
    SubmitChildren {
        children: Vec<TaskSpec>,
        callback: Option<Box<TaskSpec>>,
        reply: SubmittedReply,
    },
    /// Ask which keys the tree has records for.
    QueryRecords {
        kind: String,
        status: Option<String>,
        reply: oneshot::Sender<Result<Vec<String>, RequestError>>,
    },
}

/// The channel a task's requests travel on to its worker's event loop.
pub(super) type ContextSender = mpsc::Sender<(LeaseToken, ContextRequest)>;

/// A task celeritas can run.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt. `args` is the JSON the task was submitted with.
    async fn run(
        &self,
        context: TaskContext,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, TaskError>;
}

/// Whether and when a failed attempt should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the error is permanent.
    Never,
    /// After the task's configured backoff, while retries remain.
    Backoff,
    /// After this long, while retries remain (Celery's `self.retry(countdown=…)`).
    After(Duration),
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskError {
    /// A short machine-readable kind, such as "smtp_transient".
    pub kind: String,
    /// A human-readable message.
    pub message: String,
    /// Whether to retry.
    pub retry: Retry,
}

impl TaskError {
    /// An error no retry can fix.
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// An error another attempt may not have, retried after the configured backoff.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    /// An error to retry after `delay`.
    pub fn retry_after(
        kind: impl Into<String>,
        message: impl Into<String>,
        delay: Duration,
    ) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::After(delay),
        }
    }

    /// Arguments that do not fit the task: permanent.
    pub fn invalid_args(error: impl std::fmt::Display) -> Self {
        Self::permanent("invalid_args", error.to_string())
    }
}

impl From<ValidationError> for TaskError {
    fn from(error: ValidationError) -> Self {
        Self::invalid_args(error)
    }
}

/// What a running task knows about itself and how it talks back.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub task_id: TaskId,
    /// The lease this attempt runs under.
    pub lease: LeaseToken,
    /// The task's name.
    pub name: TaskName,
    /// Retries already used before this attempt.
    pub retries: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// The root of the task's tree.
    pub root_id: TaskId,
    /// The task's parent.
    pub parent_id: Option<TaskId>,
    stop: CancellationToken,
    requests: ContextSender,
}

impl TaskContext {
    pub(super) fn new(
        lease: &crate::domain::Lease,
        stop: CancellationToken,
        requests: ContextSender,
    ) -> Self {
        Self {
            task_id: lease.token.task_id,
            lease: lease.token,
            name: lease.name.clone(),
            retries: lease.retries,
            max_retries: lease.max_retries,
            root_id: lease.root_id,
            parent_id: lease.parent_id,
            stop,
            requests,
        }
    }

    /// A context for calling a handler directly, outside a worker (in tests): requests to the
    /// coordinator fail.
    pub fn detached(name: TaskName) -> Self {
        let (requests, _) = mpsc::channel(1);
        let task_id = TaskId::generate();
        Self {
            task_id,
            lease: LeaseToken {
                task_id,
                attempt: 1,
            },
            name,
            retries: 0,
            max_retries: 0,
            root_id: task_id,
            parent_id: None,
            stop: CancellationToken::new(),
            requests,
        }
    }

    /// Fires when the task should stop: its soft time limit passed or it was cancelled. A task
    /// that observes it may clean up and return; one that ignores it is aborted at the hard
    /// limit.
    pub fn stop_requested(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Whether the task should stop.
    pub fn is_stop_requested(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Reports progress. Never waits: when reports pile up faster than they can be sent, newer
    /// ones are dropped until there is room (the coordinator keeps the latest it got).
    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        let report = ProgressReport {
            done,
            total,
            message: message.into(),
        };
        let _ = self
            .requests
            .try_send((self.lease, ContextRequest::Progress(report)));
    }

    /// Reports progress that must arrive (a final count, say): like `progress`, but waits for
    /// room instead of dropping the report.
    pub async fn report_progress(
        &self,
        done: u64,
        total: u64,
        message: impl Into<String>,
    ) -> Result<(), TaskError> {
        let report = ProgressReport {
            done,
            total,
            message: message.into(),
        };
        self.requests
            .send((self.lease, ContextRequest::Progress(report)))
            .await
            .map_err(|_| worker_gone())
    }

    /// Reports pushback on one of the task's rate keys (an SMTP 421 from a domain's mail
    /// server): the key's rate is lowered cluster-wide and recovers over time. Never waits; a
    /// report that finds no room is dropped (the next pushback says it again).
    pub fn slow_down(&self, key: impl Into<String>) {
        let _ = self
            .requests
            .try_send((self.lease, ContextRequest::SlowDown(key.into())));
    }

    /// Emits records: durable per-item outcomes, unique per root task, kind and key (writing a
    /// key again replaces its status and data). They are written before the task's result.
    pub async fn record(&self, records: Vec<RecordEntry>) -> Result<(), TaskError> {
        if records.is_empty() {
            return Ok(());
        }
        self.requests
            .send((self.lease, ContextRequest::Records(records)))
            .await
            .map_err(|_| worker_gone())
    }

    /// Submits children of this task; they join its tree. To make a retried attempt submit the
    /// same children once, give them idempotency keys.
    pub async fn submit_children(&self, children: Vec<TaskSpec>) -> Result<Vec<TaskId>, TaskError> {
        self.submit(children, None)
            .await
            .map(|(children, _)| children)
    }

    /// Submits children and a callback that runs once this task and all its children have
    /// finished (Celery's chord). Returns the children's ids and the callback's.
    pub async fn submit_children_then(
        &self,
        children: Vec<TaskSpec>,
        callback: TaskSpec,
    ) -> Result<(Vec<TaskId>, TaskId), TaskError> {
        let (children, callback) = self.submit(children, Some(callback)).await?;
        let callback = callback.ok_or_else(|| {
            TaskError::retryable(
                "protocol",
                "the coordinator did not return the callback's id",
            )
        })?;
        Ok((children, callback))
    }

    async fn submit(
        &self,
        children: Vec<TaskSpec>,
        callback: Option<TaskSpec>,
    ) -> Result<(Vec<TaskId>, Option<TaskId>), TaskError> {
        let (reply, answer) = oneshot::channel();
        let request = ContextRequest::SubmitChildren {
            children,
            callback: callback.map(Box::new),
            reply,
        };
        self.requests
            .send((self.lease, request))
            .await
            .map_err(|_| worker_gone())?;
        answer
            .await
            .map_err(|_| worker_gone())?
            .map_err(|error| request_failed("submit_children", error))
    }

    /// The keys of this task's tree that have records of `kind` (and `status`): what earlier
    /// attempts (and this one) already did.
    pub async fn recorded_keys(
        &self,
        kind: &str,
        status: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, TaskError> {
        let (reply, answer) = oneshot::channel();
        let request = ContextRequest::QueryRecords {
            kind: kind.to_owned(),
            status: status.map(str::to_owned),
            reply,
        };
        self.requests
            .send((self.lease, request))
            .await
            .map_err(|_| worker_gone())?;
        let keys = answer
            .await
            .map_err(|_| worker_gone())?
            .map_err(|error| request_failed("query_records", error))?;
        Ok(keys.into_iter().collect())
    }
}

fn worker_gone() -> TaskError {
    TaskError::retryable(
        "worker_stopping",
        "the worker is not taking requests any more",
    )
}

fn request_failed(kind: &str, error: RequestError) -> TaskError {
    if error.retryable {
        TaskError::retryable(kind, error.message)
    } else {
        TaskError::permanent(kind, error.message)
    }
}

/// A handler made of an async function.
struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> TaskHandler for FnHandler<F>
where
    F: Fn(TaskContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, TaskError>> + Send + 'static,
{
    async fn run(
        &self,
        context: TaskContext,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, TaskError> {
        (self.0)(context, args).await
    }
}

/// Closes a task family's idle pooled connections and says what it closed.
pub type CloseIdle = Arc<dyn Fn() -> String + Send + Sync>;

/// The tasks a worker runs, by name, and the hooks the coordinator's controls reach.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<TaskName, Arc<dyn TaskHandler>>,
    close_idle: Vec<CloseIdle>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_list()
            .entries(self.handlers.keys().map(TaskName::as_str))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handler under `name`, replacing any earlier one.
    pub fn register(
        &mut self,
        name: &str,
        handler: impl TaskHandler,
    ) -> Result<&mut Self, ValidationError> {
        let name = TaskName::parse("name", name)?;
        if self.handlers.contains_key(&name) {
            return Err(ValidationError::new(
                "name",
                format!("task {:?} is registered twice", name.as_str()),
            ));
        }
        self.handlers.insert(name, Arc::new(handler));
        Ok(self)
    }

    /// Registers an async function under `name`.
    pub fn register_fn<F, Fut>(
        &mut self,
        name: &str,
        handler: F,
    ) -> Result<&mut Self, ValidationError>
    where
        F: Fn(TaskContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, TaskError>> + Send + 'static,
    {
        self.register(name, FnHandler(handler))
    }

    /// The handler for `name`.
    pub fn get(&self, name: &TaskName) -> Option<Arc<dyn TaskHandler>> {
        self.handlers.get(name).cloned()
    }

    /// Every registered name.
    pub fn names(&self) -> Vec<TaskName> {
        self.handlers.keys().cloned().collect()
    }

    /// Adds a hook the `close_idle_connections` control runs.
    pub fn on_close_idle_connections(&mut self, hook: CloseIdle) -> &mut Self {
        self.close_idle.push(hook);
        self
    }

    /// Runs every `close_idle_connections` hook; answers what they closed.
    pub fn close_idle_connections(&self) -> String {
        if self.close_idle.is_empty() {
            return "no connection pools".to_owned();
        }
        let answers: Vec<String> = self.close_idle.iter().map(|hook| hook()).collect();
        answers.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo(
        _context: TaskContext,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, TaskError> {
        Ok(args)
    }

    #[test]
    fn a_name_is_registered_once() {
        let mut registry = Registry::new();
        registry.register_fn("reports.build", echo).unwrap();
        let error = registry.register_fn("reports.build", echo).unwrap_err();
        assert_eq!(error.field, "name");
        assert!(error.message.contains("registered twice"), "{error}");
        assert!(registry.register_fn(" bad", echo).is_err());
    }

    #[test]
    fn a_teams_task_may_not_take_a_built_in_name() {
        let mut registry = crate::tasks::builtin_registry(
            &crate::config::Config::default(),
            &crate::grpc::client::Target::plain("http://127.0.0.1:1"),
        )
        .unwrap();
        assert!(registry.register_fn("noop", echo).is_err());
    }
}
