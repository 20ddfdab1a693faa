//! `celeritas.toml`: the seed's `core/celery.py` as a file, with the seed's values as defaults.
//!
//! Layers, later ones winning: built-in defaults, the TOML file, then environment variables named
//! `CELERITAS_<SECTION>__<KEY>` (double underscore between levels), for example
//! `CELERITAS_COORDINATOR__LISTEN=0.0.0.0:50051` or `CELERITAS_QUEUES__BULK__PRIORITY=3`.
//! Variables without a double underscore (`CELERITAS_COORDINATOR`, the CLI's coordinator URL)
//! are not configuration keys and are left alone.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::{QueueName, RetryPolicy, TaskName, TimeLimits, ValidationError};

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
}

/// `[campaigns]`: read by the workers that run `monitor_campaign_progress` and
/// `cleanup_stuck_campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSettings {
    /// A running batch that reported no progress for this long has stopped moving.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// What `cleanup_stuck_campaigns` does with a stalled batch: `requeue` (abort the attempt
    /// and run the batch again, counting a retry; recipients already delivered are skipped) or
    /// `fail`.
    pub stuck_policy: StuckPolicy,
}

/// What to do with a stalled batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StuckPolicy {
    /// Abort the attempt and run the batch again.
    Requeue,
    /// Abort the attempt and fail the batch.
    Fail,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            stall_after: Duration::from_secs(15 * 60),
            stuck_policy: StuckPolicy::Requeue,
        }
    }
}

/// `[smtp]`: the relays email tasks send through, read by workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// The relay used when a campaign names none.
    pub default_relay: String,
    /// The longest one message may take to send.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// When a campaign names no delay, deferred recipients are retried after this long.
    #[serde(with = "humantime_serde")]
    pub retry_deferred_after: Duration,
    /// The relays, by name. `CELERITAS_SMTP_URL` adds (or replaces) the default one.
    pub relays: BTreeMap<String, RelaySettings>,
    /// DKIM signing, when configured.
    pub dkim: Option<DkimSettings>,
}

/// `[smtp.relays.<name>]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The relay's host.
    pub host: String,
    /// Its port (default 25, 587 with STARTTLS, 465 with TLS).
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls` (implicit TLS).
    #[serde(default = "default_tls")]
    pub tls: String,
    /// The user to log in as, if any.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// A file holding the password.
    pub password_file: Option<std::path::PathBuf>,
    /// The password itself; only from `CELERITAS_SMTP_URL`, never from a file that may be
    /// committed.
    #[serde(skip)]
    pub password: Option<String>,
    /// The most messages sent through it at once (and pooled connections).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The most messages per second through it; 0 for no limit.
    #[serde(default)]
    pub rate: u32,
    /// The most messages per second to one recipient domain; 0 for no limit.
    #[serde(default)]
    pub domain_rate: u32,
    /// Certificates (PEM) trusted for this relay's TLS besides the public roots: a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_tls() -> String {
    "none".to_owned()
}

fn default_max_connections() -> u32 {
    8
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never printed.
        formatter
            .debug_struct("RelaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("rate", &self.rate)
            .field("domain_rate", &self.domain_rate)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `[smtp.dkim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// A PKCS#1 PEM RSA private key.
    pub key_file: std::path::PathBuf,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            default_relay: "default".to_owned(),
            send_timeout: Duration::from_secs(30),
            retry_deferred_after: Duration::from_secs(60),
            relays: BTreeMap::new(),
            dkim: None,
        }
    }
}

