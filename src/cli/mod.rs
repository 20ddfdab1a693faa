//! The `celeritas` command line: Celery's vocabulary over the coordinator's API.

/// Prints a line on stdout; when the reader has gone away (`celeritas … | head`), the command
/// ends quietly with exit code 141, as a process killed by SIGPIPE would, instead of panicking.
macro_rules! outln {
    ($($argument:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($argument)*)))
    };
}

/// Prints a line on stderr, ignoring a closed stderr: a message nobody can read is no reason to
/// panic.
macro_rules! errln {
    ($($argument:tt)*) => {
        $crate::cli::write_stderr(format_args!("{}\n", format_args!($($argument)*)))
    };
}

mod bench_command;
mod bulk_commands;
mod client_commands;
mod file_commands;
mod follow_command;
mod import_command;
mod inspect_commands;
mod rate_commands;
mod record_commands;
mod schedule_commands;
mod serve_commands;
mod table;
mod task_commands;
mod token_commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::{TokenSecret, ValidationError};
use crate::grpc::CoordinatorClient;
use crate::grpc::client::Target;
use crate::worker::Registry;

/// The coordinator address client commands use by default.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// celeritas: a task-execution platform with a gRPC coordinator on Postgres and remote workers.
#[derive(Debug, Parser)]
#[command(name = "celeritas", version, about, max_term_width = 100)]
pub struct Cli {
    /// The configuration file; `celeritas.toml` in the working directory is read when it exists.
    #[arg(long, global = true, env = "CELERITAS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a coordinator: the gRPC API, the dispatcher and the store's migrations.
    Coordinator(serve_commands::CoordinatorArgs),
    /// Runs a worker that connects to a coordinator and runs tasks from its queues.
    Worker(serve_commands::WorkerArgs),
    /// Runs a coordinator and a worker on every queue in one process, for development.
    Dev(serve_commands::DevArgs),
    /// Applies the database migrations and exits.
    Migrate(serve_commands::MigrateArgs),
    /// Submits a task and prints its id (or, with --wait or --wait-tree, its result).
    Submit(client_commands::SubmitArgs),
    /// Shows a task.
    Status(client_commands::StatusArgs),
    /// Cancels a task: a pending one never starts, a running one is told to stop.
    Cancel(client_commands::CancelArgs),
    /// Cancels every pending and scheduled task of a queue.
    Purge(client_commands::PurgeArgs),
    /// Pauses a queue: no worker gets a new lease from it until it is resumed.
    PauseQueue(client_commands::QueueArgs),
    /// Resumes a paused queue.
    ResumeQueue(client_commands::QueueArgs),
    /// Pauses a task tree (a campaign): waiting tasks are held, running ones stop and wait.
    PauseTree(client_commands::TreeArgs),
    /// Resumes a paused task tree where it left off.
    ResumeTree(client_commands::TreeArgs),
    /// Sets a rate limit (a key or `*` pattern) for every coordinator, over a configured one
    SetRateLimit(rate_commands::SetRateLimitArgs),
    /// Removes a rate limit set with set-rate-limit
    ClearRateLimit(rate_commands::ClearRateLimitArgs),
    /// Ends a stuck task's attempt and puts it back on its queue (a failed attempt, retried).
    Requeue(client_commands::InterveneArgs),
    /// Ends a stuck task's attempt and fails the task.
    Fail(client_commands::InterveneArgs),
    /// Puts failed tasks chosen by name, queue, tree, error kind or time back on their queues.
    RetryTasks(bulk_commands::RetryTasksArgs),
    /// Cancels unfinished tasks chosen by name, queue, tree, state or time.
    CancelTasks(bulk_commands::CancelTasksArgs),
    /// Lists tasks by name, state, tree and how long they have been quiet.
    Tasks(task_commands::TasksArgs),
    /// Lists the records a task tree wrote (contacts, deliveries), page by page.
    Records(record_commands::RecordsArgs),
    /// Tells the workers of a queue to close their idle pooled SMTP connections.
    CloseIdleConnections(task_commands::CloseIdleArgs),
    /// Checks a coordinator's health (grpc.health.v1); exits 0 when it is serving.
    Health(client_commands::HealthArgs),
    /// Shows what workers and queues are doing, as `celery inspect` does.
    Inspect(inspect_commands::InspectArgs),
    /// Shows a task tree's progress live until it finishes.
    Follow(follow_command::FollowArgs),
    /// Manages periodic schedules.
    Schedules(schedule_commands::SchedulesArgs),
    /// Uploads a file for tasks to read (an import's CSV or XLSX) and prints its id.
    Upload(file_commands::UploadArgs),
    /// Uploads a contact file and submits its import (import_contacts_async); prints the
    /// import's id, or with --wait a summary of its records, or with --follow its progress.
    Import(import_command::ImportArgs),
    /// Measures throughput and latency with no-op tasks, against a coordinator it starts (with
    /// workers) or one given with --coordinator.
    Bench(bench_command::BenchArgs),
    /// Creates, lists and revokes API tokens in the store; hashes one for the configuration.
    Tokens(token_commands::TokensArgs),
}

