//! Pausing and resuming a task tree (a campaign).
//!
//! The store parks the tree's waiting tasks and every child it gains while paused (see
//! `store::paused_trees`), so no claim on any coordinator leases them. Its running tasks are
//! asked to stop, directly or through an announcement to the coordinator holding the worker's
//! stream; a campaign batch stops after its current message, having recorded every recipient
//! it reached, and its attempt's retryable end makes it wait again with no retry counted
//! (`resolve`), so a resume sends each remaining recipient once.

use chrono::{DateTime, Utc};

use super::{Coordinator, CoordinatorError};
use crate::domain::{Caller, LeaseToken, TaskId, ValidationError};
use crate::store::{Announcement, TreePause, TreeResume};

/// A tree's pause as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreePaused {
    /// Whether this call changed anything (false: it was paused already).
    pub changed: bool,
    /// Since when it is paused.
    pub paused_at: DateTime<Utc>,
    /// Running tasks asked to stop.
    pub stopping: u64,
}

impl Coordinator {
    /// Pauses the tree rooted at `root`.
    pub async fn pause_tree(
        &self,
        caller: &Caller,
        root: TaskId,
    ) -> Result<TreePaused, CoordinatorError> {
        let (changed, paused_at, running) =
            match self.store.pause_tree(root, self.clock.now()).await? {
                TreePause::NotFound => return Err(no_task(root)),
                TreePause::NotRoot(actual) => return Err(not_root(root, actual)),
                TreePause::Finished => {
                    return Err(CoordinatorError::FailedPrecondition(format!(
                        "task_id: every task of tree {root} has finished; there is nothing to pause"
                    )));
                }
                TreePause::Paused {
                    changed,
                    paused_at,
                    running,
                } => (changed, paused_at, running),
            };
        for token in &running {
            self.tell_holder_to_pause(*token).await;
        }
        self.dirty_trees.mark(root);
        tracing::info!(%root, by = ?caller.identity(), changed, stopping = running.len(), "paused a tree");
        Ok(TreePaused {
            changed,
            paused_at,
            stopping: running.len() as u64,
        })
    }

    /// Resumes a paused tree; false when it was not paused.
    pub async fn resume_tree(
        &self,
        caller: &Caller,
        root: TaskId,
    ) -> Result<bool, CoordinatorError> {
        let changed = match self.store.resume_tree(root, self.clock.now()).await? {
            TreeResume::NotFound => return Err(no_task(root)),
            TreeResume::NotRoot(actual) => return Err(not_root(root, actual)),
            TreeResume::Resumed { changed } => changed,
        };
        if changed {
            // Its tasks are scheduled at their own run times again: promote what is due.
            self.signal.wake_at(self.clock.now());
            self.announce();
        }
        self.dirty_trees.mark(root);
        tracing::info!(%root, by = ?caller.identity(), changed, "resumed a tree");
        Ok(changed)
    }

    /// Asks the worker holding `token` to stop because its tree was paused.
    async fn tell_holder_to_pause(&self, token: LeaseToken) {
        if self.sessions.tell_holder_to_pause(token).await {
            return;
        }
        if let Err(error) = self.store.announce(&Announcement::Pause { token }).await {
            tracing::warn!(%error, task = %token.task_id, "cannot tell other coordinators to stop a task of a paused tree; it runs to its end");
        }
    }
}

fn no_task(id: TaskId) -> CoordinatorError {
    CoordinatorError::NotFound(ValidationError::new("task_id", format!("no task {id}")))
}

fn not_root(id: TaskId, root: TaskId) -> CoordinatorError {
    CoordinatorError::FailedPrecondition(format!(
        "task_id: task {id} is not the root of its tree; pause or resume its root {root}"
    ))
}