impl RelaySettings {
    /// A relay from a URL: `smtp://user:pass@host:port` (plain; `?tls=starttls` for STARTTLS)
    /// or `smtps://…` (implicit TLS). The query may also set `max_connections`, `rate` and
    /// `domain_rate`.
    pub fn from_url(text: &str) -> Result<Self, ValidationError> {
        let field = "CELERITAS_SMTP_URL";
        let invalid = |why: String| ValidationError::new(field, why);
        let url = url::Url::parse(text)
            .map_err(|error| invalid(format!("is not a URL such as smtp://host:25: {error}")))?;
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("names no host".to_owned()))?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut relay = Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port(),
            tls: match url.scheme() {
                "smtps" => "tls".to_owned(),
                "smtp" => "none".to_owned(),
                _ => return Err(invalid("must start with smtp:// or smtps://".to_owned())),
            },
            username: Some(decode(url.username())).filter(|user| !user.is_empty()),
            password_env: None,
            password_file: None,
            password: url.password().map(decode),
            max_connections: default_max_connections(),
            rate: 0,
            domain_rate: 0,
            ca_file: None,
        };
        for (key, value) in url.query_pairs() {
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| invalid(format!("?{key}={value}: not a whole number")))
            };
            match key.as_ref() {
                "tls"
                    if url.scheme() == "smtp" && matches!(value.as_ref(), "starttls" | "none") =>
                {
                    relay.tls = value.into_owned();
                }
                "max_connections" => relay.max_connections = number()?,
                "rate" => relay.rate = number()?,
                "domain_rate" => relay.domain_rate = number()?,
                _ => {
                    return Err(invalid(format!(
                        "?{key}={value}: the query takes tls=starttls (smtp://), max_connections, rate and domain_rate"
                    )));
                }
            }
        }
        Ok(relay)
    }

    /// The password, from wherever it is configured.
    pub fn password(&self) -> Result<Option<String>, ValidationError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        if let Some(variable) = &self.password_env {
            return std::env::var(variable).map(Some).map_err(|_| {
                ValidationError::new("password_env", format!("${variable} is not set"))
            });
        }
        if let Some(file) = &self.password_file {
            return std::fs::read_to_string(file)
                .map(|text| Some(text.trim_end().to_owned()))
                .map_err(|error| {
                    ValidationError::new("password_file", format!("{}: {error}", file.display()))
                });
        }
        Ok(None)
    }
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
}

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
            tasks: BTreeMap::new(),
            schedules: seed_schedules(),
            smtp: SmtpSettings::default(),
            campaigns: CampaignSettings::default(),
        }
    }
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
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            lease_grace: Duration::from_secs(15),
            reap_interval: Duration::from_secs(1),
            database_pool_size: 16,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_worker_capacity: 10_000,
            max_stream_buffer_bytes: 16 * 1024 * 1024,
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

