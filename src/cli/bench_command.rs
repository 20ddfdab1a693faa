//! `celeritas bench`: throughput and latency with no-op tasks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::shutdown_on_signal;
use crate::bench::{self, BenchOptions, ClusterPlan};
use crate::config::Config;
use crate::domain::MAX_BATCH_SUBMIT;

/// The database a bench creates (fresh each run) when it starts its own coordinator.
pub const DEFAULT_BENCH_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/celeritas_bench";

/// `celeritas bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A running coordinator with workers attached; without it the bench starts a coordinator
    /// and workers of its own (child processes of this binary) on a fresh database.
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Tasks submitted in the load phase.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub tasks: usize,
    /// Tasks per SubmitTasks call (1 to 10000).
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub batch_size: usize,
    /// Single tasks submitted one after another in the idle phase (0 skips it).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub idle_samples: usize,
    /// Tasks of the load phase whose round trip is measured. Each is a long poll the coordinator
    /// answers, re-reading the task now and then, so many samples slow the run they measure.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub round_trip_samples: usize,
    /// Leave this many tasks pending (priority 0, inserted before the workers start) underneath
    /// the measured ones (priority 1). Needs a coordinator the bench starts; skips the idle phase.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "coordinator"
    )]
    pub preload: usize,
    /// The Postgres database to create, use and drop (any existing one of that name is dropped
    /// first). Only without --coordinator.
    #[arg(long, default_value = DEFAULT_BENCH_DATABASE, value_name = "URL", conflicts_with = "coordinator")]
    pub database_url: String,
    /// Worker processes to start. Only without --coordinator.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        conflicts_with = "coordinator"
    )]
    pub workers: u32,
    /// Each started worker's concurrency (default: the configuration's, the number of CPUs).
    #[arg(short = 'c', long, value_name = "N", conflicts_with = "coordinator")]
    pub concurrency: Option<u32>,
    /// Each started worker's prefetch multiplier (default: the configuration's, 1).
    #[arg(long, value_name = "N", conflicts_with = "coordinator")]
    pub prefetch_multiplier: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn bench(
    args: BenchArgs,
    config: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let options = options(args, &config, config_path)?;
    let report = bench::run(options, shutdown_on_signal()).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        super::write_stdout(format_args!("{}", report.to_table()));
    }
    let failed = report.load.failed + report.idle.as_ref().map_or(0, |idle| idle.failed);
    if failed > 0 {
        errln!("error: {failed} benchmark task(s) did not succeed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the flags and turns them into options; errors name the flag.
fn options(
    args: BenchArgs,
    config: &Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<BenchOptions> {
    if args.tasks == 0 {
        anyhow::bail!("--tasks: must be at least 1");
    }
    if args.batch_size == 0 || args.batch_size > MAX_BATCH_SUBMIT {
        anyhow::bail!(
            "--batch-size: {} is out of range 1 to {MAX_BATCH_SUBMIT}",
            args.batch_size
        );
    }
    if args.workers == 0 {
        anyhow::bail!("--workers: must be at least 1");
    }
    if args.concurrency == Some(0) {
        anyhow::bail!("--concurrency: must be at least 1");
    }
    if args.prefetch_multiplier == Some(0) {
        anyhow::bail!("--prefetch-multiplier: must be at least 1");
    }
    if let Some(url) = &args.coordinator
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        anyhow::bail!("--coordinator: {url:?} is not an http:// or https:// URL");
    }
    if args.coordinator.is_none() && !args.database_url.starts_with("postgres") {
        anyhow::bail!(
            "--database-url: {:?} is not a postgres:// URL (the bench measures the Postgres store)",
            args.database_url
        );
    }
    Ok(BenchOptions {
        coordinator: args.coordinator,
        cluster: ClusterPlan {
            database_url: args.database_url,
            workers: args.workers,
            concurrency: args.concurrency.unwrap_or(config.worker.concurrency),
            prefetch_multiplier: args
                .prefetch_multiplier
                .unwrap_or(config.worker.prefetch_multiplier),
            config: config_path,
        },
        tasks: args.tasks,
        batch_size: args.batch_size,
        idle_samples: args.idle_samples,
        round_trip_samples: args.round_trip_samples,
        preload: args.preload,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(arguments: &[&str]) -> anyhow::Result<BenchOptions> {
        let cli = Cli::try_parse_from(arguments)?;
        let Command::Bench(args) = cli.command else {
            anyhow::bail!("not the bench command");
        };
        options(args, &Config::default(), None)
    }

    #[test]
    fn bad_flags_are_named() {
        let error = parse(&["celeritas", "bench", "--batch-size", "0"]).unwrap_err();
        assert!(error.to_string().contains("--batch-size"), "{error}");
        let error = parse(&["celeritas", "bench", "--tasks", "0"]).unwrap_err();
        assert!(error.to_string().contains("--tasks"), "{error}");
        let error = parse(&["celeritas", "bench", "--coordinator", "localhost:1"]).unwrap_err();
        assert!(error.to_string().contains("--coordinator"), "{error}");
        let error = parse(&["celeritas", "bench", "--database-url", "sqlite://x"]).unwrap_err();
        assert!(error.to_string().contains("--database-url"), "{error}");
        let error = parse(&[
            "celeritas",
            "bench",
            "--coordinator",
            "http://127.0.0.1:1",
            "--preload",
            "5",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("--preload"), "{error}");
    }

    #[test]
    fn defaults_start_a_cluster() {
        let options = parse(&["celeritas", "bench", "--tasks", "10"]).unwrap();
        assert!(options.coordinator.is_none());
        assert_eq!(options.cluster.database_url, DEFAULT_BENCH_DATABASE);
        assert_eq!(options.tasks, 10);
    }
}
