//! The coordinator's side of one worker stream: the handshake, then every message until the
//! stream ends, then giving back what the worker held.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::sessions::{Outbound, Session, StreamBuffer};
use super::{Coordinator, CoordinatorError};
use crate::clock::after;
use crate::domain::{Caller, CoordinatorMessage, Hello, Refusal, ValidationError, WorkerMessage};
use crate::store::WorkerRegistration;

mod messages;
mod settle;

use messages::{Pending, handle, refuse};
use settle::settle;

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

/// Serves one worker stream until it ends.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    caller: Caller,
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
    let session = match open_session(&coordinator, &caller, hello, outbound.clone(), buffer).await {
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
    let end = run_session(&coordinator, &caller, &session, &mut inbound).await;
    close_session(&coordinator, &session, end).await;
}

/// Checks the hello, adopts the worker's leases and says welcome.
async fn open_session(
    coordinator: &Arc<Coordinator>,
    caller: &Caller,
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
    check_credentials(coordinator, caller, &hello).await?;
    let mut queues = Vec::with_capacity(hello.queues.len());
    for (index, queue) in hello.queues.iter().enumerate() {
        let priority = coordinator.queue_priority(&format!("hello.queues[{index}]"), queue)?;
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

/// Refuses a hello whose worker id is bound to another credential, or that asks for a queue
/// its identity may not consume. The first credential a worker id is presented with keeps it.
async fn check_credentials(
    coordinator: &Coordinator,
    caller: &Caller,
    hello: &Hello,
) -> Result<(), CoordinatorError> {
    if let Some(allowed) = coordinator.access.worker_queues(caller) {
        for (index, queue) in hello.queues.iter().enumerate() {
            if !allowed.contains(queue) {
                return Err(CoordinatorError::PermissionDenied(format!(
                    "hello.queues[{index}]: {} may not consume the queue {queue:?} ([auth] \
                     worker_queues)",
                    caller.identity().map_or_else(
                        || "a worker without credentials".to_owned(),
                        |name| format!("the identity {name:?}")
                    )
                )));
            }
        }
    }
    let credential = caller.credential();
    let bound = coordinator
        .store
        .bind_worker_credential(
            &hello.worker_id,
            credential.as_deref(),
            coordinator.clock.now(),
        )
        .await?;
    match bound {
        Some(bound) if Some(&bound) != credential.as_ref() => {
            Err(CoordinatorError::PermissionDenied(format!(
                "hello.worker_id: the worker id {:?} belongs to another credential; a worker \
                 connects with the credential it first connected with, or under another id",
                hello.worker_id.as_str()
            )))
        }
        _ => Ok(()),
    }
}

/// Handles the worker's messages until the stream ends.
async fn run_session(
    coordinator: &Arc<Coordinator>,
    caller: &Caller,
    session: &Session,
    inbound: &mut Inbound,
) -> End {
    let mut pending = Pending::new();
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
                // A revoked token ends the streams it opened; the worker's leases wait out
                // their grace period for a worker that may still hold them.
                if !coordinator.access.still_accepts(caller) {
                    tracing::warn!(worker = %session.worker(), "the worker's token was revoked; ending its stream");
                    session
                        .fail(CoordinatorError::Unauthenticated(
                            "authorization: the token this stream opened with was revoked"
                                .to_owned(),
                        ))
                        .await;
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
        WorkerMessage::SlowDown { .. } => "slow_down",
        WorkerMessage::QueryRecords { .. } => "query_records",
        WorkerMessage::Release(_) => "release",
        WorkerMessage::ControlReply { .. } => "control_reply",
    }
}