impl Config {
    /// Loads the defaults, then `path` (or `celeritas.toml` in the working directory, when it
    /// exists), then the environment, and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file: Option<PathBuf> = match path {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ValidationError::new(
                    "--config",
                    format!("{} does not exist", file.display()),
                )
                .into());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed("CELERITAS_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Ok(url) = std::env::var("CELERITAS_SMTP_URL") {
            let relay = RelaySettings::from_url(&url)?;
            config
                .smtp
                .relays
                .insert(config.smtp.default_relay.clone(), relay);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration from TOML text over the defaults, ignoring the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, references between sections, limits.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.routing().map(|_| ())?;
        self.schedules().map(|_| ())?;
        if self.campaigns.stall_after.is_zero() {
            return Err(ValidationError::new(
                "campaigns.stall_after",
                "must be positive",
            ));
        }
        if self.worker.concurrency == 0 {
            return Err(ValidationError::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.worker.prefetch_multiplier == 0 {
            return Err(ValidationError::new(
                "worker.prefetch_multiplier",
                "must be at least 1",
            ));
        }
        if self.coordinator.max_worker_capacity == 0 {
            return Err(ValidationError::new(
                "coordinator.max_worker_capacity",
                "must be at least 1",
            ));
        }
        if self.coordinator.max_stream_buffer_bytes == 0 {
            return Err(ValidationError::new(
                "coordinator.max_stream_buffer_bytes",
                "must be at least 1",
            ));
        }
        if self.coordinator.database_pool_size < 2 {
            return Err(ValidationError::new(
                "coordinator.database_pool_size",
                "must be at least 2",
            ));
        }
        let coordinator = &self.coordinator;
        for (field, value) in [
            (
                "coordinator.heartbeat_interval",
                coordinator.heartbeat_interval,
            ),
            ("coordinator.poll_interval", coordinator.poll_interval),
            ("coordinator.reap_interval", coordinator.reap_interval),
        ] {
            if value.is_zero() {
                return Err(ValidationError::new(field, "must be positive"));
            }
        }
        // Renewals run every third of the TTL; a lease must outlive a missed renewal, and a
        // worker is taken for dead after three missed heartbeats.
        if coordinator.lease_ttl < coordinator.heartbeat_interval * 3 {
            return Err(ValidationError::new(
                "coordinator.lease_ttl",
                "must be at least three heartbeat intervals",
            ));
        }
        Ok(())
    }

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
                    JsonText::from_value(&args),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed() {
        let routing = Config::default().routing().unwrap();
        let queue = |name: &str| QueueName::parse("q", name).unwrap();
        let task = |name: &str| TaskName::parse("t", name).unwrap();
        assert_eq!(routing.queue_priority(&queue("import")), Some(5));
        assert_eq!(routing.queue_priority(&queue("email")), Some(10));
        assert_eq!(routing.queue_priority(&queue("campaigns")), Some(10));
        assert_eq!(routing.queue_priority(&queue("default")), Some(0));
        assert_eq!(
            routing.route(&task("send_campaign")),
            Some(&queue("campaigns"))
        );
        assert_eq!(
            routing.route(&task("send_single_email")),
            Some(&queue("email"))
        );
        assert_eq!(
            routing.route(&task("validate_contact_batch")),
            Some(&queue("import"))
        );
        assert_eq!(routing.route(&task("test_celery")), None);
        assert_eq!(routing.default_queue(), &queue("default"));
        let policy = routing.policy(&task("anything"));
        assert_eq!(policy.time_limits.soft, Duration::from_secs(25 * 60));
        assert_eq!(policy.time_limits.hard, Duration::from_secs(30 * 60));
        assert_eq!(Config::default().worker.prefetch_multiplier, 1);
        let schedules = Config::default().schedules().unwrap();
        let names: Vec<&str> = schedules
            .iter()
            .map(|schedule| schedule.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "cleanup_smtp_connections",
                "cleanup_stuck_campaigns",
                "monitor_campaign_progress"
            ]
        );
    }

    #[test]
    fn a_schedule_with_a_bad_cron_names_it() {
        let error =
            Config::from_toml("[schedules.nightly]\ntask = \"noop\"\ncron = \"at night\"\n")
                .unwrap_err();
        assert!(
            error.to_string().contains("schedules.nightly.cron"),
            "{error}"
        );
    }

    #[test]
    fn a_file_adds_queues_and_overrides_task_policies() {
        let config = Config::from_toml(
            r#"
            [queues.bulk]
            priority = 1
            [routes]
            nightly_report = "bulk"
            [tasks.nightly_report]
            hard_time_limit = "2h"
            soft_time_limit = "1h 50m"
            max_retries = 0
            "#,
        )
        .unwrap();
        let routing = config.routing().unwrap();
        let report = TaskName::parse("t", "nightly_report").unwrap();
        assert_eq!(routing.route(&report).unwrap().as_str(), "bulk");
        assert_eq!(routing.policy(&report).max_retries, 0);
        assert_eq!(
            routing.policy(&report).time_limits.hard,
            Duration::from_secs(7200)
        );
        assert_eq!(routing.queues().len(), 5);
    }

    #[test]
    fn a_route_to_an_unknown_queue_names_the_route() {
        let error = Config::from_toml("[routes]\nsend_campaign = \"mail\"\n").unwrap_err();
        assert!(
            error.to_string().contains("routes.send_campaign"),
            "{error}"
        );
    }

    #[test]
    fn smtp_urls_name_host_port_credentials_and_tls() {
        let relay =
            RelaySettings::from_url("smtp://news%40vs:p%3Ass@mail.example.com:587?tls=starttls")
                .unwrap();
        assert_eq!(relay.host, "mail.example.com");
        assert_eq!(relay.port, Some(587));
        assert_eq!(relay.tls, "starttls");
        assert_eq!(relay.username.as_deref(), Some("news@vs"));
        assert_eq!(relay.password().unwrap().as_deref(), Some("p:ss"));
        assert!(
            !format!("{relay:?}").contains("p:ss"),
            "the password is never printed"
        );
        assert_eq!(
            RelaySettings::from_url("smtps://relay:465").unwrap().tls,
            "tls"
        );
        assert_eq!(
            RelaySettings::from_url("smtp://127.0.0.1:2525")
                .unwrap()
                .tls,
            "none"
        );
        assert!(RelaySettings::from_url("http://relay").is_err());
        assert!(RelaySettings::from_url("smtp://relay?pool=3").is_err());
        let relay = RelaySettings::from_url("smtp://relay?max_connections=3&rate=50").unwrap();
        assert_eq!((relay.max_connections, relay.rate), (3, 50));
        assert_eq!(relay.username, None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = Config::from_toml("[coordinator]\nlisten_on = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(error.to_string().contains("listen_on"), "{error}");
    }
}
