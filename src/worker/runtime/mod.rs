//! The worker's event loop. One task owns all the worker's state (leases waiting, tasks running,
//! results not yet acknowledged) across reconnects, so a broken stream loses nothing the worker
//! holds: on the next stream it reports its leases, keeps those the coordinator confirms, and
//! sends its results again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::task::{ContextRequest, ContextSender, Registry, SubmittedReply};
use super::{WorkerError, WorkerOptions, WorkerSummary};
use crate::domain::{
    ControlCommand, CoordinatorMessage, Hello, Lease, LeaseToken, Outcome, RecordEntry,
    RequestError, WorkerMessage, WorkerStats,
};
use crate::grpc::{LinkError, WorkerLink};

mod execution;
mod outbox;
#[cfg(test)]
mod tests;

/// Heartbeats until the coordinator says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a stopping worker keeps trying to deliver results after its tasks ended.
const FINAL_DELIVERY_GRACE: Duration = Duration::from_secs(10);
/// Requests from running tasks waiting for the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// The most records one message carries.
const RECORDS_PER_MESSAGE: usize = 1_000;
/// Messages waiting in the outbox beyond which running tasks' requests wait too.
const OUTBOX_HIGH_WATER: usize = 4096;
/// A result not acknowledged this long after it was sent is sent again (with its records) on
/// the same stream. The coordinator ignores a result whose write is under way, and answers
/// one it already settled as no longer held.
const RESEND_UNACKED_AFTER: Duration = Duration::from_secs(30);

/// A task's request waiting for the coordinator's answer.
enum Pending {
    Children(SubmittedReply),
    Query(oneshot::Sender<Result<Vec<String>, RequestError>>),
}

