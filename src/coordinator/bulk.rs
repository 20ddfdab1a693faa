//! Bulk operations: retry failed tasks, and cancel unfinished ones, chosen by a selector.
//!
//! Both count what matches when the call begins (a dry run stops there) and then work through
//! it in pages. Whatever finishes (retry) or is submitted (cancel) after the call began is left
//! alone, so neither chases tasks that keep arriving. A retry is one transaction per page;
//! a cancellation goes through `Coordinator::cancel` task by task, so running tasks are told to
//! stop and their descendants are cancelled exactly as `CancelTask` does.

use super::{Coordinator, CoordinatorError};
use crate::domain::{BulkOutcome, TaskRecord, TaskSelector, TaskState, ValidationError};
use crate::store::TaskFilter;

/// What a bulk operation does to each page of the tasks it selected.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Put failed tasks back on their queues.
    Retry,
    /// Cancel unfinished tasks; `terminate` aborts running ones.
    Cancel { terminate: bool },
}

/// How many tasks one page of a bulk operation reads.
const BULK_PAGE: u32 = 500;

impl Coordinator {
    /// Puts the failed tasks `selector` matches back on their queues, or only counts them.
    pub async fn retry_tasks(
        &self,
        selector: TaskSelector,
        dry_run: bool,
    ) -> Result<BulkOutcome, CoordinatorError> {
        if let Some(state) = selector
            .states
            .iter()
            .find(|state| **state != TaskState::Failed)
        {
            return Err(ValidationError::new(
                "selector.states",
                format!("only failed tasks can be retried, not {state}"),
            )
            .into());
        }
        let now = self.clock.now();
        let mut filter = self.bulk_filter(selector, vec![TaskState::Failed])?;
        filter.finished = filter.finished.ending_by(now);
        let outcome = self.work_through(&filter, dry_run, Action::Retry).await?;
        tracing::info!(
            matched = outcome.matched,
            retried = outcome.changed,
            dry_run,
            "retried failed tasks in bulk"
        );
        Ok(outcome)
    }

    /// Cancels the unfinished tasks `selector` matches, or only counts them.
    pub async fn cancel_tasks(
        &self,
        selector: TaskSelector,
        terminate: bool,
        dry_run: bool,
    ) -> Result<BulkOutcome, CoordinatorError> {
        if let Some(state) = selector.states.iter().find(|state| state.is_terminal()) {
            return Err(ValidationError::new(
                "selector.states",
                format!("a {state} task has finished and cannot be cancelled"),
            )
            .into());
        }
        let unfinished = TaskState::ALL
            .into_iter()
            .filter(|state| !state.is_terminal())
            .collect();
        let now = self.clock.now();
        let mut filter = self.bulk_filter(selector, unfinished)?;
        filter.created = filter.created.ending_by(now);
        let outcome = self
            .work_through(&filter, dry_run, Action::Cancel { terminate })
            .await?;
        tracing::info!(
            matched = outcome.matched,
            cancelled = outcome.changed,
            dry_run,
            "cancelled tasks in bulk"
        );
        Ok(outcome)
    }

    /// The store's filter for a selector; `states` when it names none. An empty selector, or a
    /// queue the coordinator does not have, is refused.
    fn bulk_filter(
        &self,
        selector: TaskSelector,
        states: Vec<TaskState>,
    ) -> Result<TaskFilter, CoordinatorError> {
        if selector.is_empty() {
            return Err(ValidationError::new(
                "selector",
                "names no criterion; give at least one (names, queues, root, states, error kinds, a time range)",
            )
            .into());
        }
        for queue in &selector.queues {
            self.queue_priority("selector.queues", queue)?;
        }
        Ok(TaskFilter {
            root: selector.root,
            names: selector.names,
            states: if selector.states.is_empty() {
                states
            } else {
                selector.states
            },
            queues: selector.queues,
            error_kinds: selector.error_kinds,
            created: selector.created,
            finished: selector.finished,
            quiet_since: None,
            limit: BULK_PAGE,
            with_payloads: false,
        })
    }

    /// Counts what `filter` matches (NOT_FOUND when nothing does and the call would act), then,
    /// unless `dry_run`, does `action` page after page until it has changed that many, the
    /// pages run out, or a page changes nothing (whatever is left does not move).
    async fn work_through(
        &self,
        filter: &TaskFilter,
        dry_run: bool,
        action: Action,
    ) -> Result<BulkOutcome, CoordinatorError> {
        let matched = self.store.count_tasks(filter).await?;
        if dry_run {
            return Ok(BulkOutcome {
                matched,
                changed: 0,
            });
        }
        if matched == 0 {
            return Err(CoordinatorError::NotFound(ValidationError::new(
                "selector",
                "matches no task",
            )));
        }
        let mut changed = 0;
        while changed < matched {
            let page = self.store.list_tasks(filter).await?;
            if page.is_empty() {
                break;
            }
            let done = self.act(action, page).await?;
            if done == 0 {
                break;
            }
            changed += done;
        }
        Ok(BulkOutcome { matched, changed })
    }

    /// Does `action` to one page of tasks; answers how many it changed.
    async fn act(&self, action: Action, page: Vec<TaskRecord>) -> Result<u64, CoordinatorError> {
        match action {
            Action::Retry => {
                let ids: Vec<_> = page.iter().map(|task| task.id).collect();
                let roots = self.store.retry_failed(&ids, self.clock.now()).await?;
                let retried = roots.len() as u64;
                for root in roots {
                    self.dirty_trees.mark(root);
                }
                for id in ids {
                    self.waiters.wake(id);
                }
                self.signal.wake();
                self.announce();
                Ok(retried)
            }
            Action::Cancel { terminate } => {
                let mut cancelled = 0;
                for task in page {
                    match self.cancel(task.id, terminate).await {
                        Ok(cancellation) if cancellation.task.state == TaskState::Cancelled => {
                            cancelled += 1;
                        }
                        // It finished (or went) meanwhile: nothing to cancel.
                        Ok(_) | Err(CoordinatorError::NotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(cancelled)
            }
        }
    }
}
