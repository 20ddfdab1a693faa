//! What operators use: inspection, periodic schedules across coordinators, metrics.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use celeritas::domain::{JsonText, Schedule, ScheduleSource, TaskName, TaskSpec, Timing};
use celeritas::grpc::pb;
use celeritas::grpc::pb::schedule_service_client::ScheduleServiceClient;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{
    CoordinatorLaunch, TestDatabase, WorkerProcess, count_in_state, free_port, log_dir,
    scrape_metrics, spec, wait_until,
};

fn inspect(url: &str, command: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(["inspect", command, "--json", "--coordinator", url])
        .output()
        .expect("run celeritas inspect");
    assert!(output.status.success(), "inspect {command}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reflects_a_known_running_workload() {
    let database = TestDatabase::create().await;
    let logs = log_dir("inspect");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "300ms")
        .start()
        .await;
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "inspected",
        &[
            "-Q",
            "default,email",
            "-c",
            "2",
            "--prefetch-multiplier",
            "2",
        ],
    );
    let mut client = coordinator.client().await;
    let quick: Vec<_> = (0..5).map(|_| spec("noop", json!({}), None)).collect();
    client.submit_many(&quick).await.unwrap();
    wait_until("the quick tasks", Duration::from_secs(30), || async {
        count_in_state(&database.pool, "succeeded").await == 5
    })
    .await;
    let slow: Vec<_> = (0..6)
        .map(|_| spec("sleep", json!({"ms": 60_000}), None))
        .collect();
    client.submit_many(&slow).await.unwrap();
    wait_until(
        "two running and two reserved",
        Duration::from_secs(30),
        || async {
            count_in_state(&database.pool, "running").await == 2
                && count_in_state(&database.pool, "leased").await == 2
        },
    )
    .await;
    // Heartbeats carry the counters: wait until one after the quick tasks has come in.
    wait_until(
        "a heartbeat counting the quick tasks",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                client.workers().await.unwrap().iter().any(|worker| {
                    worker.id == "inspected"
                        && worker
                            .stats
                            .as_ref()
                            .is_some_and(|stats| stats.processed.get("noop") == Some(&5))
                })
            }
        },
    )
    .await;
    let url = coordinator.url.clone();
    let (ping, active, reserved, stats, queues, registered, depths) =
        tokio::task::spawn_blocking(move || {
            (
                inspect(&url, "ping"),
                inspect(&url, "active"),
                inspect(&url, "reserved"),
                inspect(&url, "stats"),
                inspect(&url, "active_queues"),
                inspect(&url, "registered"),
                inspect(&url, "queues"),
            )
        })
        .await
        .unwrap();

    let ping = ping.as_array().unwrap();
    assert_eq!(ping.len(), 1);
    assert_eq!(ping[0]["worker_id"], "inspected");
    let round_trip = ping[0]["round_trip_ms"].as_f64().expect("a round trip");
    assert!(round_trip > 0.0 && round_trip < 2_000.0, "{round_trip}");

    for (listing, expected) in [(&active, 2), (&reserved, 2)] {
        let tasks = listing.as_array().unwrap();
        assert_eq!(tasks.len(), expected, "{listing}");
        assert!(
            tasks
                .iter()
                .all(|task| task["worker_id"] == "inspected" && task["name"] == "sleep")
        );
    }
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .all(|task| task["state"] == "running")
    );
    assert!(
        reserved
            .as_array()
            .unwrap()
            .iter()
            .all(|task| task["state"] == "leased")
    );

    let stats = &stats.as_array().unwrap()[0];
    assert_eq!(stats["worker_id"], "inspected");
    assert_eq!(stats["connected"], true);
    assert_eq!(stats["concurrency"], 2);
    assert_eq!(stats["prefetch_multiplier"], 2);
    assert_eq!(stats["processed"]["noop"], 5, "{stats}");
    assert!(stats["memory_rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(stats["pid"].as_u64().unwrap() > 0);

    let queues = &queues.as_array().unwrap()[0]["queues"];
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email", "default"], "highest priority first");
    let registered = &registered.as_array().unwrap()[0]["task_names"];
    assert!(
        registered
            .as_array()
            .unwrap()
            .iter()
            .any(|name| name == "fan_out")
    );

    let default = depths
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == "default")
        .unwrap();
    assert_eq!(default["tasks_by_state"]["running"], 2);
    assert_eq!(default["tasks_by_state"]["leased"], 2);
    assert_eq!(default["tasks_by_state"]["pending"], 2);
    assert!(default["oldest_pending_age_seconds"].as_f64().is_some());
    assert_eq!(default["consumers"], 1);
    let import = depths
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == "import")
        .unwrap();
    assert_eq!(import["consumers"], 0);
    drop(worker);
}

