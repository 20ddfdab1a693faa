//! Following tasks: waiting for one to finish, streaming a tree's events, paging through
//! records.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use tokio::sync::mpsc;

use super::{Coordinator, CoordinatorError};
use crate::domain::{
    RecordsPage, RecordsRequest, TaskId, TaskRecord, TreeEvent, TreeEventKind, ValidationError,
    synthesized_events,
};
use crate::store::RecordQuery;

/// The longest a `GetTask` may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Events read per query while streaming.
const EVENT_PAGE: u32 = 500;
/// Records per page unless asked otherwise, and the most.
const DEFAULT_PAGE_SIZE: u32 = 1_000;
const MAX_PAGE_SIZE: u32 = 10_000;

type PageMac = hmac::Hmac<sha2::Sha256>;

impl Coordinator {
    /// The task, once it has finished or `wait` has passed.
    pub async fn task_waiting(
        &self,
        id: TaskId,
        wait: Duration,
    ) -> Result<TaskRecord, CoordinatorError> {
        let waiter = self.waiters.watch(id);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let finished = waiter
            .read_until(deadline, || async {
                let task = self.task(id).await?;
                Ok::<_, CoordinatorError>(task.state.is_terminal().then_some(task))
            })
            .await?;
        match finished {
            Some(task) => Ok(task),
            None => self.task(id).await,
        }
    }

    /// The events of `root`'s tree after `from`, as they are now: stored events for a tree,
    /// events derived from the task for a root that never became one.
    async fn events_after(
        &self,
        root: TaskId,
        from: u64,
    ) -> Result<Vec<TreeEvent>, CoordinatorError> {
        if let Some(events) = self.store.tree_events(root, from, EVENT_PAGE).await? {
            return Ok(events);
        }
        let task = self.task(root).await?;
        Ok(synthesized_events(
            root,
            task.state,
            task.error
                .filter(|_| task.state == crate::domain::TaskState::Failed),
            task.started_at,
            task.finished_at,
        )
        .into_iter()
        .filter(|event| event.sequence > from)
        .collect())
    }

    /// Streams the events of the tree rooted at `id`, after `from`, until the tree finishes or
    /// the receiver is dropped.
    pub async fn stream_progress(
        self: &Arc<Self>,
        id: TaskId,
        from: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<TreeEvent, CoordinatorError>>, CoordinatorError> {
        let task = self.task(id).await?;
        if task.root_id != id {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "task_id: task {id} belongs to the tree of task {}; stream its root",
                task.root_id
            )));
        }
        let from = from.unwrap_or(0);
        let (sender, receiver) = mpsc::channel(64);
        if from > 0 {
            let known = self.events_after(id, from - 1).await?;
            let Some(last_seen) = known.first().filter(|event| event.sequence == from) else {
                return Err(ValidationError::new(
                    "from_sequence",
                    format!("{from} is past the tree's last event"),
                )
                .into());
            };
            // Resuming after the end: there is nothing more to send.
            if matches!(last_seen.kind, TreeEventKind::TreeFinished { .. }) {
                return Ok(receiver);
            }
        }
        let coordinator = self.clone();
        self.spawn(async move {
            let waiter = coordinator.waiters.watch(id);
            let mut after = from;
            loop {
                let woken = waiter.woken();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let events = match coordinator.events_after(id, after).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let full_page = events.len() == EVENT_PAGE as usize;
                for event in events {
                    after = event.sequence;
                    let finished = matches!(event.kind, TreeEventKind::TreeFinished { .. });
                    if sender.send(Ok(event)).await.is_err() || finished {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                tokio::select! {
                    _ = coordinator.stop.cancelled() => {
                        let _ = sender
                            .send(Err(CoordinatorError::Unavailable(
                                "the coordinator is shutting down; resume from the last sequence"
                                    .to_owned(),
                            )))
                            .await;
                        return;
                    }
                    _ = sender.closed() => return,
                    _ = tokio::time::timeout(super::waiters::BACKSTOP_POLL, woken) => {}
                }
            }
        });
        Ok(receiver)
    }

    /// A page of records.
    pub async fn list_records(
        &self,
        request: RecordsRequest,
    ) -> Result<RecordsPage, CoordinatorError> {
        let task = self.task(request.task).await?;
        if request.whole_tree && task.root_id != request.task {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "whole_tree: task {} is not a root; ask for the tree of task {}",
                request.task, task.root_id
            )));
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(ValidationError::new(
                    "page_size",
                    format!("{size} is more than {MAX_PAGE_SIZE}"),
                )
                .into());
            }
            size => size,
        };
        let secret = self.page_token_secret().await?;
        let fingerprint = format!(
            "{}|{}|{}|{}",
            request.task,
            request.whole_tree,
            request.kind.as_deref().unwrap_or(""),
            request.status.as_deref().unwrap_or("")
        );
        let after = match &request.page_token {
            None => 0,
            Some(token) => read_page_token(&secret, &fingerprint, token)?,
        };
        let mut rows = self
            .store
            .records(&RecordQuery {
                task: request.task,
                whole_tree: request.whole_tree,
                kind: request.kind,
                status: request.status,
                after,
                limit: page_size + 1,
            })
            .await?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_page_token = match rows.last() {
            Some((position, _)) if more => Some(page_token(&secret, &fingerprint, *position)?),
            _ => None,
        };
        Ok(RecordsPage {
            records: rows.into_iter().map(|(_, record)| record).collect(),
            next_page_token,
        })
    }

    async fn page_token_secret(&self) -> Result<String, CoordinatorError> {
        if let Some(secret) = self.page_secret.get() {
            return Ok(secret.clone());
        }
        let secret = self
            .store
            .setting("page_token_secret")
            .await?
            .ok_or_else(|| {
                CoordinatorError::Internal("the page token secret is missing".to_owned())
            })?;
        Ok(self.page_secret.get_or_init(|| secret).clone())
    }
}

