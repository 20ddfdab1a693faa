//! What the worker says to the coordinator: the stream's outbox (what must arrive waits, in
//! order; heartbeats and progress ticks may be dropped), running tasks' requests, and results
//! sent again when unacknowledged.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Connection, Pending, RECORDS_PER_MESSAGE, RESEND_UNACKED_AFTER, Runtime};
use crate::domain::{LeaseToken, Outcome, RecordEntry, RequestError, WorkerMessage};
use crate::worker::task::ContextRequest;

impl Runtime {
    /// A running task asks something of the coordinator.
    pub(super) fn on_request(&mut self, token: LeaseToken, request: ContextRequest) {
        match request {
            ContextRequest::Progress(report) => {
                self.send_or_drop(WorkerMessage::Progress { token, report })
            }
            ContextRequest::SlowDown(key) => self.send(WorkerMessage::SlowDown { token, key }),
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
            } => self.ask(Pending::Children(reply), |request_id| {
                WorkerMessage::SubmitChildren {
                    request_id,
                    token,
                    children,
                    callback: callback.map(|callback| *callback),
                }
            }),
            ContextRequest::QueryRecords {
                kind,
                status,
                reply,
            } => self.ask(Pending::Query(reply), |request_id| {
                WorkerMessage::QueryRecords {
                    request_id,
                    token,
                    kind,
                    status,
                }
            }),
        }
    }

    /// Sends a request whose answer `pending` waits for, or answers it at once when there is
    /// no stream to send it on.
    fn ask(&mut self, pending: Pending, message: impl FnOnce(u64) -> WorkerMessage) {
        if !self.connected() {
            pending.answer_with(not_connected());
            return;
        }
        let request_id = self.request_id();
        self.pending.insert(request_id, pending);
        self.send(message(request_id));
    }

    pub(super) fn send_records(&mut self, token: LeaseToken, records: Vec<RecordEntry>) {
        for chunk in records.chunks(RECORDS_PER_MESSAGE) {
            self.send(WorkerMessage::EmitRecords {
                token,
                records: chunk.to_vec(),
            });
        }
    }

    pub(super) fn request_id(&mut self) -> u64 {
        self.next_request = self.next_request.wrapping_add(1);
        self.next_request
    }

    pub(super) fn connected(&self) -> bool {
        matches!(&self.connection, Connection::Up(link) if link.welcomed)
    }

    /// Requests in flight get no answer once their stream is gone.
    pub(super) fn fail_pending(&mut self, why: &str) {
        for (_, pending) in self.pending.drain() {
            pending.answer_with(RequestError {
                message: why.to_owned(),
                retryable: true,
            });
        }
    }

    /// Sends a message that must arrive, if a stream is up: when the stream has no room it
    /// waits in the outbox, in order. Without a stream it is dropped: results and records are
    /// kept until acknowledged and sent again after the next welcome, and the hello reports
    /// the leases held.
    pub(super) fn send(&mut self, message: WorkerMessage) {
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
    pub(super) fn send_or_drop(&mut self, message: WorkerMessage) {
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
    pub(super) fn resend_overdue_results(&mut self) {
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
}

fn not_connected() -> RequestError {
    RequestError {
        message: "the worker is not connected to a coordinator right now".to_owned(),
        retryable: true,
    }
}
