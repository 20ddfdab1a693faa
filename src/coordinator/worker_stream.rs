//! The coordinator's side of one worker stream: the handshake, then every message until the
//! stream ends, then giving back what the worker held.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{BoxStream, FuturesUnordered};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::batcher::BatchError;
use super::sessions::{HeldLease, Outbound, Session, StreamBuffer};
use super::{AttemptUpdate, Coordinator, CoordinatorError};
use crate::clock::after;
use crate::domain::{
    CoordinatorMessage, Failure, Hello, LeaseToken, Outcome, Refusal, RequestError, TaskId,
    ValidationError, WorkerMessage,
};
use crate::store::{
    Completion, ProgressWrite, RUNNING_LEASE_MARGIN, RecordWrite, Resolution, Start,
    WorkerRegistration,
};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker silent for this many heartbeat intervals is taken for dead.
pub(super) const MISSED_HEARTBEATS: u32 = 3;

/// Why a message from a worker could not be read.
#[derive(Debug)]
pub enum InboundError {
    /// It arrived but does not make sense.
    Invalid(ValidationError),
    /// It arrived and is answered with a refusal; the stream goes on.
    Refused(Refusal),
    /// The stream broke.
    Broken(String),
}

/// The worker's messages, already converted from the wire.
pub type Inbound = BoxStream<'static, Result<WorkerMessage, InboundError>>;

/// The channel a stream's replies go through, sized for a worker's capacity.
pub fn outbound_channel(
    capacity_hint: usize,
) -> (
    Outbound,
    mpsc::Receiver<Result<CoordinatorMessage, CoordinatorError>>,
) {
    mpsc::channel(capacity_hint)
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The worker closed the stream: it is done with its leases.
    Closed,
    /// The stream broke, or the worker went silent.
    Lost,
    /// A newer stream of the same worker took over its leases.
    Replaced,
    /// The coordinator is stopping.
    Stopping,
    /// The worker broke the protocol.
    Refused,
}

/// A write the session waits for.
enum Written {
    /// A result: tell the worker and free its place.
    Result {
        token: LeaseToken,
        /// The tree to mark changed, when the task is in one.
        tree: Option<TaskId>,
        written: Result<bool, BatchError>,
    },
    /// Progress or records of a task in a tree.
    TreeChange(TaskId),
}

type PendingWrite = futures::future::BoxFuture<'static, Written>;

/// Serves one worker stream until it ends.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    mut inbound: Inbound,
    outbound: Outbound,
    buffer: Arc<StreamBuffer>,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
        Ok(Some(Ok(WorkerMessage::Hello(hello)))) => hello,
        Ok(Some(Ok(other))) => {
            let error = CoordinatorError::FailedPrecondition(format!(
                "the first message on a worker stream must be a hello, not {}",
                message_kind(&other)
            ));
            let _ = outbound.send(Err(error)).await;
            return;
        }
        Ok(Some(Err(InboundError::Invalid(error)))) => {
            let _ = outbound.send(Err(CoordinatorError::Invalid(error))).await;
            return;
        }
        Ok(Some(Err(InboundError::Refused(_)))) => {
            let error = CoordinatorError::FailedPrecondition(
                "the first message on a worker stream must be a hello".to_owned(),
            );
            let _ = outbound.send(Err(error)).await;
            return;
        }
        Ok(Some(Err(InboundError::Broken(_))) | None) => return,
        Err(_) => {
            let error = CoordinatorError::FailedPrecondition(format!(
                "no hello within {}s",
                HELLO_TIMEOUT.as_secs()
            ));
            let _ = outbound.send(Err(error)).await;
            return;
        }
    };
    let session = match open_session(&coordinator, hello, outbound.clone(), buffer).await {
        Ok(session) => session,
        Err(error) => {
            let _ = outbound.send(Err(error)).await;
            return;
        }
    };
    tracing::info!(
        worker = %session.worker(),
        hostname = %session.hello.hostname,
        queues = ?session.hello.queues.iter().map(|queue| queue.as_str()).collect::<Vec<_>>(),
        capacity = session.hello.capacity(),
        "worker connected"
    );
    let end = run_session(&coordinator, &session, &mut inbound).await;
    close_session(&coordinator, &session, end).await;
}

