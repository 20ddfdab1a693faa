//! `celeritas bench`: how fast tasks go through a coordinator and its workers.
//!
//! The bench submits no-op tasks (`noop`) through the public API and reads the results back
//! through it, so it measures what a client sees. Two clocks are used, and the report says
//! which figure comes from which:
//! - the client's own monotonic clock: submit rate and round trips (from the moment a
//!   `SubmitTask(s)` call is sent to the moment a long-polling `GetTask` answers with the
//!   finished task);
//! - the moments the store records (`created_at` when the coordinator accepted a task,
//!   `started_at` from the worker's start report, `finished_at` when its result arrived):
//!   pickup latency (started − created) and end-to-end throughput (tasks / (last finished −
//!   first created)).
//!
//! Phases: the workers connect; a warm-up batch runs; the idle phase submits single tasks one
//! after another, each waited for before the next; the load phase submits all tasks in batches
//! from one producer while the workers drain them, long-polling a sample of them for round trips;
//! then every task is read back for its moments. With a preload, tasks at priority 0 are
//! inserted before the workers start and the measured tasks go in at priority 1, so they run
//! while the backlog sits in the same queue and the same index.

mod cluster;
mod report;

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use cluster::{ClusterPlan, LocalCluster, ProcessMemory, peak_resident_bytes};
pub use report::{BenchReport, LatencySummary, PhaseReport};

use crate::domain::{JsonText, Priority, TaskId, TaskName, TaskRecord, TaskSpec, TaskState};
use crate::grpc::CoordinatorClient;

/// The longest one long poll asks for; the coordinator caps it at a minute anyway.
const LONG_POLL: Duration = Duration::from_secs(30);
/// How many reads are in flight when the tasks are read back after the run.
const READ_BACK_CONCURRENCY: usize = 32;
/// The batch size preloaded tasks go in with.
const PRELOAD_BATCH: usize = 10_000;
/// Tasks run before measuring, so connections and caches are warm.
const WARM_UP_TASKS: usize = 200;

/// What to measure, and against what.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `None`: start a coordinator and workers as described by `cluster`.
    pub coordinator: Option<String>,
    /// The processes to start when there is no external coordinator.
    pub cluster: ClusterPlan,
    /// Tasks in the load phase.
    pub tasks: usize,
    /// Tasks per `SubmitTasks` call.
    pub batch_size: usize,
    /// Sequential single tasks in the idle phase (0: skip it).
    pub idle_samples: usize,
    /// Tasks of the load phase long-polled for their round trip.
    pub round_trip_samples: usize,
    /// Tasks left pending underneath the measured ones.
    pub preload: usize,
}

/// Runs the benchmark; `stop` (SIGINT/SIGTERM) ends it early, still stopping what it started.
pub async fn run(options: BenchOptions, stop: CancellationToken) -> anyhow::Result<BenchReport> {
    match &options.coordinator {
        Some(url) => {
            let url = url.clone();
            tokio::select! {
                report = measure(&options, &url, None) => report,
                _ = stop.cancelled() => anyhow::bail!("interrupted"),
            }
        }
        None => {
            let mut plan = options.cluster.clone();
            let workers = plan.workers;
            if options.preload > 0 {
                // Workers come after the preload, so the backlog is still there when they do.
                plan.workers = 0;
            }
            let mut cluster = tokio::select! {
                cluster = LocalCluster::start(&plan) => cluster?,
                _ = stop.cancelled() => anyhow::bail!("interrupted"),
            };
            let outcome = tokio::select! {
                outcome = async {
                    if options.preload > 0 {
                        preload(&cluster.url, options.preload).await?;
                        plan.workers = workers;
                        cluster.start_workers_later(&plan).await?;
                    }
                    let url = cluster.url.clone();
                    measure(&options, &url, Some(&cluster)).await
                } => outcome,
                _ = stop.cancelled() => Err(anyhow::anyhow!("interrupted")),
            };
            let logs = cluster.log_directory.clone();
            cluster.stop().await;
            outcome.with_context(|| format!("the processes' logs are in {}", logs.display()))
        }
    }
}

/// Submits the backlog: `count` tasks at priority 0, in large batches.
async fn preload(url: &str, count: usize) -> anyhow::Result<()> {
    let mut client = CoordinatorClient::connect(url).await?;
    let spec = noop_spec(Priority::default());
    let mut left = count;
    while left > 0 {
        let size = left.min(PRELOAD_BATCH);
        client
            .submit_many(&vec![spec.clone(); size])
            .await
            .context("cannot submit the preload")?;
        left -= size;
    }
    Ok(())
}

