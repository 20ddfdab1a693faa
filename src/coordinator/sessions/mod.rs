//! The workers connected to this coordinator, one session per open stream, and what each holds.
//!
//! A session is rebuilt entirely from a worker's hello and the store, so nothing here needs to
//! survive a coordinator restart.
//!
//! Capacity: the dispatcher may send a worker `min(credit, capacity − outstanding)` more leases,
//! where credit is what the worker granted and outstanding counts leases sent and not yet
//! settled. A lease is settled only once its completion is durable (or it was released), so the
//! store never shows a worker holding more than its capacity either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CoordinatorError;

#[cfg(test)]
mod tests;
use crate::domain::{
    CoordinatorMessage, Hello, Lease, LeaseToken, ProgressReport, QueueName, TaskId, TaskName,
    WorkerId, WorkerStats,
};

/// Where a session's messages to its worker go; an `Err` ends the stream with that error.
pub type Outbound = mpsc::Sender<Result<CoordinatorMessage, CoordinatorError>>;

/// What the coordinator remembers about a lease it handed out.
#[derive(Debug, Clone)]
pub struct HeldLease {
    /// The task's name, for its retry policy.
    pub name: TaskName,
    /// Retries already used.
    pub retries: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// The hard time limit, for the running lease's expiry.
    pub hard_time_limit: Duration,
    /// When the worker said it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Whether its result is being written.
    pub completing: bool,
    /// The last progress reported.
    pub progress: Option<ProgressReport>,
    /// The root of the task's tree.
    pub root_id: TaskId,
    /// The task's queue, for metrics.
    pub queue: QueueName,
    /// When the task became due, for the queue wait.
    pub run_at: DateTime<Utc>,
    /// Whether the task's tree is open (it is a child, or it opened its tree): its changes
    /// make tree events.
    pub in_tree: bool,
    /// Why records the attempt emitted were refused, if they were: its result then fails.
    pub refused_records: Option<String>,
    /// Whether it was asked to stop because its tree was paused: a retryable failure then
    /// waits again, no retry counted.
    pub pausing: bool,
}

impl HeldLease {
    fn from_lease(lease: &Lease) -> Self {
        Self {
            name: lease.name.clone(),
            retries: lease.retries,
            max_retries: lease.max_retries,
            hard_time_limit: lease.time_limits.hard,
            started_at: None,
            completing: false,
            progress: None,
            root_id: lease.root_id,
            queue: lease.queue.clone(),
            run_at: lease.run_at,
            in_tree: lease.root_id != lease.token.task_id,
            refused_records: None,
            pausing: false,
        }
    }
}

#[derive(Debug)]
struct SessionState {
    credit: u32,
    leases: HashMap<LeaseToken, HeldLease>,
    last_seen: Instant,
    stats: Option<WorkerStats>,
}

/// What the leases waiting to go down one stream weigh, bounded: a worker that does not read
/// is not sent more than `limit` bytes of leases (the channel bounds their count only).
#[derive(Debug)]
pub struct StreamBuffer {
    bytes: std::sync::atomic::AtomicUsize,
    /// What a lease on this stream has weighed lately, to size claims to the room left.
    typical: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl StreamBuffer {
    /// A buffer of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: std::sync::atomic::AtomicUsize::new(0),
            // Until leases were seen, a new stream's first claims are kept small (at most 64
            // leases fill the budget); the average learns the real weight within a few dozen.
            typical: std::sync::atomic::AtomicUsize::new((limit / 64).max(Self::OVERHEAD)),
            limit,
        }
    }

    /// What a lease weighs besides its arguments.
    const OVERHEAD: usize = 256;

    /// What a lease weighs on the stream: its arguments and a little for the rest.
    fn weight(lease: &Lease) -> usize {
        lease.args.as_str().len() + Self::OVERHEAD
    }

    fn is_full(&self) -> bool {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed) >= self.limit
    }

    /// How many more leases of the typical weight fit; at least one while not full, so a lease
    /// larger than the whole budget still goes (alone).
    fn room(&self) -> u32 {
        let used = self.bytes.load(std::sync::atomic::Ordering::Relaxed);
        if used >= self.limit {
            return 0;
        }
        let typical = self
            .typical
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        u32::try_from(((self.limit - used) / typical).max(1)).unwrap_or(u32::MAX)
    }

    fn queued(&self, lease: &Lease) {
        let weight = Self::weight(lease);
        self.bytes
            .fetch_add(weight, std::sync::atomic::Ordering::Relaxed);
        // A moving average, moving an eighth of the way each lease.
        let typical = self.typical.load(std::sync::atomic::Ordering::Relaxed);
        let moved = if weight >= typical {
            typical + (weight - typical) / 8
        } else {
            typical - (typical - weight) / 8
        };
        self.typical
            .store(moved, std::sync::atomic::Ordering::Relaxed);
    }

    /// A lease left the buffer for the wire; true when that made room again.
    pub fn sent(&self, lease: &Lease) -> bool {
        let weight = Self::weight(lease);
        let before = self
            .bytes
            .fetch_sub(weight, std::sync::atomic::Ordering::Relaxed);
        before >= self.limit && before - weight < self.limit
    }
}