/// Checks the hello, adopts the worker's leases and says welcome.
async fn open_session(
    coordinator: &Arc<Coordinator>,
    hello: Hello,
    outbound: Outbound,
    buffer: Arc<StreamBuffer>,
) -> Result<Arc<Session>, CoordinatorError> {
    let limit = coordinator.settings.max_worker_capacity;
    if hello.capacity() > limit {
        return Err(CoordinatorError::Invalid(ValidationError::new(
            "hello.concurrency",
            format!(
                "concurrency {} × prefetch multiplier {} asks for {} leases, more than this \
                 coordinator's limit of {limit} ([coordinator] max_worker_capacity)",
                hello.concurrency,
                hello.prefetch_multiplier,
                u64::from(hello.concurrency) * u64::from(hello.prefetch_multiplier),
            ),
        )));
    }
    let mut queues = Vec::with_capacity(hello.queues.len());
    for (index, queue) in hello.queues.iter().enumerate() {
        let priority = coordinator.routing.queue_priority(queue).ok_or_else(|| {
            CoordinatorError::Invalid(ValidationError::new(
                format!("hello.queues[{index}]"),
                format!(
                    "unknown queue {:?}; the coordinator has {}",
                    queue.as_str(),
                    coordinator.queue_list()
                ),
            ))
        })?;
        queues.push((queue.clone(), priority));
    }
    queues.sort_by_key(|(_, priority)| std::cmp::Reverse(*priority));
    let connected_at = coordinator.clock.now();
    let session_id = Uuid::new_v4();
    let adopted = coordinator
        .store
        .adopt_leases(
            &hello.worker_id,
            session_id,
            &hello.held_leases,
            connected_at,
            after(connected_at, coordinator.settings.lease_ttl),
        )
        .await?;
    if adopted.released > 0 {
        tracing::info!(worker = %hello.worker_id, count = adopted.released, lost = adopted.lost, "gave up leases the worker no longer holds");
        coordinator.signal.wake();
    }
    let session = Session::new(
        session_id,
        hello,
        queues,
        &adopted.kept,
        outbound,
        buffer,
        connected_at,
    );
    coordinator
        .store
        .register_worker(&WorkerRegistration {
            id: session.worker().clone(),
            hostname: session.hello.hostname.clone(),
            pid: session.hello.pid,
            queues: session.hello.queues.clone(),
            task_names: session.hello.task_names.clone(),
            concurrency: session.hello.concurrency,
            prefetch_multiplier: session.hello.prefetch_multiplier,
            version: session.hello.version.clone(),
            coordinator_id: coordinator.id.clone(),
            connected_at,
        })
        .await?;
    let session = Arc::new(session);
    let welcome = CoordinatorMessage::Welcome {
        coordinator_id: coordinator.id.clone(),
        heartbeat_interval: coordinator.settings.heartbeat_interval,
        kept_leases: adopted.kept.iter().map(|lease| lease.token).collect(),
    };
    if !session.send(welcome).await {
        return Err(CoordinatorError::Unavailable(
            "the worker's stream closed during the handshake".to_owned(),
        ));
    }
    coordinator.sessions.insert(session.clone());
    Ok(session)
}