/// How client commands (and workers) reach a coordinator, and what they show it.
#[derive(Clone, Args)]
pub struct CoordinatorAddress {
    /// The coordinator's URL: http://host:port, or https://host:port for TLS.
    #[arg(long = "coordinator", env = "CELERITAS_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "URL", global = true)]
    pub url: String,
    /// The CA (PEM) that signed the coordinator's certificate, for https:// URLs; without it the
    /// public web roots are trusted.
    #[arg(
        long = "tls-ca",
        env = "CELERITAS_TLS_CA",
        value_name = "FILE",
        global = true
    )]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present: a worker's identity.
    #[arg(
        long = "tls-cert",
        env = "CELERITAS_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "tls-key",
        env = "CELERITAS_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The API token sent with every call (prefer the environment: a flag shows in `ps`).
    #[arg(
        long = "token",
        env = "CELERITAS_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for CoordinatorAddress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CoordinatorAddress")
            .field("url", &self.url)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl CoordinatorAddress {
    /// The coordinator and the credentials given.
    pub fn target(&self) -> Result<Target, ValidationError> {
        Ok(Target {
            url: self.url.clone(),
            ca_file: self.tls_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            token: self
                .token
                .as_deref()
                .map(|token| TokenSecret::parse("--token", token.trim()))
                .transpose()?,
        })
    }

    /// A client of the coordinator, connected with the credentials given.
    pub async fn connect(&self) -> anyhow::Result<CoordinatorClient> {
        Ok(CoordinatorClient::connect_to(&self.target()?).await?)
    }
}

/// Runs the command; the exit code says whether it (or the task it waited for) succeeded.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    run_with_tasks(cli, no_tasks).await
}

/// Adds a team's own tasks to a worker's registry, beside the built-ins; an error (a name
/// taken, by a built-in or twice) stops the worker at start.
pub type TaskRegistration = fn(&mut Registry) -> Result<(), ValidationError>;

fn no_tasks(_registry: &mut Registry) -> Result<(), ValidationError> {
    Ok(())
}

