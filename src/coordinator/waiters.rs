//! Waiting for tasks to change: long-polling `GetTask` and progress streams wait here, keyed by
//! task id (a tree's events are keyed by its root's id). Whoever changes a task here (a settled
//! result, a cancellation, a tree's new events) wakes the waiters at once; changes made by other
//! coordinators or the reaper are caught by a short backstop poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::TaskId;

/// How often a waiter looks again when nothing woke it.
pub const BACKSTOP_POLL: Duration = Duration::from_millis(250);

/// The waiters, by task.
#[derive(Debug, Default)]
pub struct Waiters {
    by_task: Mutex<HashMap<TaskId, Arc<Notify>>>,
}

/// One waiter's registration; unregisters when dropped.
pub struct Waiter<'a> {
    waiters: &'a Waiters,
    task: TaskId,
    notify: Arc<Notify>,
}

impl Waiters {
    /// Registers interest in `task`. Create the registration before reading the task's state, so
    /// a change between the read and the wait is not missed.
    pub fn watch(&self, task: TaskId) -> Waiter<'_> {
        let notify = self
            .by_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(task)
            .or_default()
            .clone();
        Waiter {
            waiters: self,
            task,
            notify,
        }
    }

    /// Wakes everyone waiting on `task`.
    pub fn wake(&self, task: TaskId) {
        let notify = self
            .by_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&task)
            .cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

impl Waiter<'_> {
    /// A future that completes on the next wake; create (and enable) it before reading state.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Reads with `read` until it answers `Some`, waking on changes (and polling as a backstop),
    /// or until `deadline`; then answers the last read.
    pub async fn read_until<T, E, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        mut read: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, E>>,
    {
        loop {
            // Armed before the read, so a wake between the read and the wait is kept.
            let woken = self.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(found) = read().await? {
                return Ok(Some(found));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout((deadline - now).min(BACKSTOP_POLL), woken).await;
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut by_task = self
            .waiters
            .by_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Two references: the map's and this waiter's. Anyone else still waits.
        if by_task
            .get(&self.task)
            .is_some_and(|notify| Arc::strong_count(notify) <= 2)
        {
            by_task.remove(&self.task);
        }
    }
}