/// Handles the worker's messages until the stream ends.
async fn run_session(
    coordinator: &Arc<Coordinator>,
    session: &Session,
    inbound: &mut Inbound,
) -> End {
    let mut pending: FuturesUnordered<PendingWrite> = FuturesUnordered::new();
    let heartbeat_interval = coordinator.settings.heartbeat_interval;
    let mut liveness = tokio::time::interval(heartbeat_interval);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = coordinator.stop.cancelled() => break End::Stopping,
            _ = session.replaced().cancelled() => break End::Replaced,
            Some(written) = pending.next(), if !pending.is_empty() => {
                if !settle(coordinator, session, written).await {
                    session
                        .fail(CoordinatorError::Unavailable(
                            "a result could not be recorded; reconnect and report it again"
                                .to_owned(),
                        ))
                        .await;
                    break End::Lost;
                }
            }
            message = inbound.next() => match message {
                None => break End::Closed,
                Some(Err(InboundError::Broken(reason))) => {
                    tracing::info!(worker = %session.worker(), %reason, "worker stream broke");
                    break End::Lost;
                }
                Some(Err(InboundError::Invalid(error))) => {
                    session.fail(CoordinatorError::Invalid(error)).await;
                    break End::Refused;
                }
                Some(Err(InboundError::Refused(refusal))) => {
                    session.touch();
                    if !refuse(session, refusal).await {
                        break End::Refused;
                    }
                }
                Some(Ok(message)) => {
                    session.touch();
                    if let Err(error) = handle(coordinator, session, message, &mut pending).await {
                        session.fail(error).await;
                        break End::Refused;
                    }
                }
            },
            _ = liveness.tick() => {
                if session.silent_for() > heartbeat_interval * MISSED_HEARTBEATS {
                    tracing::warn!(worker = %session.worker(), "worker went silent");
                    break End::Lost;
                }
            }
        }
    };
    // Results already received are written before the session lets go of their leases.
    while let Some(written) = pending.next().await {
        // A failure here changes nothing: the stream is ending and the worker keeps the result.
        settle(coordinator, session, written).await;
    }
    end
}

