//! The worker's messages after its hello, one function each. An error ends the stream.

use std::sync::Arc;

use futures::stream::FuturesUnordered;

use super::super::batcher::BatchError;
use super::super::sessions::{HeldLease, Session};
use super::super::{AttemptUpdate, Coordinator, CoordinatorError};
use super::settle::{PendingWrite, Written, record_outcome};
use crate::clock::after;
use crate::domain::{
    CoordinatorMessage, Failure, LeaseToken, Outcome, ProgressReport, RecordEntry, Refusal,
    RequestError, TaskId, WorkerMessage, WorkerStats,
};
use crate::store::{
    Completion, ProgressWrite, RUNNING_LEASE_MARGIN, RecordWrite, Resolution, Start,
};

/// The writes a session has under way.
pub(super) type Pending = FuturesUnordered<PendingWrite>;

/// Handles one message.
pub(super) async fn handle(
    coordinator: &Arc<Coordinator>,
    session: &Session,
    message: WorkerMessage,
    pending: &mut Pending,
) -> Result<(), CoordinatorError> {
    match message {
        WorkerMessage::Hello(_) => Err(CoordinatorError::FailedPrecondition(
            "hello was already sent on this stream".to_owned(),
        )),
        WorkerMessage::Credit(grant) => {
            session.grant(grant);
            coordinator.signal.wake();
            Ok(())
        }
        WorkerMessage::Started { token, at } => {
            started(coordinator, session, token, at).await;
            Ok(())
        }
        WorkerMessage::Progress { token, report } => {
            progress(coordinator, session, token, report, pending).await
        }
        WorkerMessage::EmitRecords { token, records } => {
            emit_records(coordinator, session, token, records, pending).await
        }
        WorkerMessage::SlowDown { token, key } => {
            if session.lease(&token).is_some() {
                coordinator.slow_down(&key).await;
            }
            Ok(())
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
                        .map_err(RequestError::from)
                }
            };
            session
                .send(CoordinatorMessage::ChildrenSubmitted { request_id, result })
                .await;
            Ok(())
        }
        WorkerMessage::QueryRecords {
            request_id,
            token,
            kind,
            status,
        } => {
            let result = query_records(coordinator, session, token, &kind, status.as_deref()).await;
            session
                .send(CoordinatorMessage::RecordsQueried { request_id, result })
                .await;
            Ok(())
        }
        WorkerMessage::Result { token, outcome } => {
            result(coordinator, session, token, outcome, pending).await;
            Ok(())
        }
        WorkerMessage::Heartbeat(stats) => {
            heartbeat(coordinator, session, stats).await;
            Ok(())
        }
        WorkerMessage::Release(tokens) => {
            let releasable = session.take_releasable(&tokens);
            coordinator.store.release(session.id, &releasable).await?;
            coordinator.signal.wake();
            Ok(())
        }
        WorkerMessage::ControlReply { request_id, detail } => {
            session.resolve_control(request_id, detail);
            Ok(())
        }
    }
}

/// An attempt started: its lease now runs to the hard time limit.
async fn started(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    at: chrono::DateTime<chrono::Utc>,
) {
    let Some(lease) = session.mark_running(&token, at) else {
        tracing::debug!(worker = %session.worker(), %token, "start of a lease not held");
        return;
    };
    let waited = (at - lease.run_at).to_std().unwrap_or_default();
    metrics::histogram!("celeritas_task_queue_wait_seconds", "queue" => lease.queue.to_string())
        .record(waited.as_secs_f64());
    let start = Start {
        token,
        worker: session.worker().clone(),
        at,
        lease_expires_at: after(coordinator.clock.now(), coordinator.settings.lease_ttl)
            .min(after(at, lease.hard_time_limit + RUNNING_LEASE_MARGIN)),
    };
    // The answer is not awaited: a start that is not written changes nothing a completion does
    // not change too.
    drop(
        coordinator
            .attempts
            .enqueue(AttemptUpdate::Started(start))
            .await,
    );
}

/// A running task's progress: written with the attempts, then its tree marked changed.
async fn progress(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    report: ProgressReport,
    pending: &mut Pending,
) -> Result<(), CoordinatorError> {
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
    write_for_tree(
        coordinator,
        AttemptUpdate::Progress(write),
        lease.root_id,
        pending,
    )
    .await;
    Ok(())
}

/// A running task's records: written with the attempts, then its tree marked changed.
async fn emit_records(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    records: Vec<RecordEntry>,
    pending: &mut Pending,
) -> Result<(), CoordinatorError> {
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
    write_for_tree(
        coordinator,
        AttemptUpdate::Records(write),
        lease.root_id,
        pending,
    )
    .await;
    Ok(())
}

/// Queues a write whose landing changes the tree of `root`.
async fn write_for_tree(
    coordinator: &Coordinator,
    update: AttemptUpdate,
    root: TaskId,
    pending: &mut Pending,
) {
    let answer = coordinator.attempts.enqueue(update).await;
    pending.push(Box::pin(async move {
        let _ = answer.await;
        Written::TreeChange(root)
    }));
}

/// The keys a task's tree recorded, once everything the worker sent before the query is
/// written.
async fn query_records(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    kind: &str,
    status: Option<&str>,
) -> Result<Vec<String>, RequestError> {
    let lease = session.lease(&token).ok_or_else(|| not_held(token))?;
    let _ = coordinator
        .attempts
        .enqueue(AttemptUpdate::Barrier)
        .await
        .await;
    coordinator
        .store
        .recorded_keys(lease.root_id, kind, status)
        .await
        .map_err(|error| CoordinatorError::from(error).into())
}

/// An attempt ended: its completion is resolved (retry or not) and queued; the worker is
/// answered once it is durable.
async fn result(
    coordinator: &Coordinator,
    session: &Session,
    token: LeaseToken,
    outcome: Outcome,
    pending: &mut Pending,
) {
    if session.lease(&token).is_some_and(|lease| lease.completing) {
        // Sent again while the first copy is being written: that write answers it.
        return;
    }
    let Some(lease) = session.begin_completion(&token) else {
        let refused = CoordinatorMessage::ResultAck {
            token,
            accepted: false,
            reason: format!("lease {token} is not held by this worker"),
        };
        session.send(refused).await;
        return;
    };
    // Records the attempt emitted were refused: its result must not commit as if they had been
    // written.
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
    if let Resolution::Retry { run_at, .. } | Resolution::Requeued { run_at } =
        &completion.resolution
    {
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

/// The worker is alive; its counters are kept for `inspect stats`.
async fn heartbeat(coordinator: &Coordinator, session: &Session, stats: Option<WorkerStats>) {
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

/// Answers a message that cannot be taken as it is; false when the refusal ends the stream.
pub(super) async fn refuse(session: &Session, refusal: Refusal) -> bool {
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

fn not_held(token: LeaseToken) -> RequestError {
    RequestError {
        message: format!("lease {token} is not held by this worker"),
        retryable: false,
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