fn every_second(name: &str) -> Schedule {
    Schedule {
        name: name.to_owned(),
        task: {
            let mut task = TaskSpec::new(
                TaskName::parse("name", "noop").unwrap(),
                JsonText::from_value(&json!({ "schedule": name })),
            );
            task.queue = Some(celeritas::domain::QueueName::parse("queue", "import").unwrap());
            task
        },
        timing: Timing::every("every", Duration::from_secs(1)).unwrap(),
        paused: false,
        next_run_at: None,
        last_run_at: None,
        last_task_id: None,
        source: ScheduleSource::Api,
    }
}

async fn ticks(database: &TestDatabase, name: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar(
        "SELECT created_at FROM tasks WHERE args->>'schedule' = $1 ORDER BY created_at",
    )
    .bind(name)
    .fetch_all(&database.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_enqueue_each_tick_exactly_once_and_a_restart_runs_only_the_latest_missed()
{
    let database = TestDatabase::create().await;
    let logs = log_dir("beat");
    let first = CoordinatorLaunch::new(&database.url, &logs)
        .name("first")
        .start()
        .await;
    let second = CoordinatorLaunch::new(&database.url, &logs)
        .name("second")
        .start()
        .await;
    let mut client = first.client().await;
    client.put_schedule(&every_second("ticker")).await.unwrap();
    wait_until("eight ticks", Duration::from_secs(30), || async {
        ticks(&database, "ticker").await.len() >= 8
    })
    .await;
    client.pause_schedule("ticker", true).await.unwrap();
    let seen = ticks(&database, "ticker").await;
    // Each tick once: consecutive ticks are about a second apart, never twice in one.
    for pair in seen.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(
            gap >= 500,
            "two tasks {gap} ms apart: a tick enqueued twice"
        );
    }
    let scheduled = client.list_schedules().await.unwrap();
    let ticker = scheduled
        .iter()
        .find(|schedule| schedule.name == "ticker")
        .unwrap();
    assert!(ticker.paused);
    assert!(ticker.last_task_id.is_some());
    // The seed's schedules came from the configuration.
    let names: HashSet<&str> = scheduled
        .iter()
        .map(|schedule| schedule.name.as_str())
        .collect();
    assert!(
        names.contains("monitor_campaign_progress") && names.contains("cleanup_stuck_campaigns")
    );

    // Downtime: both coordinators stop for several ticks; only the latest missed one runs.
    client
        .put_schedule(&every_second("catch_up"))
        .await
        .unwrap();
    wait_until("a first tick", Duration::from_secs(10), || async {
        !ticks(&database, "catch_up").await.is_empty()
    })
    .await;
    first.stop_with("KILL").await;
    second.stop_with("KILL").await;
    let before = ticks(&database, "catch_up").await.len();
    // Down until the stored next tick is three seconds (three intervals) past: four or more
    // ticks are missed.
    wait_until("four missed ticks", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT next_run_at <= now() - interval '3 seconds' FROM schedules WHERE name = $1",
        )
        .bind("catch_up")
        .fetch_one(&database.pool)
        .await
        .unwrap()
    })
    .await;
    let back = CoordinatorLaunch::new(&database.url, &logs)
        .name("back")
        .start()
        .await;
    wait_until(
        "the back coordinator to run the missed tick",
        Duration::from_secs(30),
        || async { ticks(&database, "catch_up").await.len() > before },
    )
    .await;
    back.client()
        .await
        .pause_schedule("catch_up", true)
        .await
        .unwrap();
    let after = ticks(&database, "catch_up").await.len();
    assert!(
        after - before <= 2,
        "{} ticks after four seconds down; only the latest missed should run",
        after - before
    );
    assert!(after > before, "the missed tick ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_by_field() {
    let database = TestDatabase::create().await;
    let logs = log_dir("bad_schedules");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs).start().await;
    let channel = tonic::transport::Endpoint::from_shared(coordinator.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut schedules = ScheduleServiceClient::new(channel);
    let put = |timing: pb::schedule::Timing, timezone: &str| pb::PutScheduleRequest {
        schedule: Some(pb::Schedule {
            name: "nightly".to_owned(),
            task: Some(pb::TaskSpec {
                name: "noop".to_owned(),
                ..Default::default()
            }),
            timing: Some(timing),
            timezone: timezone.to_owned(),
            ..Default::default()
        }),
    };
    let cases = [
        (
            put(pb::schedule::Timing::Cron("at midnight".to_owned()), ""),
            "schedule.cron",
        ),
        (
            put(
                pb::schedule::Timing::Cron("0 3 * * *".to_owned()),
                "Mars/Olympus",
            ),
            "schedule.timezone",
        ),
        (
            put(
                pb::schedule::Timing::Every(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000,
                }),
                "",
            ),
            "schedule.every",
        ),
    ];
    for (request, field) in cases {
        let status = schedules.put_schedule(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{status:?}"
        );
    }
    let mut unknown_queue = put(pb::schedule::Timing::Cron("0 3 * * *".to_owned()), "UTC");
    unknown_queue
        .schedule
        .as_mut()
        .unwrap()
        .task
        .as_mut()
        .unwrap()
        .queue = Some("nowhere".to_owned());
    let status = schedules.put_schedule(unknown_queue).await.unwrap_err();
    assert!(
        status.message().starts_with("schedule.task.queue:"),
        "{status:?}"
    );
    let status = schedules
        .delete_schedule(pb::DeleteScheduleRequest {
            name: "never-made".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// Reads a Prometheus text page into `name{labels} → value`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_the_workload() {
    let database = TestDatabase::create().await;
    let logs = log_dir("metrics");
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let coordinator = CoordinatorLaunch::new(&database.url, &logs)
        .metrics(&metrics_address)
        .start()
        .await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "measured", &["-c", "4"]);
    let mut client = coordinator.client().await;
    let mut batch: Vec<_> = (0..20)
        .map(|_| spec("noop", json!({}), Some("email")))
        .collect();
    batch.extend((0..3).map(|_| spec("fail", json!({"retryable": false}), Some("email"))));
    client.submit_many(&batch).await.unwrap();
    wait_until("every task to end", Duration::from_secs(30), || async {
        count_in_state(&database.pool, "succeeded").await == 20
            && count_in_state(&database.pool, "failed").await == 3
    })
    .await;
    // The gauges refresh every ten seconds.
    let mut metrics = HashMap::new();
    for _ in 0..30 {
        metrics = scrape_metrics(&metrics_address).await;
        if metrics.get("celeritas_workers_connected") == Some(&1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        metrics.get(r#"celeritas_tasks_submitted_total{queue="email"}"#),
        Some(&23.0),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get(r#"celeritas_tasks_finished_total{queue="email",outcome="succeeded"}"#),
        Some(&20.0)
    );
    assert_eq!(
        metrics.get(r#"celeritas_tasks_finished_total{queue="email",outcome="failed"}"#),
        Some(&3.0)
    );
    assert_eq!(metrics.get("celeritas_workers_connected"), Some(&1.0));
    assert_eq!(
        metrics.get(r#"celeritas_task_queue_wait_seconds_count{queue="email"}"#),
        Some(&23.0)
    );
    assert_eq!(
        metrics.get(r#"celeritas_task_run_seconds_count{name="noop"}"#),
        Some(&20.0)
    );
}

/// Two coordinators on one database, a Rust worker on the first: tasks of a name no worker
/// registered wait (both coordinators show them unserved, in `inspect queues` and `inspect
/// registered`), noops submitted after them run; a worker registering the name on the second
/// coordinator gets every one at its first attempt. Nothing fails `unregistered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wait_on_any_coordinator_for_a_worker_that_registered_their_name() {
    use celeritas::domain::{
        CoordinatorMessage, Hello, Outcome, QueueName, WorkerId, WorkerMessage,
    };
    use futures::StreamExt;

    let database = TestDatabase::create().await;
    let logs = log_dir("registered_names");
    let first = CoordinatorLaunch::new(&database.url, &logs)
        .name("first")
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "300ms")
        .start()
        .await;
    let second = CoordinatorLaunch::new(&database.url, &logs)
        .name("second")
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "300ms")
        .start()
        .await;
    let _rust = WorkerProcess::start(&first, &logs, "rust", &["-Q", "default", "-c", "4"]);
    let mut client = first.client().await;
    let mut reports = Vec::new();
    for n in 0..20 {
        let spec = spec("reports.build", json!({ "n": n }), Some("default"));
        reports.push(client.submit(&spec).await.unwrap().id);
    }
    for _ in 0..20 {
        client.submit(&spec("noop", json!({}), None)).await.unwrap();
    }
    wait_until("the noops to run", Duration::from_secs(60), || async {
        count_in_state(&database.pool, "succeeded").await == 20
    })
    .await;
    assert_eq!(count_in_state(&database.pool, "pending").await, 20);
    for coordinator in [&first, &second] {
        let depths = inspect(&coordinator.url, "queues");
        let default = depths
            .as_array()
            .unwrap()
            .iter()
            .find(|queue| queue["name"] == "default")
            .unwrap();
        assert_eq!(
            default["unserved"],
            json!({ "reports.build": 20 }),
            "{default}"
        );
    }
    let registered = Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(["inspect", "registered", "--coordinator", &second.url])
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.contains("default") && registered.contains("reports.build (20)"),
        "{registered}"
    );

    let hello = Hello {
        worker_id: WorkerId::parse("worker_id", "python").unwrap(),
        hostname: "test".to_owned(),
        pid: 1,
        queues: vec![QueueName::parse("queue", "default").unwrap()],
        concurrency: 20,
        prefetch_multiplier: 1,
        task_names: vec![TaskName::parse("name", "reports.build").unwrap()],
        version: "test".to_owned(),
        held_leases: vec![],
    };
    let mut link = celeritas::grpc::WorkerLink::open(&second.url, hello)
        .await
        .unwrap();
    link.outbound.send(WorkerMessage::Credit(20)).await.unwrap();
    let mut leased = Vec::new();
    while leased.len() < 20 {
        let message = tokio::time::timeout(Duration::from_secs(30), link.inbound.next())
            .await
            .expect("leases within 30 s")
            .expect("the stream stays open")
            .expect("the stream works");
        if let CoordinatorMessage::Lease(lease) = message {
            assert_eq!(lease.name.as_str(), "reports.build");
            assert_eq!(lease.token.attempt, 1);
            link.outbound
                .send(WorkerMessage::Result {
                    token: lease.token,
                    outcome: Outcome::Succeeded(JsonText::empty_object()),
                })
                .await
                .unwrap();
            leased.push(lease.token.task_id);
        }
    }
    leased.sort();
    reports.sort();
    assert_eq!(leased, reports);
    wait_until(
        "the reports to succeed",
        Duration::from_secs(30),
        || async { count_in_state(&database.pool, "succeeded").await == 40 },
    )
    .await;
    let unregistered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE failures::text LIKE '%unregistered%'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(unregistered, 0);
}