/// Handles one message; an error ends the stream.
async fn handle(
    coordinator: &Arc<Coordinator>,
    session: &Session,
    message: WorkerMessage,
    pending: &mut FuturesUnordered<PendingWrite>,
) -> Result<(), CoordinatorError> {
    match message {
        WorkerMessage::Hello(_) => {
            return Err(CoordinatorError::FailedPrecondition(
                "hello was already sent on this stream".to_owned(),
            ));
        }
        WorkerMessage::Credit(grant) => {
            session.grant(grant);
            coordinator.signal.wake();
        }
        WorkerMessage::Started { token, at } => {
            if let Some(lease) = session.mark_running(&token, at) {
                let waited = (at - lease.run_at).to_std().unwrap_or_default();
                metrics::histogram!("celeritas_task_queue_wait_seconds", "queue" => lease.queue.to_string())
                    .record(waited.as_secs_f64());
                let start = Start {
                    token,
                    worker: session.worker().clone(),
                    at,
                    lease_expires_at: after(
                        coordinator.clock.now(),
                        coordinator.settings.lease_ttl,
                    )
                    .min(after(at, lease.hard_time_limit + RUNNING_LEASE_MARGIN)),
                };
                // The answer is not awaited: a start that is not written changes nothing a
                // completion does not change too.
                drop(
                    coordinator
                        .attempts
                        .enqueue(AttemptUpdate::Started(start))
                        .await,
                );
            } else {
                tracing::debug!(worker = %session.worker(), %token, "start of a lease not held");
            }
        }
        WorkerMessage::Progress { token, report } => {
            let Some(lease) = session.record_progress(&token, report.clone()) else {
                tracing::debug!(worker = %session.worker(), %token, "progress of a lease not held");
                return Ok(());
            };
            open_tree(coordinator, session, &token, &lease).await?;
            let write = ProgressWrite {
                token,
                worker: session.worker().clone(),
                report,
                at: coordinator.clock.now(),
            };
            let answer = coordinator
                .attempts
                .enqueue(AttemptUpdate::Progress(write))
                .await;
            let root = lease.root_id;
            pending.push(Box::pin(async move {
                let _ = answer.await;
                Written::TreeChange(root)
            }));
        }
        WorkerMessage::EmitRecords { token, records } => {
            let Some(lease) = session.lease(&token) else {
                tracing::debug!(worker = %session.worker(), %token, "records of a lease not held");
                return Ok(());
            };
            open_tree(coordinator, session, &token, &lease).await?;
            let write = RecordWrite {
                token,
                worker: session.worker().clone(),
                records,
                at: coordinator.clock.now(),
            };
            let answer = coordinator
                .attempts
                .enqueue(AttemptUpdate::Records(write))
                .await;
            let root = lease.root_id;
            pending.push(Box::pin(async move {
                let _ = answer.await;
                Written::TreeChange(root)
            }));
        }
        WorkerMessage::SubmitChildren {
            request_id,
            token,
            children,
            callback,
        } => {
            let result = match session.lease(&token) {
                None => Err(not_held(token)),
                Some(lease) => {
                    open_tree(coordinator, session, &token, &lease).await?;
                    coordinator
                        .submit_children(token.task_id, children, callback)
                        .await
                        .map_err(request_error)
                }
            };
            session
                .send(CoordinatorMessage::ChildrenSubmitted { request_id, result })
                .await;
        }
        WorkerMessage::QueryRecords {
            request_id,
            token,
            kind,
            status,
        } => {
            let result = match session.lease(&token) {
                None => Err(not_held(token)),
                Some(lease) => {
                    // Everything the worker sent before the query is written first.
                    let _ = coordinator
                        .attempts
                        .enqueue(AttemptUpdate::Barrier)
                        .await
                        .await;
                    coordinator
                        .store
                        .recorded_keys(lease.root_id, &kind, status.as_deref())
                        .await
                        .map_err(|error| request_error(error.into()))
                }
            };
            session
                .send(CoordinatorMessage::RecordsQueried { request_id, result })
                .await;
        }
        WorkerMessage::Result { token, outcome } => {
            if session.lease(&token).is_some_and(|lease| lease.completing) {
                // Sent again while the first copy is being written: that write answers it.
                return Ok(());
            }
            let Some(lease) = session.begin_completion(&token) else {
                let refused = CoordinatorMessage::ResultAck {
                    token,
                    accepted: false,
                    reason: format!("lease {token} is not held by this worker"),
                };
                session.send(refused).await;
                return Ok(());
            };
            // Records the attempt emitted were refused: its result must not commit as if they
            // had been written.
            let outcome = match &lease.refused_records {
                None => outcome,
                Some(why) => Outcome::Failed(Failure {
                    kind: "invalid_record".to_owned(),
                    message: format!("the task emitted records that cannot be stored: {why}"),
                    retryable: false,
                    retry_after: None,
                }),
            };
            let completion = Completion {
                token,
                worker: session.worker().clone(),
                started_at: lease.started_at,
                resolution: coordinator.resolve(&lease, outcome),
                at: coordinator.clock.now(),
            };
            record_outcome(&lease, &completion);
            if let Resolution::Retry { run_at, .. } = &completion.resolution {
                coordinator.signal.wake_at(*run_at);
            }
            let answer = coordinator
                .attempts
                .enqueue(AttemptUpdate::Ended(completion))
                .await;
            let tree = lease.in_tree.then_some(lease.root_id);
            pending.push(Box::pin(async move {
                let written = answer.await.unwrap_or(Err(BatchError::Stopped));
                Written::Result {
                    token,
                    tree,
                    written,
                }
            }));
        }
        WorkerMessage::Heartbeat(stats) => {
            if let Err(error) = coordinator
                .store
                .worker_seen(session.worker(), stats.as_ref(), coordinator.clock.now())
                .await
            {
                tracing::debug!(worker = %session.worker(), %error, "cannot record a heartbeat");
            }
            if let Some(stats) = stats {
                session.set_stats(stats);
            }
        }
        WorkerMessage::Release(tokens) => {
            let releasable = session.take_releasable(&tokens);
            coordinator.store.release(session.id, &releasable).await?;
            coordinator.signal.wake();
        }
        WorkerMessage::ControlReply { request_id, detail } => {
            session.resolve_control(request_id, detail);
        }
    }
    Ok(())
}

/// Answers a message that cannot be taken as it is; false when the refusal ends the stream.
async fn refuse(session: &Session, refusal: Refusal) -> bool {
    match refusal {
        Refusal::Stream(error) => {
            session.fail(CoordinatorError::Invalid(error)).await;
            return false;
        }
        Refusal::Children { request_id, error } => {
            let result = Err(RequestError {
                message: error.to_string(),
                retryable: false,
            });
            session
                .send(CoordinatorMessage::ChildrenSubmitted { request_id, result })
                .await;
        }
        Refusal::Records { token, error } => {
            tracing::warn!(worker = %session.worker(), %token, %error, "records refused; the attempt will fail");
            session.refuse_records(&token, error.to_string());
        }
    }
    true
}

