//! Running leases: starting them while there is room, under their time limits, and turning a
//! finished task into a result that stays until the coordinator acknowledges it.

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{RunningTask, Runtime, Unacked};
use crate::domain::{Failure, JsonText, Lease, LeaseToken, Outcome, TimeLimits, WorkerMessage};
use crate::worker::task::{Retry, TaskContext, TaskHandler};

impl Runtime {
    pub(super) fn on_finished(
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
    pub(super) fn finish(&mut self, token: LeaseToken, outcome: Outcome) {
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

    pub(super) fn grant_one(&mut self) {
        if self.drain_deadline.is_none() {
            self.send(WorkerMessage::Credit(1));
        }
    }

    /// Starts waiting leases while there is room.
    pub(super) fn start_waiting(&mut self) {
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

    /// Appends the attempt to the execution log, when there is one: one JSON line per attempt
    /// started, for audits and for tests that count executions.
    pub(super) fn log_execution(&self, lease: &Lease) {
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
}

/// Runs one attempt under its time limits: at the soft limit the task's stop signal fires; at
/// the hard limit the attempt is abandoned and fails.
pub(super) async fn execute(
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
