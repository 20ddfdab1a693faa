//! Writes a session waits for, and what it does once they are durable: a result acknowledged
//! (or, when the store refused it, recorded as a failure instead), its place freed, waiters
//! woken.

use super::super::batcher::BatchError;
use super::super::sessions::{HeldLease, Session};
use super::super::{AttemptUpdate, Coordinator};
use crate::clock::after;
use crate::domain::{CoordinatorMessage, Failure, LeaseToken, Outcome, TaskId};
use crate::store::{Completion, Resolution};

/// A write the session waits for.
pub(super) enum Written {
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

pub(super) type PendingWrite = futures::future::BoxFuture<'static, Written>;

/// A write finished. For a result: tell the worker and free the lease's place. False when a
/// result's write failed: the worker must report it again, which it does on its next stream.
pub(super) async fn settle(coordinator: &Coordinator, session: &Session, written: Written) -> bool {
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
pub(super) fn record_outcome(lease: &HeldLease, completion: &Completion) {
    let queue = lease.queue.to_string();
    let outcome = match completion.resolution {
        Resolution::Succeeded(_) => "succeeded",
        Resolution::Retry { .. } => {
            metrics::counter!("celeritas_task_retries_total", "queue" => queue.clone())
                .increment(1);
            "retried"
        }
        Resolution::Requeued { .. } => "paused",
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

impl Coordinator {
    /// Decides what becomes of a task whose attempt ended: retried with backoff while it may be,
    /// failed otherwise; one that stopped because its tree was paused waits again, with no
    /// retry counted.
    pub(super) fn resolve(&self, lease: &HeldLease, outcome: Outcome) -> Resolution {
        match outcome {
            Outcome::Succeeded(result) => Resolution::Succeeded(result),
            Outcome::Failed(Failure {
                retryable: true, ..
            }) if lease.pausing => Resolution::Requeued {
                run_at: self.clock.now(),
            },
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