/// The MAC of a position within one request.
fn page_mac(secret: &str, fingerprint: &str, after: i64) -> Result<PageMac, CoordinatorError> {
    let mut mac = PageMac::new_from_slice(secret.as_bytes())
        .map_err(|error| CoordinatorError::Internal(format!("page token key: {error}")))?;
    mac.update(fingerprint.as_bytes());
    mac.update(b"|");
    mac.update(after.to_string().as_bytes());
    Ok(mac)
}

/// A page token: where to continue, signed for one request, so a token the server did not issue
/// (or issued for other filters) is refused.
fn page_token(secret: &str, fingerprint: &str, after: i64) -> Result<String, CoordinatorError> {
    let mut bytes = after.to_be_bytes().to_vec();
    bytes.extend(
        page_mac(secret, fingerprint, after)?
            .finalize()
            .into_bytes(),
    );
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn read_page_token(secret: &str, fingerprint: &str, token: &str) -> Result<i64, CoordinatorError> {
    let refused = || {
        CoordinatorError::Invalid(ValidationError::new(
            "page_token",
            "was not issued by this server for this request",
        ))
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| refused())?;
    if bytes.len() < 9 {
        return Err(refused());
    }
    let (position, mac) = bytes.split_at(8);
    let after = i64::from_be_bytes(position.try_into().map_err(|_| refused())?);
    page_mac(secret, fingerprint, after)?
        .verify_slice(mac)
        .map_err(|_| refused())?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_refused_unless_issued_for_the_same_request() {
        let token = page_token("secret", "task|false||", 42).unwrap();
        assert_eq!(
            read_page_token("secret", "task|false||", &token).unwrap(),
            42
        );
        assert!(read_page_token("secret", "task|true||", &token).is_err());
        assert!(read_page_token("other", "task|false||", &token).is_err());
        assert!(read_page_token("secret", "task|false||", "garbage").is_err());
        let forged = page_token("guess", "task|false||", 42).unwrap();
        let error = read_page_token("secret", "task|false||", &forged).unwrap_err();
        assert!(error.to_string().starts_with("page_token:"), "{error}");
    }
}