impl Pending {
    /// Answers the task with `error` instead of the coordinator's answer.
    fn answer_with(self, error: RequestError) {
        match self {
            Pending::Children(reply) => {
                let _ = reply.send(Err(error));
            }
            Pending::Query(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A task running on this worker.
struct RunningTask {
    token: LeaseToken,
    name: String,
    stop: CancellationToken,
    abort: AbortHandle,
    /// The coordinator no longer counts this lease as ours: drop its result.
    orphaned: bool,
}

/// A result waiting for the coordinator's acknowledgement.
struct Unacked {
    outcome: Outcome,
    sent_at: Instant,
}

/// An open stream.
struct Link {
    outbound: mpsc::Sender<WorkerMessage>,
    /// Messages that must arrive, waiting for room in `outbound`, in order. Nothing that must
    /// arrive is dropped while the stream is up.
    outbox: VecDeque<WorkerMessage>,
    inbound: futures::stream::BoxStream<'static, Result<CoordinatorMessage, LinkError>>,
    welcomed: bool,
    heartbeat: tokio::time::Interval,
}

enum Connection {
    Down { retry_at: Instant },
    Connecting(BoxFuture<'static, Result<WorkerLink, LinkError>>),
    Up(Link),
}

enum Event {
    Reconnect,
    Connected(Result<WorkerLink, LinkError>),
    Message(Option<Result<CoordinatorMessage, LinkError>>),
    Heartbeat,
    /// Room opened in the stream and the outbox moved on.
    Flushed,
    Finished(tokio::task::Id, Result<Outcome, tokio::task::JoinError>),
    Request(LeaseToken, ContextRequest),
    Shutdown,
    DrainDeadline,
}

/// The worker's state.
pub(super) struct Runtime {
    options: WorkerOptions,
    registry: Registry,
    waiting: VecDeque<Lease>,
    running: HashMap<tokio::task::Id, RunningTask>,
    tasks: JoinSet<Outcome>,
    unacked: HashMap<LeaseToken, Unacked>,
    request_sender: ContextSender,
    request_receiver: mpsc::Receiver<(LeaseToken, ContextRequest)>,
    /// Requests sent to the coordinator, by request id.
    pending: HashMap<u64, Pending>,
    next_request: u64,
    /// Records of leases whose result is not acknowledged yet, to send again after a
    /// reconnect (writing a key twice is harmless).
    records: HashMap<LeaseToken, Vec<RecordEntry>>,
    /// Attempts by task name, for stats.
    processed_by_name: BTreeMap<String, u64>,
    failed_by_name: BTreeMap<String, u64>,
    started_at: chrono::DateTime<Utc>,
    connection: Connection,
    backoff: Duration,
    drain_deadline: Option<Instant>,
    summary: WorkerSummary,
}

impl Runtime {
    pub(super) fn new(options: WorkerOptions, registry: Registry) -> Self {
        let (request_sender, request_receiver) = mpsc::channel(REQUEST_CAPACITY);
        Self {
            options,
            registry,
            waiting: VecDeque::new(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            unacked: HashMap::new(),
            request_sender,
            request_receiver,
            pending: HashMap::new(),
            next_request: 0,
            records: HashMap::new(),
            processed_by_name: BTreeMap::new(),
            failed_by_name: BTreeMap::new(),
            started_at: Utc::now(),
            connection: Connection::Down {
                retry_at: Instant::now(),
            },
            backoff: Duration::from_millis(100),
            drain_deadline: None,
            summary: WorkerSummary::default(),
        }
    }

    /// Runs until drained (by `shutdown` or the coordinator), or until the coordinator refuses
    /// the worker's hello.
    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
    ) -> Result<WorkerSummary, WorkerError> {
        loop {
            if self.is_drained() {
                self.close().await;
                return Ok(self.summary);
            }
            if self
                .drain_deadline
                .is_some_and(|deadline| Instant::now() > deadline + FINAL_DELIVERY_GRACE)
            {
                tracing::warn!(
                    undelivered = self.unacked.len(),
                    "stopping with results the coordinator has not acknowledged; their tasks will run again"
                );
                return Ok(self.summary);
            }
            let event = self.next_event(&shutdown).await;
            self.handle(event)?;
        }
    }

    fn is_drained(&self) -> bool {
        self.drain_deadline.is_some()
            && self.waiting.is_empty()
            && self.running.is_empty()
            && self.unacked.is_empty()
            && !matches!(&self.connection, Connection::Up(link) if !link.outbox.is_empty())
    }

    async fn next_event(&mut self, shutdown: &CancellationToken) -> Event {
        let draining = self.drain_deadline.is_some();
        let deadline = self.drain_deadline;
        let has_tasks = !self.tasks.is_empty();
        // While the stream cannot take what the worker has to say, tasks wait to say more.
        let room = match &self.connection {
            Connection::Up(link) => link.outbox.len() < OUTBOX_HIGH_WATER,
            _ => true,
        };
        tokio::select! {
            _ = shutdown.cancelled(), if !draining => Event::Shutdown,
            _ = sleep_until_option(deadline), if has_tasks => Event::DrainDeadline,
            Some(joined) = self.tasks.join_next_with_id(), if has_tasks => match joined {
                Ok((id, outcome)) => Event::Finished(id, Ok(outcome)),
                Err(error) => Event::Finished(error.id(), Err(error)),
            },
            Some((token, request)) = self.request_receiver.recv(), if room => Event::Request(token, request),
            event = connection_event(&mut self.connection) => event,
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), WorkerError> {
        match event {
            Event::Reconnect => {
                let hello = self.hello();
                let target = self.options.coordinator.clone();
                self.connection = Connection::Connecting(Box::pin(async move {
                    WorkerLink::open_to(&target, hello).await
                }));
            }
            Event::Connected(Ok(link)) => {
                let mut heartbeat = tokio::time::interval(DEFAULT_HEARTBEAT);
                heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                self.connection = Connection::Up(Link {
                    outbound: link.outbound,
                    outbox: VecDeque::new(),
                    inbound: link.inbound,
                    welcomed: false,
                    heartbeat,
                });
            }
            Event::Connected(Err(error)) => self.lost(error)?,
            Event::Message(Some(Ok(message))) => self.on_message(message),
            Event::Message(Some(Err(error))) => self.lost(error)?,
            Event::Message(None) => {
                tracing::info!("the coordinator closed the stream; reconnecting");
                self.fail_pending("the coordinator closed the stream");
                self.backoff = Duration::from_millis(100);
                self.connection = Connection::Down {
                    retry_at: Instant::now() + self.backoff,
                };
            }
            Event::Heartbeat => {
                let stats = self.stats();
                self.send_or_drop(WorkerMessage::Heartbeat(Some(stats)));
                self.resend_overdue_results();
            }
            Event::Flushed => {}
            Event::Finished(id, outcome) => self.on_finished(id, outcome),
            Event::Request(token, request) => self.on_request(token, request),
            Event::Shutdown => self.drain("shutdown requested"),
            Event::DrainDeadline => {
                tracing::warn!(
                    running = self.running.len(),
                    "tasks did not finish within the shutdown timeout; aborting them"
                );
                for task in self.running.values() {
                    task.abort.abort();
                }
            }
        }
        Ok(())
    }

    /// The stream failed or could not be opened. A refusal of the hello is the worker's own
    /// configuration and ends it; anything else is retried with backoff.
    fn lost(&mut self, error: LinkError) -> Result<(), WorkerError> {
        if let LinkError::Connect(crate::grpc::ClientError::BadUrl { .. }) = &error {
            return Err(WorkerError::Refused(error.to_string()));
        }
        let welcomed = matches!(&self.connection, Connection::Up(link) if link.welcomed);
        if let LinkError::Ended { kind, message }
        | LinkError::Connect(crate::grpc::ClientError::Status { kind, message }) = &error
            && !welcomed
            && matches!(
                kind,
                crate::domain::ErrorKind::InvalidArgument
                    | crate::domain::ErrorKind::FailedPrecondition
                    | crate::domain::ErrorKind::PermissionDenied
                    | crate::domain::ErrorKind::Unauthenticated
            )
        {
            return Err(WorkerError::Refused(message.clone()));
        }
        tracing::warn!(%error, retry_in = ?self.backoff, "no stream to the coordinator");
        self.fail_pending("the stream to the coordinator broke");
        self.connection = Connection::Down {
            retry_at: Instant::now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.options.reconnect_backoff_max);
        Ok(())
    }

    fn on_message(&mut self, message: CoordinatorMessage) {
        match message {
            CoordinatorMessage::Welcome {
                coordinator_id,
                heartbeat_interval,
                kept_leases,
            } => self.on_welcome(coordinator_id, heartbeat_interval, kept_leases),
            CoordinatorMessage::Lease(lease) => {
                if self.drain_deadline.is_some() {
                    self.send(WorkerMessage::Release(vec![lease.token]));
                    return;
                }
                let held = self.waiting.len() + self.running.len();
                if held >= self.options.capacity() as usize {
                    tracing::error!(token = %lease.token, held, "the coordinator sent a lease beyond this worker's capacity; giving it back");
                    self.send(WorkerMessage::Release(vec![lease.token]));
                    return;
                }
                self.summary.peak_leases = self.summary.peak_leases.max(held + 1);
                self.waiting.push_back(lease);
                self.start_waiting();
            }
            CoordinatorMessage::Cancel {
                token,
                terminate,
                reason,
            } => self.on_cancel(token, terminate, &reason),
            CoordinatorMessage::Control {
                request_id,
                command,
            } => match command {
                ControlCommand::Ping => self.send(WorkerMessage::ControlReply {
                    request_id,
                    detail: "pong".to_owned(),
                }),
                ControlCommand::Drain => {
                    self.send(WorkerMessage::ControlReply {
                        request_id,
                        detail: "draining".to_owned(),
                    });
                    self.drain("the coordinator asked this worker to drain");
                }
                ControlCommand::Unsupported => self.send(WorkerMessage::ControlReply {
                    request_id,
                    detail: "unsupported: this worker does not know the command".to_owned(),
                }),
                ControlCommand::CloseIdleConnections => {
                    let detail = self.registry.close_idle_connections();
                    tracing::info!(%detail, "closed idle connections");
                    self.send(WorkerMessage::ControlReply { request_id, detail });
                }
            },
            CoordinatorMessage::ChildrenSubmitted { request_id, result } => {
                if let Some(Pending::Children(reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(result);
                }
            }
            CoordinatorMessage::RecordsQueried { request_id, result } => {
                if let Some(Pending::Query(reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(result);
                }
            }
            CoordinatorMessage::ResultAck {
                token,
                accepted,
                reason,
            } => {
                self.unacked.remove(&token);
                self.records.remove(&token);
                if !accepted {
                    tracing::info!(%token, %reason, "the coordinator refused a result");
                }
            }
        }
    }

    fn on_welcome(
        &mut self,
        coordinator_id: String,
        heartbeat_interval: Duration,
        kept_leases: Vec<LeaseToken>,
    ) {
        tracing::info!(coordinator = %coordinator_id, kept = kept_leases.len(), "connected");
        self.backoff = Duration::from_millis(100);
        if let Connection::Up(link) = &mut self.connection {
            link.welcomed = true;
            link.heartbeat = tokio::time::interval(heartbeat_interval);
            link.heartbeat
                .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // Leases the coordinator did not keep are someone else's now.
        let kept: std::collections::HashSet<LeaseToken> = kept_leases.into_iter().collect();
        self.waiting.retain(|lease| kept.contains(&lease.token));
        for task in self.running.values_mut() {
            if !kept.contains(&task.token) {
                tracing::info!(token = %task.token, "lease lost while disconnected; aborting its task");
                task.orphaned = true;
                task.abort.abort();
            }
        }
        self.unacked.retain(|token, _| {
            let still_ours = kept.contains(token);
            if !still_ours {
                tracing::info!(%token, "the coordinator did not keep this lease: its result is refused and dropped");
            }
            still_ours
        });
        self.records.retain(|token, _| kept.contains(token));
        let records: Vec<(LeaseToken, Vec<RecordEntry>)> = self
            .records
            .iter()
            .map(|(token, records)| (*token, records.clone()))
            .collect();
        for (token, records) in records {
            self.send_records(token, records);
        }
        let results: Vec<(LeaseToken, Outcome)> = self
            .unacked
            .iter_mut()
            .map(|(token, unacked)| {
                unacked.sent_at = Instant::now();
                (*token, unacked.outcome.clone())
            })
            .collect();
        for (token, outcome) in results {
            self.send(WorkerMessage::Result { token, outcome });
        }
        if self.drain_deadline.is_some() {
            let waiting: Vec<LeaseToken> =
                self.waiting.drain(..).map(|lease| lease.token).collect();
            if !waiting.is_empty() {
                self.send(WorkerMessage::Release(waiting));
            }
            return;
        }
        let held = u32::try_from(self.waiting.len() + self.running.len()).unwrap_or(u32::MAX);
        let grant = self.options.capacity().saturating_sub(held);
        if grant > 0 {
            self.send(WorkerMessage::Credit(grant));
        }
        self.start_waiting();
    }

    fn on_cancel(&mut self, token: LeaseToken, terminate: bool, reason: &str) {
        if let Some(position) = self.waiting.iter().position(|lease| lease.token == token) {
            self.waiting.remove(position);
            tracing::info!(%token, %reason, "cancelled before it started");
            // Given back, so the coordinator stops counting it against this worker.
            self.send(WorkerMessage::Release(vec![token]));
            self.grant_one();
            return;
        }
        if let Some(task) = self.running.values().find(|task| task.token == token) {
            tracing::info!(%token, %reason, terminate, "cancelling a running task");
            task.stop.cancel();
            if terminate {
                task.abort.abort();
            }
        }
    }

    /// The worker's counters, for heartbeats.
    fn stats(&self) -> WorkerStats {
        WorkerStats {
            processed: self.processed_by_name.clone(),
            failed: self.failed_by_name.clone(),
            memory_rss_bytes: resident_memory_bytes(),
            started_at: Some(self.started_at),
        }
    }

    /// Stops taking work: gives back waiting leases and lets running tasks finish until the
    /// shutdown timeout.
    fn drain(&mut self, why: &str) {
        if self.drain_deadline.is_some() {
            return;
        }
        tracing::info!(
            reason = why,
            running = self.running.len(),
            waiting = self.waiting.len(),
            "draining"
        );
        self.drain_deadline = Some(Instant::now() + self.options.shutdown_timeout);
        let waiting: Vec<LeaseToken> = self.waiting.drain(..).map(|lease| lease.token).collect();
        if !waiting.is_empty() {
            self.send(WorkerMessage::Release(waiting));
        }
    }

    /// Closes the stream cleanly and waits briefly for the coordinator to end it.
    async fn close(&mut self) {
        let connection = std::mem::replace(
            &mut self.connection,
            Connection::Down {
                retry_at: Instant::now(),
            },
        );
        if let Connection::Up(link) = connection {
            let Link {
                outbound,
                mut inbound,
                ..
            } = link;
            drop(outbound);
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while inbound.next().await.is_some() {}
            })
            .await;
        }
    }

    fn hello(&self) -> Hello {
        let mut held: Vec<LeaseToken> = self.waiting.iter().map(|lease| lease.token).collect();
        held.extend(
            self.running
                .values()
                .filter(|task| !task.orphaned)
                .map(|task| task.token),
        );
        held.extend(self.unacked.keys().copied());
        held.sort();
        held.dedup();
        Hello {
            worker_id: self.options.worker_id.clone(),
            hostname: self.options.hostname.clone(),
            pid: std::process::id(),
            queues: self.options.queues.clone(),
            concurrency: self.options.concurrency,
            prefetch_multiplier: self.options.prefetch_multiplier,
            task_names: self.registry.names(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            held_leases: held,
        }
    }
}

/// This process' resident memory, from /proc (0 where there is none).
fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

async fn connection_event(connection: &mut Connection) -> Event {
    match connection {
        Connection::Down { retry_at } => {
            tokio::time::sleep_until(*retry_at).await;
            Event::Reconnect
        }
        Connection::Connecting(opening) => Event::Connected(opening.await),
        Connection::Up(link) => tokio::select! {
            message = link.inbound.next() => Event::Message(message),
            _ = link.heartbeat.tick(), if link.welcomed => Event::Heartbeat,
            permit = link.outbound.reserve(), if !link.outbox.is_empty() => {
                match permit {
                    Ok(permit) => {
                        if let Some(message) = link.outbox.pop_front() {
                            permit.send(message);
                        }
                        // Whatever else fits goes now too, in order.
                        while let Some(message) = link.outbox.pop_front() {
                            match link.outbound.try_send(message) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(message)) => {
                                    link.outbox.push_front(message);
                                    break;
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => {
                                    link.outbox.clear();
                                    break;
                                }
                            }
                        }
                    }
                    // The stream is gone; its end arrives on `inbound`.
                    Err(_) => link.outbox.clear(),
                }
                Event::Flushed
            }
        },
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
