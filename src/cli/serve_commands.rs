//! The long-running commands: `coordinator` and `worker`, and `migrate`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{CoordinatorAddress, parse_duration, shutdown_on_signal};
use crate::config::Config;
use crate::domain::QueueName;
use crate::grpc::client::Target;
use crate::startup::Application;
use crate::store::{self, DEFAULT_EMBEDDED_URL};
use crate::tasks::builtin_registry;
use crate::worker::{self, WorkerOptions, default_worker_id, hostname};

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The store: a Postgres URL, or `sqlite://PATH` for the embedded store (one coordinator).
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: String,
}

/// `celeritas coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The address to listen on (default from the configuration: 127.0.0.1:50051).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where to serve Prometheus metrics at /metrics, or `none` (default 127.0.0.1:9464).
    #[arg(long, value_parser = parse_metrics_listen, value_name = "ADDR|none")]
    pub metrics_listen: Option<MetricsListen>,
    /// Listen beyond loopback without TLS or tokens (on a network you trust).
    #[arg(long)]
    pub allow_insecure: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `celeritas worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// The queues to consume, comma-separated (default: every configured queue).
    #[arg(short = 'Q', long, value_delimiter = ',', value_name = "QUEUES")]
    pub queues: Vec<String>,
    /// How many tasks run at once (default from the configuration: the number of CPUs).
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Leases held per unit of concurrency (default 1, as in the seed).
    #[arg(long, value_name = "N")]
    pub prefetch_multiplier: Option<u32>,
    /// The worker's name, unique among workers (default: host:pid).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub name: Option<String>,
    /// How long to wait for running tasks when stopping (default 30s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Option<Duration>,
    /// After this many tasks, drain and replace this process with a fresh one (the seed uses
    /// 1000), so leaks cannot accumulate.
    #[arg(long, value_name = "N")]
    pub max_tasks_per_child: Option<u64>,
    /// Append one JSON line per attempt started to this file (for audits and tests).
    #[arg(long, value_name = "FILE")]
    pub execution_log: Option<std::path::PathBuf>,
}

/// `celeritas dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The address to listen on (default from the configuration: 127.0.0.1:50051).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The store: a Postgres URL, or `sqlite://PATH` (default: the embedded store in
    /// ./.celeritas/celeritas.db).
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// How many tasks the built-in worker runs at once.
    #[arg(short = 'c', long, default_value_t = 4, value_name = "N")]
    pub concurrency: u32,
    /// Listen beyond loopback without TLS or tokens (on a network you trust).
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `celeritas migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn coordinator(args: CoordinatorArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        config.coordinator.listen = listen;
    }
    if let Some(MetricsListen(metrics)) = args.metrics_listen {
        config.coordinator.metrics_listen = metrics;
    }
    config.coordinator.allow_insecure |= args.allow_insecure;
    let stop = shutdown_on_signal();
    let application = Application::build(&config, &args.database.database_url, &stop).await?;
    tracing::info!(address = %application.address(), "coordinator listening");
    // Announce the address on stdout too, for scripts that start a coordinator on port 0.
    outln!("listening on {}", application.address());
    let application_stop = application.stop_token();
    tokio::spawn(async move {
        stop.cancelled().await;
        application_stop.cancel();
    });
    application.run_until_stopped().await?;
    tracing::info!("coordinator stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(
    args: WorkerArgs,
    config: Config,
    register: super::TaskRegistration,
) -> anyhow::Result<ExitCode> {
    let queues = if args.queues.is_empty() {
        config
            .routing()?
            .queues()
            .into_iter()
            .map(|(queue, _)| queue)
            .collect()
    } else {
        args.queues
            .iter()
            .map(|queue| QueueName::parse("-Q", queue.trim()))
            .collect::<Result<Vec<_>, _>>()?
    };
    let hostname = hostname();
    let worker_id = match &args.name {
        Some(name) => crate::domain::WorkerId::parse("--name", name)?,
        None => default_worker_id(&hostname)?,
    };
    let options = WorkerOptions {
        coordinator: args.coordinator.target()?,
        worker_id,
        hostname,
        queues,
        concurrency: args.concurrency.unwrap_or(config.worker.concurrency).max(1),
        prefetch_multiplier: args
            .prefetch_multiplier
            .unwrap_or(config.worker.prefetch_multiplier)
            .max(1),
        shutdown_timeout: args
            .shutdown_timeout
            .unwrap_or(config.worker.shutdown_timeout),
        reconnect_backoff_max: config.worker.reconnect_backoff_max,
        max_tasks_per_child: args
            .max_tasks_per_child
            .or(config.worker.max_tasks_per_child)
            .filter(|limit| *limit > 0),
        execution_log: args.execution_log,
    };
    let registry = registry_with(&config, &options.coordinator, register)?;
    let summary = worker::run(options, registry, shutdown_on_signal()).await?;
    tracing::info!(
        processed = summary.processed,
        failed = summary.failed,
        peak_leases = summary.peak_leases,
        "worker stopped"
    );
    if summary.recycle {
        return Err(replace_process());
    }
    Ok(ExitCode::SUCCESS)
}

/// The seed's development scenario in one process: a coordinator and one worker on every queue.
pub async fn dev(
    args: DevArgs,
    mut config: Config,
    register: super::TaskRegistration,
) -> anyhow::Result<ExitCode> {
    let database_url = args
        .database_url
        .unwrap_or_else(|| DEFAULT_EMBEDDED_URL.to_owned());
    if let Some(listen) = args.listen {
        config.coordinator.listen = listen;
    }
    config.coordinator.allow_insecure |= args.allow_insecure;
    let credentials = dev_worker_credentials(&mut config)?;
    let stop = shutdown_on_signal();
    let application = Application::build(&config, &database_url, &stop).await?;
    let address = application.address();
    let coordinator_stop = application.stop_token();
    let coordinator = tokio::spawn(application.run_until_stopped());
    let scheme = if credentials.ca_file.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{address}");
    outln!("listening on {address}");
    outln!(
        "celeritas dev: a coordinator and a worker on every queue (-c {}), store {database_url}",
        args.concurrency
    );
    let celeritas = command_for_hints();
    outln!("try, from another shell:");
    outln!("  {celeritas} submit test_celery --coordinator {url} --wait");
    outln!("  {celeritas} submit sleep --args '{{\"ms\": 500}}' --coordinator {url}");
    outln!("  {celeritas} status <task id> --coordinator {url}");
    let queues = config
        .routing()?
        .queues()
        .into_iter()
        .map(|(queue, _)| queue)
        .collect();
    let hostname = hostname();
    let options = WorkerOptions {
        coordinator: Target {
            url: url.clone(),
            ..credentials
        },
        worker_id: default_worker_id(&hostname)?,
        hostname,
        queues,
        concurrency: args.concurrency.max(1),
        prefetch_multiplier: config.worker.prefetch_multiplier,
        shutdown_timeout: config.worker.shutdown_timeout,
        reconnect_backoff_max: config.worker.reconnect_backoff_max,
        max_tasks_per_child: None,
        execution_log: None,
    };
    // The worker drains first, while its coordinator can still take back leases and record
    // results; then the coordinator stops.
    let registry = registry_with(&config, &options.coordinator, register)?;
    let drained = worker::run(options, registry, stop).await;
    coordinator_stop.cancel();
    coordinator.await??;
    drained?;
    Ok(ExitCode::SUCCESS)
}

/// What `dev`'s built-in worker shows its own coordinator. With `[auth] required`, a token made
/// for this run (admin, so the campaign upkeep runs too) joins the configured ones in memory;
/// it is never written anywhere. With `[coordinator.tls]`, the worker trusts the coordinator's
/// own certificate file, which suits the self-signed certificate of a development machine.
fn dev_worker_credentials(config: &mut Config) -> anyhow::Result<Target> {
    let mut target = Target::plain("");
    if let Some(tls) = &config.coordinator.tls {
        if tls.require_client_cert {
            anyhow::bail!(
                "coordinator.tls.require_client_cert: celeritas dev's built-in worker has no \
                 client certificate; run `celeritas coordinator` and `celeritas worker` instead"
            );
        }
        target.ca_file = Some(tls.cert_file.clone());
    }
    if config.auth.required {
        let secret = crate::domain::TokenSecret::generate();
        let name = "celeritas-dev";
        config.auth.tokens.insert(
            name.to_owned(),
            crate::config::ConfiguredToken {
                roles: vec!["admin".to_owned()],
                sha256: secret.digest().to_hex(),
            },
        );
        if !config.auth.worker_queues.is_empty() {
            config
                .auth
                .worker_queues
                .insert(name.to_owned(), vec!["*".to_owned()]);
        }
        target.token = Some(secret);
    }
    Ok(target)
}

/// How hints name this program: `celeritas` when that is on PATH, else the running executable's
/// path (someone who ran `cargo run` has no `celeritas` to type).
fn command_for_hints() -> String {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join("celeritas").is_file())
    });
    if on_path {
        return "celeritas".to_owned();
    }
    std::env::current_exe().map_or_else(
        |_| "celeritas".to_owned(),
        |executable| executable.display().to_string(),
    )
}

/// Where metrics are served: an address, or nowhere.
#[derive(Debug, Clone, Copy)]
pub struct MetricsListen(Option<SocketAddr>);

/// `ADDR`, or `none` for no metrics.
fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    if text == "none" {
        return Ok(MetricsListen(None));
    }
    text.parse()
        .map(|address| MetricsListen(Some(address)))
        .map_err(|error| format!("{text:?} is not an address or `none`: {error}"))
}

/// Replaces this process with a fresh run of the same command line; returns only on failure.
/// The process id stays, so a worker keeps its default id.
fn replace_process() -> anyhow::Error {
    tracing::info!("starting a fresh worker process");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        match std::env::current_exe() {
            Ok(executable) => {
                let error = std::process::Command::new(executable)
                    .args(std::env::args_os().skip(1))
                    .exec();
                anyhow::anyhow!("cannot start a fresh worker process: {error}")
            }
            Err(error) => anyhow::anyhow!("cannot find this executable to restart it: {error}"),
        }
    }
    #[cfg(not(unix))]
    {
        anyhow::anyhow!("--max-tasks-per-child needs a Unix system")
    }
}

pub async fn migrate(args: MigrateArgs, config: Config) -> anyhow::Result<ExitCode> {
    let store = store::open(
        &args.database.database_url,
        config.coordinator.database_pool_size,
    )
    .await?;
    store.migrate().await?;
    outln!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// The built-in tasks and the ones `register` adds; a name taken stops the worker at start.
fn registry_with(
    config: &Config,
    coordinator: &Target,
    register: super::TaskRegistration,
) -> anyhow::Result<worker::Registry> {
    let mut registry = builtin_registry(config, coordinator)?;
    register(&mut registry).map_err(|error| anyhow::anyhow!("registering tasks: {error}"))?;
    Ok(registry)
}
