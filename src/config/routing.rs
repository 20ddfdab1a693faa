//! The configuration parsed into what the coordinator decides with: queues, routes, per-task
//! policies and schedules.

use std::collections::HashMap;

use super::Config;
use crate::domain::{
    Priority, QueueName, RetryPolicy, TaskName, TimeLimits, ValidationError, parse_max_concurrency,
};

impl Config {
    /// The configured schedules, parsed (their next tick unset).
    pub fn schedules(&self) -> Result<Vec<crate::domain::Schedule>, ValidationError> {
        use crate::domain::{JsonText, Schedule, ScheduleSource, TaskSpec, Timing};
        self.schedules
            .iter()
            .map(|(name, settings)| {
                let field = format!("schedules.{name}");
                let name = crate::domain::parse_schedule_name(&field, name)?;
                let args = settings.args.clone().unwrap_or(serde_json::json!({}));
                let mut task = TaskSpec::new(
                    TaskName::parse(&format!("{field}.task"), &settings.task)?,
                    JsonText::checked_from_value(&format!("{field}.args"), &args)?,
                );
                task.queue = settings
                    .queue
                    .as_deref()
                    .map(|queue| QueueName::parse(&format!("{field}.queue"), queue))
                    .transpose()?;
                let timing = match (&settings.every, &settings.cron) {
                    (Some(every), None) => Timing::every(&format!("{field}.every"), *every)?,
                    (None, Some(cron)) => Timing::cron(
                        &format!("{field}.cron"),
                        cron,
                        &format!("{field}.timezone"),
                        settings.timezone.as_deref().unwrap_or(""),
                    )?,
                    _ => {
                        return Err(ValidationError::new(
                            field,
                            "give exactly one of `every` and `cron`",
                        ));
                    }
                };
                Ok(Schedule {
                    name,
                    task,
                    timing,
                    paused: false,
                    next_run_at: None,
                    last_run_at: None,
                    last_task_id: None,
                    source: ScheduleSource::Config,
                })
            })
            .collect()
    }

    /// The rate limits: `[rate_limits]`, and each `[tasks.<name>] rate_limit` as the limit of
    /// `task:<name>`.
    pub fn rate_limits(&self) -> Result<crate::domain::RateLimits, ValidationError> {
        use crate::domain::{Rate, RateLimits};
        let mut limits = RateLimits::parse(
            "rate_limits",
            self.rate_limits
                .iter()
                .map(|(pattern, rate)| (pattern.as_str(), rate.as_str())),
        )?;
        for (name, settings) in &self.tasks {
            if let Some(rate) = &settings.rate_limit {
                let rate = Rate::parse(&format!("tasks.{name}.rate_limit"), rate)?;
                limits = limits.with(format!("task:{name}"), rate);
            }
        }
        Ok(limits.recovering_over(self.coordinator.rate_recovery))
    }

    /// The parsed queues, routes and per-task policies the coordinator decides with.
    pub fn routing(&self) -> Result<Routing, ValidationError> {
        let mut queue_priorities = HashMap::new();
        for (name, settings) in &self.queues {
            let queue = QueueName::parse(&format!("queues.{name}"), name)?;
            queue_priorities.insert(queue, settings.priority);
        }
        let known_queue = |field: &str, name: &str| -> Result<QueueName, ValidationError> {
            let queue = QueueName::parse(field, name)?;
            if queue_priorities.contains_key(&queue) {
                Ok(queue)
            } else {
                Err(ValidationError::new(
                    field,
                    format!("unknown queue {name:?}; add it under [queues]"),
                ))
            }
        };
        let default_queue = known_queue("task_defaults.queue", &self.task_defaults.queue)?;
        let mut routes = HashMap::new();
        for (task, queue) in &self.routes {
            let field = format!("routes.{task}");
            routes.insert(TaskName::parse(&field, task)?, known_queue(&field, queue)?);
        }
        let defaults = &self.task_defaults;
        let default_policy = TaskPolicy {
            time_limits: TimeLimits::new(
                defaults.soft_time_limit,
                defaults.hard_time_limit,
                "task_defaults.",
            )?,
            max_retries: defaults.max_retries,
            retry: RetryPolicy {
                base: defaults.retry_backoff,
                cap: defaults.retry_backoff_max,
            },
            max_concurrency: None,
            priority: None,
        };
        let mut policies = HashMap::new();
        for (task, settings) in &self.tasks {
            let prefix = format!("tasks.{task}.");
            let name = TaskName::parse(&format!("tasks.{task}"), task)?;
            let policy = TaskPolicy {
                time_limits: TimeLimits::new(
                    settings.soft_time_limit.unwrap_or(defaults.soft_time_limit),
                    settings.hard_time_limit.unwrap_or(defaults.hard_time_limit),
                    &prefix,
                )?,
                max_retries: settings.max_retries.unwrap_or(defaults.max_retries),
                retry: RetryPolicy {
                    base: settings.retry_backoff.unwrap_or(defaults.retry_backoff),
                    cap: settings
                        .retry_backoff_max
                        .unwrap_or(defaults.retry_backoff_max),
                },
                max_concurrency: settings
                    .max_concurrency
                    .map(|limit| parse_max_concurrency(&format!("{prefix}max_concurrency"), limit))
                    .transpose()?,
                priority: settings
                    .priority
                    .map(|priority| Priority::parse(&format!("{prefix}priority"), priority))
                    .transpose()?,
            };
            policies.insert(name, policy);
        }
        Ok(Routing {
            queue_priorities,
            routes,
            default_queue,
            default_policy,
            policies,
        })
    }
}

/// What applies to a task name: its limits and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPolicy {
    /// Its time limits.
    pub time_limits: TimeLimits,
    /// How many retries it gets.
    pub max_retries: u32,
    /// How long it waits between retries.
    pub retry: RetryPolicy,
    /// How many of its tasks of one group may be leased or running at once.
    pub max_concurrency: Option<u32>,
    /// The priority its tasks submitted with none (0) get.
    pub priority: Option<Priority>,
}

/// The queues, routes and task policies, parsed.
#[derive(Debug, Clone)]
pub struct Routing {
    queue_priorities: HashMap<QueueName, u8>,
    routes: HashMap<TaskName, QueueName>,
    default_queue: QueueName,
    default_policy: TaskPolicy,
    policies: HashMap<TaskName, TaskPolicy>,
}

impl Routing {
    /// The priority of a configured queue; `None` for a queue that is not configured.
    pub fn queue_priority(&self, queue: &QueueName) -> Option<u8> {
        self.queue_priorities.get(queue).copied()
    }

    /// The queue a route names for this task, if any.
    pub fn route(&self, task: &TaskName) -> Option<&QueueName> {
        self.routes.get(task)
    }

    /// The queue of task names no route names.
    pub fn default_queue(&self) -> &QueueName {
        &self.default_queue
    }

    /// The limits and retries for a task name.
    pub fn policy(&self, task: &TaskName) -> TaskPolicy {
        self.policies
            .get(task)
            .copied()
            .unwrap_or(self.default_policy)
    }

    /// Every configured queue with its priority, highest first.
    pub fn queues(&self) -> Vec<(QueueName, u8)> {
        let mut queues: Vec<_> = self
            .queue_priorities
            .iter()
            .map(|(queue, priority)| (queue.clone(), *priority))
            .collect();
        queues.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        queues
    }
}