async fn measure(
    options: &BenchOptions,
    url: &str,
    cluster: Option<&LocalCluster>,
) -> anyhow::Result<BenchReport> {
    let mut client = CoordinatorClient::connect(url).await?;
    let workers = client.ping(Duration::from_secs(2)).await?.len();
    if workers == 0 {
        anyhow::bail!("--coordinator: no worker is connected to {url}");
    }
    // Measured tasks go above the backlog; without one, priority makes no difference.
    let priority = Priority::parse("priority", 1).context("priority 1 is valid")?;
    let spec = noop_spec(priority);

    let warm_up: Vec<TaskId> = client
        .submit_many(&vec![spec.clone(); WARM_UP_TASKS])
        .await?
        .into_iter()
        .map(|inserted| inserted.id)
        .collect();
    read_back(url, &warm_up).await?;

    let idle = if options.preload == 0 && options.idle_samples > 0 {
        Some(idle_phase(&mut client, &spec, options.idle_samples).await?)
    } else {
        None
    };
    let load = load_phase(url, &spec, options).await?;
    let memory = cluster.map(LocalCluster::memory);
    Ok(BenchReport {
        coordinator: url.to_owned(),
        started_coordinator: cluster.is_some(),
        workers,
        plan: cluster.map(|_| options.cluster.clone()),
        tasks: options.tasks,
        batch_size: options.batch_size,
        preload: options.preload,
        idle,
        load,
        memory,
    })
}

fn noop_spec(priority: Priority) -> TaskSpec {
    let mut spec = TaskSpec::new(
        TaskName::parse("name", "noop").unwrap_or_else(|_| unreachable!("noop is a valid name")),
        JsonText::empty_object(),
    );
    spec.priority = priority;
    spec
}

/// One task at a time, each waited for before the next.
async fn idle_phase(
    client: &mut CoordinatorClient,
    spec: &TaskSpec,
    samples: usize,
) -> anyhow::Result<PhaseReport> {
    let mut round_trips = Vec::with_capacity(samples);
    let mut records = Vec::with_capacity(samples);
    let began = Instant::now();
    for _ in 0..samples {
        let sent = Instant::now();
        let inserted = client.submit(spec).await?;
        let record = wait_until_finished(client, inserted.id).await?;
        round_trips.push(sent.elapsed());
        records.push(record);
    }
    let elapsed = began.elapsed();
    Ok(PhaseReport::from_measurements(
        samples,
        elapsed,
        &records,
        round_trips,
    ))
}

/// Long-polls until the task has finished.
async fn wait_until_finished(
    client: &mut CoordinatorClient,
    id: TaskId,
) -> anyhow::Result<TaskRecord> {
    loop {
        let record = client.task_waiting(id, LONG_POLL).await?;
        if record.state.is_terminal() {
            return Ok(record);
        }
    }
}

/// All tasks in batches from one producer while the workers drain them.
async fn load_phase(
    url: &str,
    spec: &TaskSpec,
    options: &BenchOptions,
) -> anyhow::Result<PhaseReport> {
    let mut producer = CoordinatorClient::connect(url).await?;
    // Round trips are long-polled on their own connection, so they do not queue behind the
    // producer's large messages.
    let poller = CoordinatorClient::connect(url).await?;
    let sample_every = options
        .tasks
        .div_ceil(options.round_trip_samples.max(1))
        .max(1);
    let mut pollers: JoinSet<anyhow::Result<Duration>> = JoinSet::new();
    let mut ids = Vec::with_capacity(options.tasks);
    let batch = vec![spec.clone(); options.batch_size];
    let began = Instant::now();
    let mut left = options.tasks;
    while left > 0 {
        let size = left.min(options.batch_size);
        let sent = Instant::now();
        let inserted = producer.submit_many(&batch[..size]).await?;
        for inserted in inserted {
            if ids.len() % sample_every == 0 {
                let mut poller = poller.clone();
                pollers.spawn(async move {
                    wait_until_finished(&mut poller, inserted.id).await?;
                    Ok(sent.elapsed())
                });
            }
            ids.push(inserted.id);
        }
        left -= size;
    }
    let submitted_in = began.elapsed();
    let mut round_trips = Vec::with_capacity(pollers.len());
    while let Some(round_trip) = pollers.join_next().await {
        round_trips.push(round_trip.context("a round-trip poller panicked")??);
    }
    let records = read_back(url, &ids).await?;
    let mut report =
        PhaseReport::from_measurements(options.tasks, submitted_in, &records, round_trips);
    report.submit_rate = Some(options.tasks as f64 / submitted_in.as_secs_f64());
    Ok(report)
}

/// Reads every task back once it has finished.
async fn read_back(url: &str, ids: &[TaskId]) -> anyhow::Result<Vec<TaskRecord>> {
    let client = CoordinatorClient::connect(url).await?;
    let records: Vec<anyhow::Result<TaskRecord>> = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let mut client = client.clone();
            async move { wait_until_finished(&mut client, id).await }
        })
        .buffered(READ_BACK_CONCURRENCY)
        .collect()
        .await;
    records.into_iter().collect()
}

/// The store's moments of a finished task: created, started, finished.
fn moments(record: &TaskRecord) -> Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> {
    Some((record.created_at, record.started_at?, record.finished_at?))
}

fn succeeded(record: &TaskRecord) -> bool {
    record.state == TaskState::Succeeded
}