/// One worker's open stream.
#[derive(Debug)]
pub struct Session {
    /// This stream's id; the store fences releases on it.
    pub id: Uuid,
    /// The worker's hello.
    pub hello: Hello,
    /// The worker's queues with their priorities, highest first.
    pub queues: Vec<(QueueName, u8)>,
    /// When the stream opened.
    pub connected_at: DateTime<Utc>,
    outbound: Outbound,
    buffer: Arc<StreamBuffer>,
    replaced: CancellationToken,
    state: Mutex<SessionState>,
    controls: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    next_control: std::sync::atomic::AtomicU64,
}

impl Session {
    /// A session for a worker that said `hello`, keeping `kept` leases from its last stream.
    pub fn new(
        id: Uuid,
        hello: Hello,
        queues: Vec<(QueueName, u8)>,
        kept: &[Lease],
        outbound: Outbound,
        buffer: Arc<StreamBuffer>,
        connected_at: DateTime<Utc>,
    ) -> Self {
        let leases = kept
            .iter()
            .map(|lease| (lease.token, HeldLease::from_lease(lease)))
            .collect();
        Self {
            id,
            hello,
            queues,
            connected_at,
            outbound,
            buffer,
            replaced: CancellationToken::new(),
            state: Mutex::new(SessionState {
                credit: 0,
                leases,
                last_seen: Instant::now(),
                stats: None,
            }),
            controls: Mutex::new(HashMap::new()),
            next_control: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sends a control request; the round trip and the worker's answer, or `None` when it did
    /// not answer in time.
    pub async fn control(
        &self,
        command: crate::domain::ControlCommand,
        timeout: Duration,
    ) -> Option<(Duration, String)> {
        let request_id = self
            .next_control
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.controls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(request_id, reply);
        let started = Instant::now();
        let sent = self
            .send(CoordinatorMessage::Control {
                request_id,
                command,
            })
            .await;
        let answer = if sent {
            tokio::time::timeout(timeout, answer)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.controls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&request_id);
        answer.map(|detail| (started.elapsed(), detail))
    }

    /// The worker answered a control request.
    pub fn resolve_control(&self, request_id: u64, detail: String) {
        let reply = self
            .controls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&request_id);
        if let Some(reply) = reply {
            let _ = reply.send(detail);
        }
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        // The state stays consistent at every await-free step, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker's id.
    pub fn worker(&self) -> &WorkerId {
        &self.hello.worker_id
    }

    /// How many more leases the worker may be sent now.
    pub fn available(&self) -> u32 {
        let room = self.buffer.room();
        let state = self.state();
        let outstanding = u32::try_from(state.leases.len()).unwrap_or(u32::MAX);
        state
            .credit
            .min(self.hello.capacity().saturating_sub(outstanding))
            .min(room)
    }

    /// The worker granted room for `grant` more leases.
    pub fn grant(&self, grant: u32) {
        let mut state = self.state();
        state.credit = state
            .credit
            .saturating_add(grant)
            .min(self.hello.capacity());
    }

    /// The worker spoke; it is alive.
    pub fn touch(&self) {
        self.state().last_seen = Instant::now();
    }

    /// How long since the worker last spoke.
    pub fn silent_for(&self) -> Duration {
        self.state().last_seen.elapsed()
    }

    /// Sends leases to the worker. Returns the tokens that could not be sent (the stream is
    /// gone, stopped reading, or holds its byte budget of leases), which the caller must
    /// release.
    pub fn deliver(&self, leases: Vec<Lease>) -> Vec<LeaseToken> {
        let mut undelivered = Vec::new();
        for lease in leases {
            let token = lease.token;
            if self.buffer.is_full() {
                // The worker has not read what it was sent: the rest go back.
                undelivered.push(token);
                continue;
            }
            {
                let mut state = self.state();
                state.credit = state.credit.saturating_sub(1);
                state.leases.insert(token, HeldLease::from_lease(&lease));
            }
            self.buffer.queued(&lease);
            if let Err(error) = self.outbound.try_send(Ok(CoordinatorMessage::Lease(lease))) {
                if let Ok(CoordinatorMessage::Lease(lease)) = error.into_inner() {
                    self.buffer.sent(&lease);
                }
                self.state().leases.remove(&token);
                undelivered.push(token);
            }
        }
        undelivered
    }

    /// Sends a message to the worker; false when the stream is gone.
    pub async fn send(&self, message: CoordinatorMessage) -> bool {
        self.outbound.send(Ok(message)).await.is_ok()
    }

    /// Ends the stream with an error.
    pub async fn fail(&self, error: CoordinatorError) {
        let _ = self.outbound.send(Err(error)).await;
    }

    /// The worker started a lease at `at`; returns what is known of it, or `None` for a lease
    /// this session does not hold.
    pub fn mark_running(&self, token: &LeaseToken, at: DateTime<Utc>) -> Option<HeldLease> {
        let mut state = self.state();
        let lease = state.leases.get_mut(token)?;
        lease.started_at = Some(at);
        Some(lease.clone())
    }

    /// Records a lease's latest progress; `None` for a lease this session does not hold.
    pub fn record_progress(&self, token: &LeaseToken, report: ProgressReport) -> Option<HeldLease> {
        let mut state = self.state();
        let lease = state.leases.get_mut(token)?;
        lease.progress = Some(report);
        Some(lease.clone())
    }

    /// What is known of a lease this session holds.
    pub fn lease(&self, token: &LeaseToken) -> Option<HeldLease> {
        self.state().leases.get(token).cloned()
    }

    /// Records of the lease were refused, for `why`: its result will fail.
    pub fn refuse_records(&self, token: &LeaseToken, why: String) {
        if let Some(lease) = self.state().leases.get_mut(token) {
            lease.refused_records.get_or_insert(why);
        }
    }

    /// The lease's tree is open now.
    pub fn mark_in_tree(&self, token: &LeaseToken) {
        if let Some(lease) = self.state().leases.get_mut(token) {
            lease.in_tree = true;
        }
    }

    /// The worker's latest counters.
    pub fn set_stats(&self, stats: WorkerStats) {
        self.state().stats = Some(stats);
    }

    /// The worker's latest counters, if it reported any.
    pub fn stats(&self) -> Option<WorkerStats> {
        self.state().stats.clone()
    }

    /// Starts settling a lease whose result arrived. `None` when the session does not hold it,
    /// or its result is already being written.
    pub fn begin_completion(&self, token: &LeaseToken) -> Option<HeldLease> {
        let mut state = self.state();
        let lease = state.leases.get_mut(token)?;
        if lease.completing {
            return None;
        }
        lease.completing = true;
        Some(lease.clone())
    }

    /// Forgets a lease whose result is durable, freeing its place.
    pub fn settle(&self, token: &LeaseToken) {
        self.state().leases.remove(token);
    }

    /// A completion could not be written: the lease stays held (and counted) until the worker's
    /// next stream reports it again or it expires.
    pub fn abandon_completion(&self, token: &LeaseToken) {
        if let Some(lease) = self.state().leases.get_mut(token) {
            lease.completing = false;
        }
    }

    /// Removes and returns the given leases that can be released now (held, result not being
    /// written).
    pub fn take_releasable(&self, tokens: &[LeaseToken]) -> Vec<LeaseToken> {
        let mut state = self.state();
        let releasable: Vec<LeaseToken> = tokens
            .iter()
            .filter(|token| {
                state
                    .leases
                    .get(token)
                    .is_some_and(|lease| !lease.completing)
            })
            .copied()
            .collect();
        for token in &releasable {
            state.leases.remove(token);
        }
        releasable
    }

    /// Removes and returns every lease whose result is not being written: the stream ended.
    pub fn take_all_releasable(&self) -> Vec<LeaseToken> {
        let mut state = self.state();
        let tokens: Vec<LeaseToken> = state
            .leases
            .iter()
            .filter(|(_, lease)| !lease.completing)
            .map(|(token, _)| *token)
            .collect();
        for token in &tokens {
            state.leases.remove(token);
        }
        tokens
    }

    /// The leases held, with what is known of each.
    pub fn leases(&self) -> Vec<(LeaseToken, HeldLease)> {
        self.state()
            .leases
            .iter()
            .map(|(token, lease)| (*token, lease.clone()))
            .collect()
    }

    /// Fires when a newer stream of the same worker replaced this one.
    pub fn replaced(&self) -> &CancellationToken {
        &self.replaced
    }
}

/// The sessions of this coordinator, by worker.
#[derive(Debug, Default)]
pub struct Sessions {
    by_worker: RwLock<HashMap<WorkerId, Arc<Session>>>,
}

impl Sessions {
    /// Registers a session; a previous session of the same worker is told it was replaced.
    pub fn insert(&self, session: Arc<Session>) {
        let previous = self
            .by_worker
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(session.worker().clone(), session);
        if let Some(previous) = previous {
            previous.replaced.cancel();
        }
    }

    /// Unregisters a session, unless a newer one of the same worker took its place.
    pub fn remove(&self, session: &Session) {
        let mut by_worker = self
            .by_worker
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if by_worker
            .get(session.worker())
            .is_some_and(|current| current.id == session.id)
        {
            by_worker.remove(session.worker());
        }
    }

    /// Every session, in a stable order.
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        let mut sessions: Vec<_> = self
            .by_worker
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        sessions.sort_by(|a, b| a.worker().cmp(b.worker()));
        sessions
    }

    /// Tells the worker holding `token`, if it is connected here, to stop that task, saying
    /// `reason` (for its logs). True when a worker here held it.
    pub async fn tell_holder_to_cancel(
        &self,
        token: LeaseToken,
        terminate: bool,
        reason: &str,
    ) -> bool {
        let holder = self
            .by_worker
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .find(|session| session.state().leases.contains_key(&token))
            .cloned();
        let Some(holder) = holder else {
            return false;
        };
        let cancel = CoordinatorMessage::Cancel {
            token,
            terminate,
            reason: reason.to_owned(),
        };
        holder.send(cancel).await
    }

    /// Asks the worker holding `token` here, if any, to stop its task because its tree was
    /// paused; false when no session here holds it.
    pub async fn tell_holder_to_pause(&self, token: LeaseToken) -> bool {
        let holder = self
            .by_worker
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .find(|session| {
                let mut state = session.state();
                match state.leases.get_mut(&token) {
                    Some(lease) => {
                        lease.pausing = true;
                        true
                    }
                    None => false,
                }
            })
            .cloned();
        let Some(holder) = holder else {
            return false;
        };
        let stop = CoordinatorMessage::Cancel {
            token,
            terminate: false,
            reason: "its tree was paused; it continues when the tree is resumed".to_owned(),
        };
        holder.send(stop).await
    }

    /// Whether a connected worker runs this task name.
    pub fn runs_task(&self, name: &TaskName) -> bool {
        self.by_worker
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .any(|session| session.hello.task_names.contains(name))
    }
}