/// A write finished. For a result: tell the worker and free the lease's place. False when a
/// result's write failed: the worker must report it again, which it does on its next stream.
async fn settle(coordinator: &Coordinator, session: &Session, written: Written) -> bool {
    let (token, tree, written) = match written {
        Written::TreeChange(root) => {
            coordinator.dirty_trees.mark(root);
            return true;
        }
        Written::Result {
            token,
            tree,
            written,
        } => (token, tree, written),
    };
    match written {
        Ok(accepted) => {
            let reason = if accepted {
                String::new()
            } else {
                format!("lease {token} is no longer current")
            };
            settled(coordinator, session, token, tree, accepted, reason).await;
            true
        }
        Err(BatchError::Store(why)) => {
            // The store refused the result (or something the attempt wrote before it): sending
            // it again would fail again, so the attempt is recorded as failed, saying why.
            tracing::warn!(worker = %session.worker(), %token, %why, "the store refused a result; recording the attempt as failed");
            if fail_instead(coordinator, session, token, &why).await {
                let reason = format!("the store refused the result; the attempt failed: {why}");
                settled(coordinator, session, token, tree, false, reason).await;
                return true;
            }
            session.abandon_completion(&token);
            false
        }
        Err(error) => {
            // Not acknowledged: the worker keeps the result and reports it again on its next
            // stream.
            tracing::warn!(worker = %session.worker(), %token, %error, "result not written");
            session.abandon_completion(&token);
            false
        }
    }
}

/// An attempt's end is durable: its place is freed, the worker told, and whoever waits woken.
async fn settled(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    tree: Option<TaskId>,
    accepted: bool,
    reason: String,
) {
    session.settle(&token);
    session
        .send(CoordinatorMessage::ResultAck {
            token,
            accepted,
            reason,
        })
        .await;
    coordinator.signal.wake();
    coordinator.waiters.wake(token.task_id);
    if let Some(root) = tree {
        coordinator.dirty_trees.mark(root);
    }
}

/// Records an attempt as failed because the store refused its result; true once durable.
async fn fail_instead(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    why: &str,
) -> bool {
    let Some(lease) = session.lease(&token) else {
        return false;
    };
    let completion = Completion {
        token,
        worker: session.worker().clone(),
        started_at: lease.started_at,
        resolution: Resolution::Failed {
            kind: "unstorable_result".to_owned(),
            message: crate::domain::sanitize(
                &format!("the store refused the attempt's result: {why}"),
                crate::domain::MAX_FAILURE_MESSAGE_BYTES,
            )
            .into_owned(),
        },
        at: coordinator.clock.now(),
    };
    let answer = coordinator
        .attempts
        .enqueue(AttemptUpdate::EndedInstead(completion))
        .await;
    matches!(answer.await, Ok(Ok(_)))
}

/// Counts an attempt's end for the metrics.
fn record_outcome(lease: &HeldLease, completion: &Completion) {
    let queue = lease.queue.to_string();
    let outcome = match completion.resolution {
        Resolution::Succeeded(_) => "succeeded",
        Resolution::Retry { .. } => {
            metrics::counter!("celeritas_task_retries_total", "queue" => queue.clone())
                .increment(1);
            "retried"
        }
        Resolution::Failed { .. } => "failed",
    };
    metrics::counter!("celeritas_tasks_finished_total", "queue" => queue, "outcome" => outcome)
        .increment(1);
    if let Some(started) = lease.started_at {
        let ran = (completion.at - started).to_std().unwrap_or_default();
        metrics::histogram!("celeritas_task_run_seconds", "name" => crate::metrics::task_name_label(lease.name.as_str()))
            .record(ran.as_secs_f64());
    }
}

fn not_held(token: LeaseToken) -> RequestError {
    RequestError {
        message: format!("lease {token} is not held by this worker"),
        retryable: false,
    }
}