/// The whole `celeritas` program, for a binary of a team's own: the command line parsed,
/// logging set up, every command as `celeritas` has it, and `register` adding the team's tasks
/// to the workers it runs (`worker` and `dev`). A custom worker's `main` is this one call:
///
/// ```no_run
/// # use celeritas::worker::Registry;
/// # use celeritas::domain::ValidationError;
/// fn register(registry: &mut Registry) -> Result<(), ValidationError> {
///     registry.register_fn("reports.build", |_context, args| async move { Ok(args) })?;
///     Ok(())
/// }
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     celeritas::cli::main_with_tasks(register).await
/// }
/// ```
pub async fn main_with_tasks(register: TaskRegistration) -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    match run_with_tasks(cli, register).await {
        Ok(code) => code,
        Err(error) => {
            // Not `eprintln!`, which panics when stderr is closed.
            write_stderr(format_args!("error: {}\n", causes(&error)));
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line, `register` adding tasks to the workers it runs.
pub async fn run_with_tasks(cli: Cli, register: TaskRegistration) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Coordinator(args) => {
            let url = args.database.database_url.clone();
            serve_commands::coordinator(args, config)
                .await
                .map_err(|error| explain_missing_database(error, &url))
        }
        Command::Worker(args) => serve_commands::worker(args, config, register).await,
        Command::Dev(args) => {
            let url = args.database_url.clone().unwrap_or_default();
            serve_commands::dev(args, config, register)
                .await
                .map_err(|error| explain_missing_database(error, &url))
        }
        Command::Migrate(args) => {
            let url = args.database.database_url.clone();
            serve_commands::migrate(args, config)
                .await
                .map_err(|error| explain_missing_database(error, &url))
        }
        Command::Submit(args) => client_commands::submit(args).await,
        Command::Status(args) => client_commands::status(args).await,
        Command::Cancel(args) => client_commands::cancel(args).await,
        Command::Purge(args) => client_commands::purge(args).await,
        Command::PauseQueue(args) => client_commands::pause_queue(args, true).await,
        Command::ResumeQueue(args) => client_commands::pause_queue(args, false).await,
        Command::PauseTree(args) => client_commands::pause_tree(args, true).await,
        Command::ResumeTree(args) => client_commands::pause_tree(args, false).await,
        Command::SetRateLimit(args) => rate_commands::set_rate_limit(args).await,
        Command::ClearRateLimit(args) => rate_commands::clear_rate_limit(args).await,
        Command::Requeue(args) => client_commands::intervene(args, false).await,
        Command::Fail(args) => client_commands::intervene(args, true).await,
        Command::RetryTasks(args) => bulk_commands::retry_tasks(args).await,
        Command::CancelTasks(args) => bulk_commands::cancel_tasks(args).await,
        Command::Tasks(args) => task_commands::tasks(args).await,
        Command::Records(args) => record_commands::records(args).await,
        Command::CloseIdleConnections(args) => task_commands::close_idle(args).await,
        Command::Health(args) => client_commands::health(args).await,
        Command::Inspect(args) => inspect_commands::inspect(args).await,
        Command::Follow(args) => follow_command::follow(args).await,
        Command::Schedules(args) => schedule_commands::schedules(args).await,
        Command::Upload(args) => file_commands::upload(args).await,
        Command::Import(args) => import_command::import(args).await,
        Command::Bench(args) => bench_command::bench(args, config, cli.config).await,
        Command::Tokens(args) => token_commands::tokens(args, config).await,
    }
}

/// An error and its causes, each said once: many errors (sqlx's among them) repeat their source
/// in their own message, so a cause already in the text so far is left out.
fn causes(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The exit code of a command whose stdout reader went away: 128 + SIGPIPE, as shells report.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes to stdout; a closed pipe ends the process quietly (see `outln!`).
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        write_stderr(format_args!("error: writing to stdout: {error}\n"));
        std::process::exit(1);
    }
}

/// Writes to stderr, ignoring failures (see `errln!`).
pub fn write_stderr(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// A Postgres database that does not exist (SQLSTATE 3D000) becomes one error with the command
/// that creates it, instead of the driver's message repeated at every level of the chain.
pub(super) fn explain_missing_database(error: anyhow::Error, url: &str) -> anyhow::Error {
    let missing = error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(|database| database.code())
            .is_some_and(|code| code == "3D000")
    });
    let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
        return error;
    };
    if !missing {
        // Name where the store was looked for (never the URL, which may hold a password).
        return error.context(format!(
            "the store at {}:{} (database {:?}, user {:?})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("postgres"),
            options.get_username()
        ));
    }
    let database = options.get_database().unwrap_or("postgres");
    anyhow::anyhow!(
        "database {database:?} does not exist on {}:{}; create it with `createdb -h {} -p {} -U {} {database}` (then run celeritas again)",
        options.get_host(),
        options.get_port(),
        options.get_host(),
        options.get_port(),
        options.get_username(),
    )
}

/// A token that fires on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Cancel before logging: nothing a log line does may stand between a signal and a stop.
        fired.cancel();
        tracing::info!("stop requested; finishing gracefully (signal again to force)");
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Parses a duration given as seconds (`5`, `0.5`) or in words (`2m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_sign_negative() {
            return Err(format!("{text} is negative"));
        }
        return Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string());
    }
    humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds_or_words() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_parses_the_seed_layout() {
        Cli::try_parse_from([
            "celeritas",
            "worker",
            "-Q",
            "default,email,campaigns,import",
            "-c",
            "4",
        ])
        .unwrap();
        Cli::try_parse_from(["celeritas", "submit", "noop", "--args", "{}", "--wait"]).unwrap();
    }
}
