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

use super::task::{
    ContextRequest, ContextSender, Registry, Retry, SubmittedReply, TaskContext, TaskHandler,
};
use super::{WorkerError, WorkerOptions, WorkerSummary};
use crate::domain::{
    ControlCommand, CoordinatorMessage, Failure, Hello, JsonText, Lease, LeaseToken, Outcome,
    RecordEntry, RequestError, TimeLimits, WorkerMessage, WorkerStats,
};
use crate::grpc::{LinkError, WorkerLink};

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
                let url = self.options.coordinator_url.clone();
                self.connection =
                    Connection::Connecting(Box::pin(
                        async move { WorkerLink::open(&url, hello).await },
                    ));
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

    fn on_finished(
        &mut self,
        id: tokio::task::Id,
        outcome: Result<Outcome, tokio::task::JoinError>,
    ) {
        // Whatever the task asked for before it returned (its last records, progress) is still
        // in the request channel: send it before the result, which the coordinator's fence
        // would otherwise let in first and then refuse the records.
        while let Ok((token, request)) = self.request_receiver.try_recv() {
            self.on_request(token, request);
        }
        let Some(task) = self.running.remove(&id) else {
            return;
        };
        self.summary.processed += 1;
        *self.processed_by_name.entry(task.name.clone()).or_default() += 1;
        if task.orphaned {
            self.records.remove(&task.token);
            self.start_waiting();
            return;
        }
        let outcome = outcome.unwrap_or_else(|error| {
            let (kind, message, retryable) = if error.is_panic() {
                ("panic", panic_message(error), false)
            } else {
                (
                    "aborted",
                    "the task was aborted before it finished".to_owned(),
                    self.drain_deadline.is_some(),
                )
            };
            Outcome::Failed(Failure {
                kind: kind.to_owned(),
                message,
                retryable,
                retry_after: None,
            })
        });
        if matches!(outcome, Outcome::Failed(_)) {
            self.summary.failed += 1;
            *self.failed_by_name.entry(task.name.clone()).or_default() += 1;
        }
        self.finish(task.token, outcome);
        if self
            .options
            .max_tasks_per_child
            .is_some_and(|limit| self.summary.processed >= limit)
            && self.drain_deadline.is_none()
        {
            self.summary.recycle = true;
            self.drain("recycling: the worker ran its --max-tasks-per-child tasks");
        }
        self.start_waiting();
    }

    /// Records a result and sends it; it stays until the coordinator acknowledges it.
    fn finish(&mut self, token: LeaseToken, outcome: Outcome) {
        self.unacked.insert(
            token,
            Unacked {
                outcome: outcome.clone(),
                sent_at: Instant::now(),
            },
        );
        self.send(WorkerMessage::Result { token, outcome });
        self.grant_one();
    }

    fn grant_one(&mut self) {
        if self.drain_deadline.is_none() {
            self.send(WorkerMessage::Credit(1));
        }
    }

    /// Starts waiting leases while there is room.
    fn start_waiting(&mut self) {
        while self.running.len() < self.options.concurrency as usize {
            let Some(lease) = self.waiting.pop_front() else {
                return;
            };
            if lease
                .expires_at
                .is_some_and(|expires_at| expires_at <= Utc::now())
            {
                // Given back, the coordinator marks it expired instead of leasing it again.
                self.send(WorkerMessage::Release(vec![lease.token]));
                self.grant_one();
                continue;
            }
            let Some(handler) = self.registry.get(&lease.name) else {
                let message = format!(
                    "worker {} does not run task {:?}; it runs {}",
                    self.options.worker_id,
                    lease.name.as_str(),
                    self.registry
                        .names()
                        .iter()
                        .map(|name| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.summary.processed += 1;
                self.summary.failed += 1;
                self.finish(
                    lease.token,
                    Outcome::Failed(Failure {
                        kind: "unregistered".to_owned(),
                        message,
                        retryable: false,
                        retry_after: None,
                    }),
                );
                continue;
            };
            self.log_execution(&lease);
            let stop = CancellationToken::new();
            let context = TaskContext::new(&lease, stop.clone(), self.request_sender.clone());
            let args = lease.args.to_value();
            let abort = self.tasks.spawn(execute(
                handler,
                context,
                args,
                lease.time_limits,
                stop.clone(),
            ));
            self.running.insert(
                abort.id(),
                RunningTask {
                    token: lease.token,
                    name: lease.name.to_string(),
                    stop,
                    abort,
                    orphaned: false,
                },
            );
            self.send(WorkerMessage::Started {
                token: lease.token,
                at: Utc::now(),
            });
        }
    }

    /// A running task asks something of the coordinator.
    fn on_request(&mut self, token: LeaseToken, request: ContextRequest) {
        match request {
            ContextRequest::Progress(report) => {
                self.send_or_drop(WorkerMessage::Progress { token, report })
            }
            ContextRequest::Records(records) => {
                self.records
                    .entry(token)
                    .or_default()
                    .extend(records.iter().cloned());
                self.send_records(token, records);
            }
            ContextRequest::SubmitChildren {
                children,
                callback,
                reply,
            } => {
                if !self.connected() {
                    let _ = reply.send(Err(not_connected()));
                    return;
                }
                let request_id = self.request_id();
                self.pending.insert(request_id, Pending::Children(reply));
                self.send(WorkerMessage::SubmitChildren {
                    request_id,
                    token,
                    children,
                    callback,
                });
            }
            ContextRequest::QueryRecords {
                kind,
                status,
                reply,
            } => {
                if !self.connected() {
                    let _ = reply.send(Err(not_connected()));
                    return;
                }
                let request_id = self.request_id();
                self.pending.insert(request_id, Pending::Query(reply));
                self.send(WorkerMessage::QueryRecords {
                    request_id,
                    token,
                    kind,
                    status,
                });
            }
        }
    }

    fn send_records(&mut self, token: LeaseToken, records: Vec<RecordEntry>) {
        for chunk in records.chunks(RECORDS_PER_MESSAGE) {
            self.send(WorkerMessage::EmitRecords {
                token,
                records: chunk.to_vec(),
            });
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    fn connected(&self) -> bool {
        matches!(&self.connection, Connection::Up(link) if link.welcomed)
    }

    /// Requests in flight get no answer once their stream is gone.
    fn fail_pending(&mut self, why: &str) {
        for (_, pending) in self.pending.drain() {
            let error = RequestError {
                message: why.to_owned(),
                retryable: true,
            };
            match pending {
                Pending::Children(reply) => {
                    let _ = reply.send(Err(error));
                }
                Pending::Query(reply) => {
                    let _ = reply.send(Err(error));
                }
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

    /// Appends the attempt to the execution log, when there is one: one JSON line per attempt
    /// started, for audits and for tests that count executions.
    fn log_execution(&self, lease: &Lease) {
        let Some(path) = &self.options.execution_log else {
            return;
        };
        let line = format!(
            "{}\n",
            serde_json::json!({
                "task_id": lease.token.task_id.to_string(),
                "attempt": lease.token.attempt,
                "name": lease.name.as_str(),
                "worker_id": self.options.worker_id.as_str(),
                "at": Utc::now().to_rfc3339(),
            })
        );
        // One write of a short line to a file opened for appending lands whole.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the execution log");
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

    /// Sends a message that must arrive, if a stream is up: when the stream has no room it
    /// waits in the outbox, in order. Without a stream it is dropped: results and records are
    /// kept until acknowledged and sent again after the next welcome, and the hello reports
    /// the leases held.
    fn send(&mut self, message: WorkerMessage) {
        let Connection::Up(link) = &mut self.connection else {
            return;
        };
        if !link.welcomed {
            return;
        }
        if !link.outbox.is_empty() {
            link.outbox.push_back(message);
            return;
        }
        match link.outbound.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => link.outbox.push_back(message),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("the stream to the coordinator is gone");
            }
        }
    }

    /// Sends a message that may be lost (a heartbeat, a progress tick): dropped when the
    /// stream has no room right now.
    fn send_or_drop(&mut self, message: WorkerMessage) {
        if let Connection::Up(link) = &self.connection
            && link.welcomed
            && link.outbox.is_empty()
            && link.outbound.try_send(message).is_err()
        {
            tracing::debug!(
                "the stream to the coordinator is full; a heartbeat or progress tick was dropped"
            );
        }
    }

    /// Sends again, with their records, the results the coordinator has not acknowledged for
    /// `RESEND_UNACKED_AFTER`, should one have gone astray on a stream that stayed up.
    fn resend_overdue_results(&mut self) {
        if !self.connected() {
            return;
        }
        let overdue: Vec<(LeaseToken, Outcome)> = self
            .unacked
            .iter_mut()
            .filter(|(_, unacked)| unacked.sent_at.elapsed() >= RESEND_UNACKED_AFTER)
            .map(|(token, unacked)| {
                unacked.sent_at = Instant::now();
                (*token, unacked.outcome.clone())
            })
            .collect();
        for (token, outcome) in overdue {
            tracing::info!(%token, "a result is not acknowledged yet; sending it again");
            if let Some(records) = self.records.get(&token).cloned() {
                self.send_records(token, records);
            }
            self.send(WorkerMessage::Result { token, outcome });
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

fn not_connected() -> RequestError {
    RequestError {
        message: "the worker is not connected to a coordinator right now".to_owned(),
        retryable: true,
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

/// Runs one attempt under its time limits: at the soft limit the task's stop signal fires; at
/// the hard limit the attempt is abandoned and fails.
async fn execute(
    handler: std::sync::Arc<dyn TaskHandler>,
    context: TaskContext,
    args: serde_json::Value,
    limits: TimeLimits,
    stop: CancellationToken,
) -> Outcome {
    let work = tokio::time::timeout(limits.hard, handler.run(context, args));
    tokio::pin!(work);
    let soft = tokio::time::sleep(limits.soft);
    tokio::pin!(soft);
    let mut soft_passed = false;
    let finished = loop {
        tokio::select! {
            finished = &mut work => break finished,
            () = &mut soft, if !soft_passed => {
                soft_passed = true;
                stop.cancel();
            }
        }
    };
    match finished {
        Ok(Ok(value)) => match JsonText::checked_from_value("result", &value) {
            Ok(result) => Outcome::Succeeded(result),
            Err(error) => Outcome::Failed(Failure::invalid_result(&error)),
        },
        Ok(Err(error)) => Outcome::Failed(Failure {
            kind: error.kind,
            message: error.message,
            retryable: error.retry != Retry::Never,
            retry_after: match error.retry {
                Retry::After(delay) => Some(delay),
                Retry::Never | Retry::Backoff => None,
            },
        }),
        Err(_) => Outcome::Failed(Failure {
            kind: "time_limit".to_owned(),
            message: format!(
                "the hard time limit of {} passed",
                humantime::format_duration(limits.hard)
            ),
            retryable: false,
            retry_after: None,
        }),
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .map(|text| format!("the task panicked: {text}"))
            .unwrap_or_else(|| "the task panicked".to_owned()),
        Err(_) => "the task panicked".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{QueueName, WorkerId};

    fn runtime() -> Runtime {
        Runtime::new(
            WorkerOptions {
                coordinator_url: "http://127.0.0.1:1".to_owned(),
                worker_id: WorkerId::parse("worker", "w1").unwrap(),
                hostname: "test".to_owned(),
                queues: vec![QueueName::parse("queue", "default").unwrap()],
                concurrency: 1,
                prefetch_multiplier: 1,
                shutdown_timeout: Duration::from_secs(1),
                reconnect_backoff_max: Duration::from_secs(1),
                max_tasks_per_child: None,
                execution_log: None,
            },
            Registry::new(),
        )
    }

    /// Puts the runtime on a welcomed stream whose outbound channel holds `room` messages.
    fn up(runtime: &mut Runtime, room: usize) -> mpsc::Receiver<WorkerMessage> {
        let (outbound, receiver) = mpsc::channel(room);
        runtime.connection = Connection::Up(Link {
            outbound,
            outbox: VecDeque::new(),
            inbound: futures::stream::pending().boxed(),
            welcomed: true,
            heartbeat: tokio::time::interval(Duration::from_secs(3600)),
        });
        receiver
    }

    fn credit(message: WorkerMessage) -> u32 {
        match message {
            WorkerMessage::Credit(grant) => grant,
            other => panic!("expected credit, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_stream_delays_what_must_arrive_and_loses_none_of_it() {
        let mut runtime = runtime();
        let mut receiver = up(&mut runtime, 2);
        // Skip the heartbeat's immediate first tick.
        if let Connection::Up(link) = &mut runtime.connection {
            link.heartbeat.tick().await;
        }
        for grant in 0..10 {
            runtime.send(WorkerMessage::Credit(grant));
        }
        // What may be lost is dropped while the stream is full, never queued ahead.
        runtime.send_or_drop(WorkerMessage::Heartbeat(None));
        let mut received = Vec::new();
        while received.len() < 10 {
            while let Ok(message) = receiver.try_recv() {
                received.push(credit(message));
            }
            if received.len() < 10 {
                assert!(matches!(
                    connection_event(&mut runtime.connection).await,
                    Event::Flushed
                ));
            }
        }
        assert_eq!(
            received,
            (0..10).collect::<Vec<_>>(),
            "every message, in order"
        );
        assert!(receiver.try_recv().is_err(), "the heartbeat was dropped");
    }

    #[tokio::test]
    async fn results_not_acknowledged_in_time_are_sent_again_after_their_records() {
        let mut runtime = runtime();
        let mut receiver = up(&mut runtime, 64);
        let token = LeaseToken {
            task_id: crate::domain::TaskId::generate(),
            attempt: 1,
        };
        runtime.records.insert(
            token,
            vec![RecordEntry::parse("r", "item", "a", "ok", "").unwrap()],
        );
        runtime.finish(token, Outcome::Succeeded(JsonText::empty_object()));
        while receiver.try_recv().is_ok() {}
        runtime.resend_overdue_results();
        assert!(receiver.try_recv().is_err(), "not overdue yet");
        if let Some(unacked) = runtime.unacked.get_mut(&token) {
            unacked.sent_at = Instant::now() - RESEND_UNACKED_AFTER;
        }
        runtime.resend_overdue_results();
        assert!(matches!(
            receiver.try_recv(),
            Ok(WorkerMessage::EmitRecords { token: sent, .. }) if sent == token
        ));
        assert!(matches!(
            receiver.try_recv(),
            Ok(WorkerMessage::Result { token: sent, .. }) if sent == token
        ));
    }
}
