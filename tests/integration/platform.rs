//! The core platform with real processes: a coordinator, workers over gRPC, Postgres.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use crate::support::{
    CoordinatorLaunch, CoordinatorProcess, TestDatabase, WorkerProcess, count_in_state, log_dir,
    spec, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_over_four_queues_each_run_on_a_worker_consuming_its_queue() {
    let database = TestDatabase::create().await;
    let logs = log_dir("ten_thousand_tasks");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let messaging = WorkerProcess::start(
        &coordinator,
        &logs,
        "messaging",
        &["-Q", "email,campaigns", "-c", "4"],
    );
    let background = WorkerProcess::start(
        &coordinator,
        &logs,
        "background",
        &["-Q", "import,default", "-c", "2"],
    );
    let consumes: HashMap<&str, HashSet<&str>> = HashMap::from([
        (
            messaging.name.as_str(),
            HashSet::from(["email", "campaigns"]),
        ),
        (
            background.name.as_str(),
            HashSet::from(["import", "default"]),
        ),
    ]);

    let queues = ["email", "campaigns", "import", "default"];
    let mut client = coordinator.client().await;
    let specs: Vec<_> = (0..10_000)
        .map(|index| spec("noop", json!({ "index": index }), Some(queues[index % 4])))
        .collect();
    for batch in specs.chunks(1_000) {
        client.submit_many(batch).await.expect("submit a batch");
    }

    wait_until(
        "10,000 tasks to succeed",
        Duration::from_secs(240),
        || async { count_in_state(&database.pool, "succeeded").await == 10_000 },
    )
    .await;

    let rows: Vec<(String, String, i32, serde_json::Value)> =
        sqlx::query_as("SELECT queue, worker_id, attempt, result FROM tasks")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 10_000);
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut indexes = HashSet::new();
    for (queue, worker, attempt, result) in rows {
        assert!(
            consumes[worker.as_str()].contains(queue.as_str()),
            "a task of queue {queue} ran on {worker}, which does not consume it"
        );
        assert_eq!(attempt, 1, "no task needed a second lease");
        indexes.insert(result["index"].as_u64().expect("noop returns its args"));
        *per_worker.entry(worker).or_default() += 1;
    }
    assert_eq!(
        indexes.len(),
        10_000,
        "every task returned its own arguments"
    );
    assert_eq!(per_worker["messaging"], 5_000);
    assert_eq!(per_worker["background"], 5_000);

    assert!(messaging.terminate().await.success());
    assert!(background.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_every_queue_serves_email_and_campaigns_before_import_before_default() {
    let database = TestDatabase::create().await;
    let logs = log_dir("queue_priorities");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut client = coordinator.client().await;
    // The backlog is submitted lowest priority first, so FIFO alone would get the order wrong.
    for queue in ["default", "import", "campaigns", "email"] {
        let batch: Vec<_> = (0..15)
            .map(|index| {
                spec(
                    "noop",
                    json!({ "queue": queue, "index": index }),
                    Some(queue),
                )
            })
            .collect();
        client.submit_many(&batch).await.unwrap();
    }
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "all-queues",
        &["-Q", "default,email,campaigns,import", "-c", "1"],
    );
    wait_until("the backlog to drain", Duration::from_secs(60), || async {
        count_in_state(&database.pool, "succeeded").await == 60
    })
    .await;

    let order: Vec<String> = sqlx::query_scalar("SELECT queue FROM tasks ORDER BY started_at, seq")
        .fetch_all(&database.pool)
        .await
        .unwrap();
    let rank = |queue: &str| match queue {
        "email" | "campaigns" => 0,
        "import" => 1,
        _ => 2,
    };
    let ranks: Vec<i32> = order.iter().map(|queue| rank(queue)).collect();
    assert!(
        ranks.windows(2).all(|pair| pair[0] <= pair[1]),
        "tasks ran in this queue order: {order:?}"
    );
    // Within a queue, FIFO.
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT queue, (args->>'index')::bigint FROM tasks ORDER BY started_at, seq",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    for queue in ["email", "campaigns", "import", "default"] {
        let in_queue: Vec<i64> = indexes
            .iter()
            .filter(|(name, _)| name == queue)
            .map(|(_, index)| *index)
            .collect();
        assert!(
            in_queue.windows(2).all(|pair| pair[0] < pair[1]),
            "queue {queue} ran out of order: {in_queue:?}"
        );
    }
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_holds_more_than_concurrency_times_prefetch_leases() {
    let database = TestDatabase::create().await;
    let logs = log_dir("prefetch_limit");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut client = coordinator.client().await;
    let batch: Vec<_> = (0..60)
        .map(|_| spec("sleep", json!({ "ms": 100 }), Some("default")))
        .collect();
    client.submit_many(&batch).await.unwrap();
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "prefetching",
        &["-Q", "default", "-c", "2", "--prefetch-multiplier", "3"],
    );

    // Sample what the store shows the worker holding, from its first lease to its last result.
    let mut most_held = 0;
    let mut samples = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (held, succeeded): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('leased', 'running') AND worker_id = $1), \
                    count(*) FILTER (WHERE state = 'succeeded') \
             FROM tasks",
        )
        .bind(&worker.name)
        .fetch_one(&database.pool)
        .await
        .unwrap();
        most_held = most_held.max(held);
        samples += 1;
        assert!(held <= 6, "the worker held {held} leases, more than 2 × 3");
        if succeeded == 60 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tasks did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        samples > 50,
        "sampled often enough to see the worker's holdings"
    );
    assert_eq!(
        most_held, 6,
        "with 60 tasks waiting, the worker filled its 6 places"
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_on_one_coordinator_wakes_a_worker_on_another_at_once() {
    let database = TestDatabase::create().await;
    let logs = log_dir("two_coordinators");
    // A backstop poll of a minute: only the announcement can make the task run in time.
    let launch = |name: &'static str| {
        CoordinatorLaunch::new(&database.url, &logs)
            .name(name)
            .env("CELERITAS_COORDINATOR__POLL_INTERVAL", "60s")
    };
    let front = launch("front").start().await;
    let back = launch("back").start().await;
    let worker = WorkerProcess::start(&back, &logs, "behind", &["-c", "2"]);
    let mut client = front.client().await;
    // Let the worker's hello land, then wait until only an announcement can wake the back
    // coordinator's dispatcher for new work: see `start_up_wakes_have_fired`.
    wait_until(
        "the worker to register",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers")
                .fetch_one(&database.pool)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    wait_until(
        "the back coordinator's start-up wakes to have fired",
        Duration::from_secs(30),
        || start_up_wakes_have_fired(&database, 2, &back, &worker.name),
    )
    .await;
    for round in 0..3 {
        let submitted_at = tokio::time::Instant::now();
        let task = client
            .submit(&spec("noop", json!({ "round": round }), None))
            .await
            .unwrap();
        wait_until(
            "the task to run on the other coordinator's worker",
            Duration::from_secs(10),
            || {
                let mut client = client.clone();
                async move {
                    client.task(task.id).await.unwrap().state
                        == celeritas::domain::TaskState::Succeeded
                }
            },
        )
        .await;
        assert!(
            submitted_at.elapsed() < Duration::from_secs(5),
            "round {round} took {:?}, as if waiting for a poll",
            submitted_at.elapsed()
        );
    }
    assert!(worker.terminate().await.success());
}

/// Whether the wakes a coordinator's dispatcher gets at start-up, which would lease a task
/// submitted elsewhere without any announcement, have all fired: all `coordinators` of the
/// database listen for announcements (a listener wakes its dispatcher once when it starts),
/// and `worker` answers a ping through `coordinator`. The worker grants its first credit (which
/// wakes the dispatcher) as soon as it is welcomed, before anything else it sends on its
/// stream, and the coordinator handles a stream's messages in order: an answered ping means
/// that credit was granted. The dispatcher's round for the last of these wakes follows at once;
/// a submit racing that round would be leased by it, passing without proving the announcement,
/// never failing.
async fn start_up_wakes_have_fired(
    database: &TestDatabase,
    coordinators: i64,
    coordinator: &CoordinatorProcess,
    worker: &str,
) -> bool {
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    if listening < coordinators {
        return false;
    }
    let pings = coordinator
        .client()
        .await
        .ping(Duration::from_secs(1))
        .await
        .unwrap();
    pings
        .iter()
        .any(|ping| ping.worker_id == worker && ping.round_trip.is_some())
}