/// A coordinator error as a task's request sees it: the store's troubles are worth retrying,
/// bad input is not.
fn request_error(error: CoordinatorError) -> RequestError {
    match error {
        CoordinatorError::Unavailable(message) => RequestError {
            message,
            retryable: true,
        },
        CoordinatorError::Internal(detail) => {
            tracing::error!(%detail, "a task's request failed");
            RequestError {
                message: "internal error; the coordinator's log has the detail".to_owned(),
                retryable: true,
            }
        }
        other => RequestError {
            message: other.to_string(),
            retryable: false,
        },
    }
}

/// Opens the tree of a task that starts acting as a tree (children, progress, records).
async fn open_tree(
    coordinator: &Coordinator,
    session: &Session,
    token: &LeaseToken,
    lease: &HeldLease,
) -> Result<(), CoordinatorError> {
    if lease.in_tree {
        return Ok(());
    }
    coordinator
        .store
        .open_tree(lease.root_id, coordinator.clock.now())
        .await?;
    session.mark_in_tree(token);
    Ok(())
}

/// Unregisters the session and gives back what its worker held.
async fn close_session(coordinator: &Coordinator, session: &Session, end: End) {
    coordinator.sessions.remove(session);
    tracing::info!(worker = %session.worker(), ending = ?end, "worker disconnected");
    match end {
        // The worker's new stream adopted its leases.
        End::Replaced => return,
        // The worker keeps running its tasks and reports them to the next coordinator it
        // reaches; leases it never reports again expire.
        End::Stopping => {
            session
                .fail(CoordinatorError::Unavailable(
                    "the coordinator is shutting down; reconnect".to_owned(),
                ))
                .await;
            return;
        }
        // The worker may reconnect, to this or another coordinator, and keep its leases.
        End::Lost => {
            let deadline = after(coordinator.clock.now(), coordinator.settings.lease_grace);
            if let Err(error) = coordinator
                .store
                .expire_session_leases(session.id, deadline)
                .await
            {
                tracing::warn!(worker = %session.worker(), %error, "cannot start the grace period; the leases wait for their expiry");
            }
            return;
        }
        End::Closed | End::Refused => {}
    }
    let leases = session.take_all_releasable();
    if leases.is_empty() {
        return;
    }
    match coordinator.store.release(session.id, &leases).await {
        Ok(released) => {
            tracing::info!(worker = %session.worker(), count = released, "requeued the worker's leases");
            coordinator.signal.wake();
            coordinator.announce();
        }
        Err(error) => {
            tracing::warn!(worker = %session.worker(), %error, "cannot requeue the worker's leases; they wait for expiry");
        }
    }
}

impl Coordinator {
    /// Decides what becomes of a task whose attempt ended: retried with backoff while it may be,
    /// failed otherwise.
    fn resolve(&self, lease: &HeldLease, outcome: Outcome) -> Resolution {
        match outcome {
            Outcome::Succeeded(result) => Resolution::Succeeded(result),
            Outcome::Failed(Failure {
                kind,
                message,
                retryable,
                retry_after,
            }) => {
                if retryable && lease.retries < lease.max_retries {
                    let delay = retry_after.unwrap_or_else(|| {
                        self.routing
                            .policy(&lease.name)
                            .retry
                            .delay(lease.retries, rand::random::<f64>())
                    });
                    Resolution::Retry {
                        kind,
                        message,
                        run_at: after(self.clock.now(), delay),
                    }
                } else {
                    Resolution::Failed { kind, message }
                }
            }
        }
    }
}

fn message_kind(message: &WorkerMessage) -> &'static str {
    match message {
        WorkerMessage::Hello(_) => "hello",
        WorkerMessage::Credit(_) => "credit",
        WorkerMessage::Started { .. } => "started",
        WorkerMessage::Progress { .. } => "progress",
        WorkerMessage::Result { .. } => "result",
        WorkerMessage::Heartbeat(_) => "heartbeat",
        WorkerMessage::SubmitChildren { .. } => "submit_children",
        WorkerMessage::EmitRecords { .. } => "emit_records",
        WorkerMessage::QueryRecords { .. } => "query_records",
        WorkerMessage::Release(_) => "release",
        WorkerMessage::ControlReply { .. } => "control_reply",
    }
}
