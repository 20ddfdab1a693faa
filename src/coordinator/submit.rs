//! Turning what a client asks for into tasks: routes, defaults and the checks that need the
//! coordinator's configuration or the store.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Coordinator, CoordinatorError};
use crate::clock::after;
use crate::domain::{
    Caller, ExpiresAt, Inserted, NewTask, QueueName, Role, StartAt, TaskId, TaskSpec, TimeLimits,
    ValidationError,
};
use crate::store::Parentage;

impl Coordinator {
    /// Validates and writes tasks in one transaction: all are accepted or none. `field` names the
    /// spec at an index in errors (`task`, or `tasks[3]`). The tasks remember `caller`'s
    /// credential, so a caller that may only submit can read what it submitted.
    pub async fn submit(
        &self,
        caller: &Caller,
        specs: Vec<TaskSpec>,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Inserted>, CoordinatorError> {
        let specs = specs.into_iter().map(|spec| (spec, None)).collect();
        self.submit_waiting(specs, caller.credential(), field).await
    }

    /// Refuses `caller` a task (its tree, for a stream) unless it may read every task, or it
    /// submitted the tree's root.
    pub async fn check_reader(
        &self,
        caller: &Caller,
        id: TaskId,
        call: &str,
    ) -> Result<(), CoordinatorError> {
        if caller.roles.has_any(&[Role::Read, Role::Worker]) {
            return Ok(());
        }
        let task = self.task(id).await?;
        let submitter = if task.id == task.root_id {
            task.submitted_by.clone()
        } else {
            self.store
                .task(task.root_id)
                .await?
                .and_then(|root| root.submitted_by)
        };
        if submitter.is_some() && submitter == caller.credential() {
            return Ok(());
        }
        Err(CoordinatorError::PermissionDenied(format!(
            "{call}: task {} was submitted by another caller; reading it needs the read role",
            task.id
        )))
    }

    /// Submits children of a running task, and perhaps a callback that waits until the parent
    /// and all its children have finished. Errors name `children[i]` or `callback`.
    pub async fn submit_children(
        &self,
        parent: TaskId,
        children: Vec<TaskSpec>,
        callback: Option<TaskSpec>,
    ) -> Result<(Vec<TaskId>, Option<TaskId>), CoordinatorError> {
        if children.len() > crate::domain::MAX_BATCH_SUBMIT {
            return Err(ValidationError::new(
                "children",
                format!(
                    "{} children is more than {} per message",
                    children.len(),
                    crate::domain::MAX_BATCH_SUBMIT
                ),
            )
            .into());
        }
        let count = children.len();
        let mut entries = Vec::with_capacity(count + 1);
        for (index, mut spec) in children.into_iter().enumerate() {
            if spec.parent_id.is_some_and(|given| given != parent) {
                return Err(ValidationError::new(
                    format!("children[{index}].parent_id"),
                    "is set by the coordinator to the submitting task",
                )
                .into());
            }
            spec.parent_id = Some(parent);
            entries.push((spec, None));
        }
        if let Some(mut callback) = callback {
            callback.parent_id = Some(parent);
            // One callback per parent: a second submission returns the first.
            callback
                .idempotency_key
                .get_or_insert_with(|| format!("celeritas:callback:{parent}"));
            entries.push((callback, Some(parent)));
        }
        let inserted = self
            .submit_waiting(entries, None, |index| {
                if index < count {
                    format!("children[{index}]")
                } else {
                    "callback".to_owned()
                }
            })
            .await?;
        let mut ids: Vec<TaskId> = inserted.iter().map(|entry| entry.id).collect();
        let callback = (ids.len() > count).then(|| ids.remove(count));
        Ok((ids, callback))
    }

    /// Submits tasks, some of them callbacks waiting for a parent.
    async fn submit_waiting(
        &self,
        specs: Vec<(TaskSpec, Option<TaskId>)>,
        submitted_by: Option<String>,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Inserted>, CoordinatorError> {
        let now = self.clock.now();
        let parents: Vec<TaskId> = specs
            .iter()
            .filter_map(|(spec, _)| spec.parent_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let roots = if parents.is_empty() {
            HashMap::new()
        } else {
            self.store.roots(&parents).await?
        };
        let mut tasks = Vec::with_capacity(specs.len());
        for (index, (spec, waits_for)) in specs.into_iter().enumerate() {
            let mut task = self
                .prepare(spec, now, &roots)
                .await
                .map_err(|error| error.within(&field(index)))?;
            task.waits_for = waits_for;
            task.submitted_by = submitted_by.clone();
            tasks.push(task);
        }
        let inserted = self.store.insert_tasks(&tasks).await?;
        for (task, entry) in tasks.iter().zip(&inserted) {
            if entry.created {
                metrics::counter!("celeritas_tasks_submitted_total", "queue" => task.queue.to_string())
                    .increment(1);
            }
        }
        if let Some(first_due) = tasks
            .iter()
            .filter(|task| task.run_at > now)
            .map(|task| task.run_at)
            .min()
        {
            self.signal.wake_at(first_due);
        }
        for root in tasks
            .iter()
            .filter(|task| task.parent_id.is_some())
            .map(|task| task.root_id)
            .collect::<HashSet<_>>()
        {
            self.dirty_trees.mark(root);
        }
        if tasks
            .iter()
            .any(|task| task.run_at <= now && task.waits_for.is_none())
        {
            self.signal.wake();
            self.announce();
        }
        Ok(inserted)
    }

    /// Applies routes and defaults to one spec without a parent (a schedule's tick).
    pub(super) async fn prepare_one(
        &self,
        spec: TaskSpec,
        now: DateTime<Utc>,
    ) -> Result<NewTask, CoordinatorError> {
        self.prepare(spec, now, &HashMap::new()).await
    }

    /// Applies routes and defaults to one spec. Errors name fields relative to the spec.
    async fn prepare(
        &self,
        spec: TaskSpec,
        now: DateTime<Utc>,
        roots: &HashMap<TaskId, Parentage>,
    ) -> Result<NewTask, CoordinatorError> {
        let queue = self.queue_for(&spec).await?;
        let policy = self.routing.policy(&spec.name);
        // A client that sets one limit moves the other default out of its way.
        let defaults = policy.time_limits;
        let (soft, hard) = match (spec.soft_time_limit, spec.hard_time_limit) {
            (Some(soft), Some(hard)) => (soft, hard),
            (Some(soft), None) => (soft, defaults.hard.max(soft)),
            (None, Some(hard)) => (defaults.soft.min(hard), hard),
            (None, None) => (defaults.soft, defaults.hard),
        };
        let time_limits = TimeLimits::new(soft, hard, "")?;
        let run_at = match spec.start {
            StartAt::Now => now,
            StartAt::After(countdown) => after(now, countdown),
            StartAt::At(eta) => eta.max(now),
        };
        let expires_at = match spec.expires {
            ExpiresAt::Never => None,
            ExpiresAt::After(duration) => Some(after(now, duration)),
            ExpiresAt::At(moment) => Some(moment),
        };
        if let Some(expires_at) = expires_at
            && expires_at <= run_at
        {
            let field = match spec.expires {
                ExpiresAt::After(_) => "expires_in",
                _ => "expires_at",
            };
            let message = if run_at > now {
                format!("{expires_at} is not after the task's ETA {run_at}")
            } else {
                format!("{expires_at} is in the past")
            };
            return Err(ValidationError::new(field, message).into());
        }
        let id = TaskId::generate();
        let (root_id, parent_group) = match spec.parent_id {
            None => (id, None),
            Some(parent) => {
                let parentage = roots.get(&parent).ok_or_else(|| {
                    CoordinatorError::NotFound(ValidationError::new(
                        "parent_id",
                        format!("no task {parent}"),
                    ))
                })?;
                (parentage.root_id, parentage.group_key.clone())
            }
        };
        let group_key = spec.group_key.or(parent_group);
        let max_concurrency = spec.max_concurrency.or(policy.max_concurrency);
        let mut rate_keys = spec.rate_keys;
        let name_key = format!("task:{}", spec.name.as_str());
        let limits = self.rate_limits.current();
        if limits.rate_for(&name_key).is_some() {
            rate_keys.add(name_key, 1);
        }
        let governed =
            limits.limits_any(&rate_keys) || group_key.is_some() || max_concurrency.is_some();
        Ok(NewTask {
            id,
            name: spec.name,
            queue,
            // A submit's own priority wins; none (0) takes its name's.
            priority: match policy.priority {
                Some(named) if spec.priority.value() == 0 => named,
                _ => spec.priority,
            },
            args: spec.args,
            run_at,
            expires_at,
            max_retries: spec.max_retries.unwrap_or(policy.max_retries),
            time_limits,
            idempotency_key: spec.idempotency_key,
            parent_id: spec.parent_id,
            root_id,
            created_at: now,
            waits_for: None,
            submitted_by: None,
            rate_keys,
            governed,
            group_key,
            max_concurrency,
            fair_position: None,
        })
    }

    /// The queue a spec goes to: the one it names, else its route, else the default queue for a
    /// task name some worker or the built-in tasks know.
    async fn queue_for(&self, spec: &TaskSpec) -> Result<QueueName, CoordinatorError> {
        if let Some(queue) = &spec.queue {
            self.queue_priority("queue", queue)?;
            return Ok(queue.clone());
        }
        if let Some(queue) = self.routing.route(&spec.name) {
            return Ok(queue.clone());
        }
        if self.knows_task_name(&spec.name).await? {
            return Ok(self.routing.default_queue().clone());
        }
        Err(ValidationError::new(
            "name",
            format!(
                "no route, built-in task or worker knows task {:?}; give it a queue or a route",
                spec.name.as_str()
            ),
        )
        .into())
    }

    async fn knows_task_name(
        &self,
        name: &crate::domain::TaskName,
    ) -> Result<bool, CoordinatorError> {
        if crate::domain::BUILTIN_TASK_NAMES.contains(&name.as_str())
            || self.sessions.runs_task(name)
            || self
                .known_task_names
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(name)
        {
            return Ok(true);
        }
        let known = self.store.knows_task_name(name).await?;
        if known {
            self.known_task_names
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(name.clone());
        }
        Ok(known)
    }
}
