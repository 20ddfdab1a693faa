//! `celeritas.toml`: the seed's `core/celery.py` as a file, with the seed's values as defaults.
//!
//! Layers, later ones winning: built-in defaults, the TOML file, then environment variables named
//! `CELERITAS_<SECTION>__<KEY>` (double underscore between levels), for example
//! `CELERITAS_COORDINATOR__LISTEN=0.0.0.0:50051` or `CELERITAS_QUEUES__BULK__PRIORITY=3`.
//! Variables without a double underscore (`CELERITAS_COORDINATOR`, the CLI's coordinator URL)
//! are not configuration keys and are left alone.

mod contacts;
mod defaults;
mod files;
mod load;
mod routing;
mod security;
mod smtp;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::ValidationError;

pub use contacts::{DnsSettings, ValidationSettings};
pub use files::{FilesSettings, parse_byte_size};
pub use routing::{Routing, TaskPolicy};
pub use security::{AuthSettings, ConfiguredToken, TlsSettings, is_loopback};
pub use smtp::{CampaignSettings, DkimSettings, RelaySettings, SmtpSettings, StuckPolicy};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "celeritas.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How the coordinator serves.
    pub coordinator: CoordinatorSettings,
    /// How a worker connects and runs tasks.
    pub worker: WorkerSettings,
    /// The queues, by name. The seed's four are always there; the file may add more or change
    /// their priorities.
    pub queues: BTreeMap<String, QueueSettings>,
    /// Which queue a task name goes to when the submitter names none.
    pub routes: BTreeMap<String, String>,
    /// What applies to every task unless its own section or the submit says otherwise.
    pub task_defaults: TaskDefaults,
    /// Per task name overrides of `task_defaults`.
    pub tasks: BTreeMap<String, TaskSettings>,
    /// Periodic schedules by name; the seed's three are there by default. Synced to the store
    /// when a coordinator starts (schedules made through the API are left alone).
    pub schedules: BTreeMap<String, ScheduleSettings>,
    /// How workers send email.
    pub smtp: SmtpSettings,
    /// What the periodic campaign upkeep tasks treat as stuck, and what they do about it.
    pub campaigns: CampaignSettings,
    /// The resolver contact validation asks.
    pub dns: DnsSettings,
    /// What contact validation checks.
    pub validation: ValidationSettings,
    /// The files clients upload for tasks (`celeritas upload`).
    pub files: FilesSettings,
    /// Tokens, their roles, and which queues each worker identity may consume.
    pub auth: AuthSettings,
    /// Rate limits by key pattern (`"domain:gmail.com" = "20/s"`, `"domain:*.ru" = "5/s"`),
    /// enforced where leases are granted, across every worker and coordinator.
    pub rate_limits: BTreeMap<String, String>,
}

/// `[schedules.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// The task each tick submits.
    pub task: String,
    /// Tick every this long; exclusive with `cron`.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Tick on this cron expression; exclusive with `every`.
    #[serde(default)]
    pub cron: Option<String>,
    /// The IANA zone `cron` is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The task's queue (default: its route).
    #[serde(default)]
    pub queue: Option<String>,
    /// The task's arguments.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
}

/// `[coordinator]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorSettings {
    /// The address the gRPC server listens on.
    pub listen: SocketAddr,
    /// The largest `args_json` accepted, in bytes.
    pub max_args_bytes: usize,
    /// The largest gRPC message accepted, in bytes (a batch submit is one message).
    pub max_message_bytes: usize,
    /// How often workers send heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a rate key slowed down by pushback (an SMTP 421 from a domain) takes to climb
    /// from its floor back to its whole configured rate.
    #[serde(with = "humantime_serde")]
    pub rate_recovery: Duration,
    /// How often the dispatcher looks for work when nothing woke it (a backstop only).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a lease lasts in the store without renewal. Coordinators renew the leases of
    /// their live workers; a lease that runs out (its coordinator died, its worker vanished) is
    /// requeued by any coordinator.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a worker whose stream broke has to reconnect and keep its leases.
    #[serde(with = "humantime_serde")]
    pub lease_grace: Duration,
    /// How often expired leases and expired tasks are looked for.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// How many connections to Postgres the coordinator keeps.
    pub database_pool_size: u32,
    /// Where Prometheus scrapes `/metrics`; none to serve no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// The most leases a worker may ask to hold (its concurrency × prefetch multiplier); a
    /// hello that declares more is refused.
    pub max_worker_capacity: u32,
    /// The most bytes of leases waiting to be sent down one worker stream; a worker that reads
    /// slowly (or not at all) is sent no more until it catches up.
    pub max_stream_buffer_bytes: usize,
    /// TLS on the gRPC port (and, with `client_ca_file`, client certificates for workers).
    pub tls: Option<TlsSettings>,
    /// Listen beyond loopback with neither TLS nor required tokens (on a network you trust);
    /// without it such a coordinator refuses to start.
    pub allow_insecure: bool,
}

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// How many tasks run at once.
    pub concurrency: u32,
    /// Leases held per unit of concurrency (the seed's `worker_prefetch_multiplier`).
    pub prefetch_multiplier: u32,
    /// How long a stopping worker waits for running tasks before aborting them.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// After this many tasks a worker drains and replaces itself with a fresh process; unset
    /// (the default) never. The seed used 1000.
    pub max_tasks_per_child: Option<u64>,
}

/// `[queues.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// 0 to 255; a worker consuming several queues serves higher ones first.
    pub priority: u8,
}

/// `[task_defaults]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskDefaults {
    /// The queue of a task name no route names.
    pub queue: String,
    /// The seed's `task_soft_time_limit`.
    #[serde(with = "humantime_serde")]
    pub soft_time_limit: Duration,
    /// The seed's `task_time_limit`.
    #[serde(with = "humantime_serde")]
    pub hard_time_limit: Duration,
    /// How many times a failed attempt is retried.
    pub max_retries: u32,
    /// The first retry's backoff ceiling; each retry doubles it.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest backoff.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
}

/// `[tasks.<name>]`: any of `task_defaults`' limits and retry settings, for one task name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Overrides `task_defaults.soft_time_limit`.
    #[serde(default, with = "humantime_serde")]
    pub soft_time_limit: Option<Duration>,
    /// Overrides `task_defaults.hard_time_limit`.
    #[serde(default, with = "humantime_serde")]
    pub hard_time_limit: Option<Duration>,
    /// Overrides `task_defaults.max_retries`.
    pub max_retries: Option<u32>,
    /// Overrides `task_defaults.retry_backoff`.
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    /// Overrides `task_defaults.retry_backoff_max`.
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff_max: Option<Duration>,
    /// How fast tasks of this name are leased, cluster-wide (`"100/s"`, Celery's syntax): the
    /// limit of the key `task:<name>` every such task carries.
    pub rate_limit: Option<String>,
    /// At most this many tasks of this name and one group (of this name, for tasks without a
    /// group) leased or running at once, cluster-wide, unless a task sets its own.
    pub max_concurrency: Option<u32>,
    /// The priority (0 to 255) of tasks of this name submitted with none (0), so that, say,
    /// transactional mail keeps ahead of campaign batches on one queue.
    pub priority: Option<u32>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, or an environment variable, does not read as configuration.
    #[error("cannot read the configuration: {0}")]
    Read(#[from] Box<figment::Error>),
    /// A value is out of place: `queues.email.priority: …`.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ValidationError),
}
