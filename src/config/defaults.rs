//! The seed's values (`core/celery.py`): queues and their priorities, routes, limits, the three
//! periodic schedules.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    CampaignSettings, Config, CoordinatorSettings, DnsSettings, QueueSettings, ScheduleSettings,
    SmtpSettings, TaskDefaults, ValidationSettings, WorkerSettings,
};

impl Default for Config {
    fn default() -> Self {
        let queues = [
            ("import", 5),
            ("email", 10),
            ("campaigns", 10),
            ("default", 0),
        ]
        .into_iter()
        .map(|(name, priority)| (name.to_owned(), QueueSettings { priority }))
        .collect();
        let routes = [
            ("send_campaign", "campaigns"),
            ("send_email_batch", "email"),
            ("send_single_email", "email"),
            ("import_contacts_async", "import"),
            ("validate_contact_batch", "import"),
        ]
        .into_iter()
        .map(|(task, queue)| (task.to_owned(), queue.to_owned()))
        .collect();
        Self {
            coordinator: CoordinatorSettings::default(),
            worker: WorkerSettings::default(),
            queues,
            routes,
            task_defaults: TaskDefaults::default(),
            tasks: seed_tasks(),
            schedules: seed_schedules(),
            smtp: SmtpSettings::default(),
            campaigns: CampaignSettings::default(),
            dns: DnsSettings::default(),
            validation: ValidationSettings::default(),
            files: super::FilesSettings::default(),
            auth: super::AuthSettings::default(),
            rate_limits: BTreeMap::new(),
        }
    }
}

/// Transactional mail ahead of campaign batches on their shared `email` queue: a message a
/// user waits for (a password reset, a confirmation) is not queued behind a campaign.
fn seed_tasks() -> BTreeMap<String, super::TaskSettings> {
    [(
        "send_single_email".to_owned(),
        super::TaskSettings {
            priority: Some(9),
            ..super::TaskSettings::default()
        },
    )]
    .into()
}

/// The seed's periodic tasks: monitor_campaign_progress every 5 minutes, the two cleanups
/// every 10.
fn seed_schedules() -> BTreeMap<String, ScheduleSettings> {
    [
        ("monitor_campaign_progress", 5),
        ("cleanup_stuck_campaigns", 10),
        ("cleanup_smtp_connections", 10),
    ]
    .into_iter()
    .map(|(task, minutes)| {
        (
            task.to_owned(),
            ScheduleSettings {
                task: task.to_owned(),
                every: Some(Duration::from_secs(minutes * 60)),
                cron: None,
                timezone: None,
                queue: Some("default".to_owned()),
                args: None,
            },
        )
    })
    .collect()
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_args_bytes: 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(5),
            rate_recovery: crate::domain::DEFAULT_RATE_RECOVERY,
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            lease_grace: Duration::from_secs(15),
            reap_interval: Duration::from_secs(1),
            database_pool_size: 16,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_worker_capacity: 10_000,
            max_stream_buffer_bytes: 16 * 1024 * 1024,
            tls: None,
            allow_insecure: false,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism()
                .map(|cores| cores.get() as u32)
                .unwrap_or(1),
            prefetch_multiplier: 1,
            shutdown_timeout: Duration::from_secs(30),
            reconnect_backoff_max: Duration::from_secs(10),
            max_tasks_per_child: None,
        }
    }
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            queue: "default".to_owned(),
            soft_time_limit: Duration::from_secs(25 * 60),
            hard_time_limit: Duration::from_secs(30 * 60),
            max_retries: 3,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(10 * 60),
        }
    }
}
