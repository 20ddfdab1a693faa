//! Delivery guarantees with real processes: crashes of workers, coordinators and Postgres lose
//! nothing; leases are fenced; retries, time limits, expiry and cancellation behave.

use std::collections::HashMap;
use std::time::Duration;

use celeritas::domain::{ErrorKind, ExpiresAt, StartAt, TaskId, TaskState};
use celeritas::grpc::{ClientError, CoordinatorClient};
use serde_json::json;

use crate::support::{
    CoordinatorLaunch, CoordinatorProcess, TemporaryPostgres, TestDatabase, WorkerProcess,
    count_in_state, executions, free_port, log_dir, spec, wait_until,
};

/// Coordinator settings that make a lost worker noticed within seconds.
fn quick_failover(launch: CoordinatorLaunch<'_>) -> CoordinatorLaunch<'_> {
    launch
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "500ms")
        .env("CELERITAS_COORDINATOR__LEASE_TTL", "3s")
        .env("CELERITAS_COORDINATOR__LEASE_GRACE", "1s")
        .env("CELERITAS_COORDINATOR__REAP_INTERVAL", "200ms")
        .env("CELERITAS_TASK_DEFAULTS__RETRY_BACKOFF", "50ms")
}

async fn state_of(client: &mut CoordinatorClient, id: TaskId) -> TaskState {
    client.task(id).await.expect("get the task").state
}

async fn wait_for_end(client: CoordinatorClient, id: TaskId) -> celeritas::domain::TaskRecord {
    wait_until("a task to end", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { state_of(&mut client, id).await.is_terminal() }
    })
    .await;
    client.clone().task(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_workers_mid_run_loses_nothing_and_repeats_only_work_in_flight() {
    let database = TestDatabase::create().await;
    let logs = log_dir("worker_kill");
    let coordinator = quick_failover(CoordinatorLaunch::new(&database.url, &logs))
        .start()
        .await;
    let journal = logs.join("executions.jsonl");
    let journal_arg = journal.display().to_string();
    let doomed = WorkerProcess::start(
        &coordinator,
        &logs,
        "doomed",
        &["-c", "4", "--execution-log", &journal_arg],
    );
    let survivor = WorkerProcess::start(
        &coordinator,
        &logs,
        "survivor",
        &["-c", "4", "--execution-log", &journal_arg],
    );
    let mut client = coordinator.client().await;
    let specs: Vec<_> = (0..5_000)
        .map(|_| spec("sleep", json!({ "ms": 3 }), Some("default")))
        .collect();
    for batch in specs.chunks(1_000) {
        client.submit_many(batch).await.unwrap();
    }
    wait_until(
        "a quarter of the tasks to finish",
        Duration::from_secs(120),
        || async { count_in_state(&database.pool, "succeeded").await >= 1_250 },
    )
    .await;
    doomed.kill().await;

    wait_until(
        "every task to succeed",
        Duration::from_secs(180),
        || async { count_in_state(&database.pool, "succeeded").await == 5_000 },
    )
    .await;
    let runs = executions(&journal);
    let mut per_task: HashMap<&str, Vec<&crate::support::Execution>> = HashMap::new();
    for run in &runs {
        per_task.entry(run.task_id.as_str()).or_default().push(run);
    }
    assert_eq!(per_task.len(), 5_000, "every task ran");
    let repeated: Vec<_> = per_task.values().filter(|runs| runs.len() > 1).collect();
    for runs in &repeated {
        assert_eq!(runs.len(), 2, "a task ran more than twice: {runs:?}");
        assert_eq!(
            runs[0].worker_id, "doomed",
            "only the killed worker's work repeats: {runs:?}"
        );
        assert_eq!(runs[1].worker_id, "survivor");
        assert!(runs[1].attempt > runs[0].attempt);
    }
    assert!(
        repeated.len() <= 4,
        "{} tasks repeated; the killed worker ran at most 4 at once",
        repeated.len()
    );
    // A lost attempt is recorded when the coordinator knew the task had started; a task the
    // killed worker began just before dying may have been requeued as unstarted instead.
    let lost: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM tasks WHERE failures @> '[{\"kind\": \"worker_lost\"}]'",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    for id in &lost {
        assert_eq!(
            per_task[id.as_str()].len(),
            2,
            "task {id} was recorded lost and ran again"
        );
    }
    assert!(survivor.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_restarted_mid_run_gracefully_or_killed_run_every_task_once() {
    let database = TestDatabase::create().await;
    let logs = log_dir("coordinator_restart");
    let address = format!("127.0.0.1:{}", free_port());
    let launch = |name: &'static str| {
        CoordinatorLaunch::new(&database.url, &logs)
            .name(name)
            .listen(&address)
    };
    let coordinator = launch("coordinator-1").start().await;
    let journal = logs.join("executions.jsonl");
    let journal_arg = journal.display().to_string();
    let workers: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            WorkerProcess::start(
                &coordinator,
                &logs,
                name,
                &["-c", "4", "--execution-log", &journal_arg],
            )
        })
        .collect();
    let mut client = coordinator.client().await;
    let specs: Vec<_> = (0..3_000)
        .map(|_| spec("sleep", json!({ "ms": 5 }), Some("default")))
        .collect();
    for batch in specs.chunks(1_000) {
        client.submit_many(batch).await.unwrap();
    }
    wait_until("some tasks to finish", Duration::from_secs(60), || async {
        count_in_state(&database.pool, "succeeded").await >= 500
    })
    .await;
    coordinator.stop_with("TERM").await;
    let coordinator = launch("coordinator-2").start().await;
    wait_until("more tasks to finish", Duration::from_secs(60), || async {
        count_in_state(&database.pool, "succeeded").await >= 1_500
    })
    .await;
    coordinator.stop_with("KILL").await;
    let _coordinator = launch("coordinator-3").start().await;

    wait_until(
        "every task to succeed",
        Duration::from_secs(180),
        || async { count_in_state(&database.pool, "succeeded").await == 3_000 },
    )
    .await;
    let runs = executions(&journal);
    let mut per_task: HashMap<&str, usize> = HashMap::new();
    for run in &runs {
        *per_task.entry(run.task_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_task.len(), 3_000);
    let repeated: Vec<_> = per_task.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        repeated.is_empty(),
        "tasks ran more than once: {repeated:?}"
    );
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_refuses_submits_reports_not_serving_and_heals_by_itself() {
    let postgres = TemporaryPostgres::start();
    let logs = log_dir("postgres_outage");
    let coordinator = CoordinatorLaunch::new(&postgres.url, &logs).start().await;
    let worker = WorkerProcess::start(&coordinator, &logs, "steady", &["-c", "2"]);
    let mut client = coordinator.client().await;
    let address = coordinator.address.clone();
    let health = |expected: &'static str| {
        let address = address.clone();
        async move {
            wait_until(
                &format!("health {expected}"),
                Duration::from_secs(30),
                || {
                    let address = address.clone();
                    async move {
                        crate::health::check_health(&address, &[""])
                            == format!("(server) {expected}\n")
                    }
                },
            )
            .await;
        }
    };
    health("SERVING").await;
    let mut accepted = Vec::new();
    for _ in 0..10 {
        let task = client
            .submit(&spec("sleep", json!({ "ms": 300 }), None))
            .await
            .unwrap();
        accepted.push(task.id);
    }

    postgres.crash();
    for _ in 0..5 {
        match client.submit(&spec("noop", json!({}), None)).await {
            Err(ClientError::Status { kind, message }) => {
                assert_eq!(kind, ErrorKind::Unavailable, "{message}")
            }
            other => panic!("a submit during the outage must be refused as unavailable: {other:?}"),
        }
    }
    health("NOT_SERVING").await;

    postgres.resume();
    health("SERVING").await;
    for _ in 0..10 {
        let task = client.submit(&spec("noop", json!({}), None)).await.unwrap();
        accepted.push(task.id);
    }
    for id in &accepted {
        let id = *id;
        let mut client = client.clone();
        wait_until(
            "an accepted task to succeed",
            Duration::from_secs(60),
            || {
                let mut client = client.clone();
                async move { state_of(&mut client, id).await == TaskState::Succeeded }
            },
        )
        .await;
        let _ = client.task(id).await.unwrap();
    }
    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(written, 20, "exactly the accepted submissions were written");
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_the_grace_period_loses_its_task_and_its_late_result_is_refused() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cut_off_worker");
    let coordinator = quick_failover(CoordinatorLaunch::new(&database.url, &logs))
        .start()
        .await;
    let journal = logs.join("executions.jsonl");
    let journal_arg = journal.display().to_string();
    let frozen = WorkerProcess::start(
        &coordinator,
        &logs,
        "frozen",
        &["-c", "1", "--execution-log", &journal_arg],
    );
    let mut client = coordinator.client().await;
    let task = client
        .submit(&spec("sleep", json!({ "ms": 3_000 }), Some("default")))
        .await
        .unwrap();
    wait_until(
        "the task to start on the first worker",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move { state_of(&mut client, task.id).await == TaskState::Running }
        },
    )
    .await;
    frozen.signal("STOP");
    let rescuer = WorkerProcess::start(
        &coordinator,
        &logs,
        "rescuer",
        &["-c", "1", "--execution-log", &journal_arg],
    );
    wait_until(
        "the task to move to the second worker",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                let record = client.task(task.id).await.unwrap();
                record.attempt == 2
                    && record
                        .worker_id
                        .is_some_and(|worker| worker.as_str() == "rescuer")
            }
        },
    )
    .await;
    frozen.signal("CONT");
    wait_until("the task to succeed", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { state_of(&mut client, task.id).await == TaskState::Succeeded }
    })
    .await;
    // The frozen worker finishes its copy and reconnects; its result is refused.
    wait_until(
        "the frozen worker to hear its result was refused",
        Duration::from_secs(30),
        || {
            let log = logs.join("frozen.log");
            async move {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("refused")
            }
        },
    )
    .await;
    let record = client.task(task.id).await.unwrap();
    assert_eq!(record.worker_id.unwrap().as_str(), "rescuer");
    assert_eq!(record.attempt, 2);
    assert_eq!(record.failures.len(), 1);
    assert_eq!(record.failures[0].kind, "worker_lost");
    assert_eq!(record.failures[0].worker_id.as_deref(), Some("frozen"));
    let runs = executions(&journal);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(rescuer.terminate().await.success());
    assert!(frozen.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_limits_let_tasks_clean_up_and_hard_limits_abort_tasks_that_ignore_them() {
    let database = TestDatabase::create().await;
    let logs = log_dir("time_limits");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "limited", &["-c", "2"]);
    let mut client = coordinator.client().await;

    let mut polite = spec("sleep", json!({ "ms": 60_000 }), None);
    polite.soft_time_limit = Some(Duration::from_millis(500));
    polite.hard_time_limit = Some(Duration::from_secs(30));
    let polite = client.submit(&polite).await.unwrap();

    let mut stubborn = spec("sleep", json!({ "ms": 60_000, "ignore_stop": true }), None);
    stubborn.soft_time_limit = Some(Duration::from_millis(300));
    stubborn.hard_time_limit = Some(Duration::from_secs(1));
    let stubborn = client.submit(&stubborn).await.unwrap();

    for id in [polite.id, stubborn.id] {
        wait_until("the task to end", Duration::from_secs(20), || {
            let mut client = client.clone();
            async move { state_of(&mut client, id).await.is_terminal() }
        })
        .await;
    }
    let polite = client.task(polite.id).await.unwrap();
    assert_eq!(polite.state, TaskState::Succeeded);
    let result = polite.result.unwrap().to_value();
    assert_eq!(
        result["interrupted"], true,
        "the task saw its soft limit: {result}"
    );
    assert!(result["slept_ms"].as_u64().unwrap() < 5_000);

    let stubborn = client.task(stubborn.id).await.unwrap();
    assert_eq!(stubborn.state, TaskState::Failed);
    assert_eq!(stubborn.error.as_ref().unwrap().0, "time_limit");
    assert_eq!(stubborn.retries, 0, "a time limit is not retried");
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_permanent_errors_expiry_cancellation_and_purge_behave() {
    let database = TestDatabase::create().await;
    let logs = log_dir("task_lifecycle");
    let coordinator = quick_failover(CoordinatorLaunch::new(&database.url, &logs))
        .start()
        .await;
    // Nobody consumes `import` in this test: tasks there wait until cancelled or expired.
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "lifecycle",
        &["-Q", "default", "-c", "2"],
    );
    let mut client = coordinator.client().await;
    let waiter = client.clone();
    let wait_terminal = |id: TaskId| wait_for_end(waiter.clone(), id);

    // Retried with backoff until it succeeds.
    let flaky = client
        .submit(&spec("fail", json!({ "times": 2 }), None))
        .await
        .unwrap();
    let flaky = wait_terminal(flaky.id).await;
    assert_eq!(flaky.state, TaskState::Succeeded);
    assert_eq!(flaky.retries, 2);
    assert_eq!(flaky.attempt, 3);
    assert_eq!(flaky.failures.len(), 2);
    assert!(
        flaky
            .failures
            .iter()
            .all(|failure| failure.kind == "requested_failure")
    );

    // A permanent error fails after one attempt.
    let permanent = client
        .submit(&spec(
            "fail",
            json!({ "retryable": false, "kind": "bad_address" }),
            None,
        ))
        .await
        .unwrap();
    let permanent = wait_terminal(permanent.id).await;
    assert_eq!(permanent.state, TaskState::Failed);
    assert_eq!(permanent.attempt, 1);
    assert_eq!(permanent.error.unwrap().0, "bad_address");

    // Retries run out.
    let mut exhausted = spec("fail", json!({}), None);
    exhausted.max_retries = Some(1);
    let exhausted = wait_terminal(client.submit(&exhausted).await.unwrap().id).await;
    assert_eq!(exhausted.state, TaskState::Failed);
    assert_eq!(exhausted.attempt, 2);
    assert_eq!(exhausted.failures.len(), 2);

    // Not started before its expiry: expired, never run.
    let mut expiring = spec("noop", json!({}), Some("import"));
    expiring.expires = ExpiresAt::After(Duration::from_millis(500));
    let expiring = wait_terminal(client.submit(&expiring).await.unwrap().id).await;
    assert_eq!(expiring.state, TaskState::Expired);
    assert_eq!(expiring.attempt, 0);

    // A pending task cancelled never starts.
    let waiting = client
        .submit(&spec("noop", json!({}), Some("import")))
        .await
        .unwrap();
    let cancelled = client.cancel(waiting.id, false).await.unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(cancelled.attempt, 0);

    // A countdown holds a task back, then it runs.
    let mut delayed = spec("noop", json!({}), None);
    delayed.start = StartAt::After(Duration::from_secs(1));
    let delayed = wait_for_end(client.clone(), client.submit(&delayed).await.unwrap().id).await;
    assert_eq!(delayed.state, TaskState::Succeeded);
    let waited = delayed.started_at.unwrap() - delayed.created_at;
    assert!(
        waited >= chrono::Duration::seconds(1),
        "it started after {waited}"
    );

    // A scheduled task cancelled never starts either.
    let mut later = spec("noop", json!({}), None);
    later.start = StartAt::After(Duration::from_secs(1));
    let later = client.submit(&later).await.unwrap();
    assert_eq!(
        client.cancel(later.id, false).await.unwrap().state,
        TaskState::Cancelled
    );

    // Running tasks: asked to stop, or terminated.
    let polite = client
        .submit(&spec("sleep", json!({ "ms": 60_000 }), None))
        .await
        .unwrap();
    let stubborn = client
        .submit(&spec(
            "sleep",
            json!({ "ms": 60_000, "ignore_stop": true }),
            None,
        ))
        .await
        .unwrap();
    for id in [polite.id, stubborn.id] {
        wait_until("the task to run", Duration::from_secs(30), || {
            let mut client = client.clone();
            async move { state_of(&mut client, id).await == TaskState::Running }
        })
        .await;
    }
    assert_eq!(
        client.cancel(polite.id, false).await.unwrap().state,
        TaskState::Cancelled
    );
    assert_eq!(
        client.cancel(stubborn.id, true).await.unwrap().state,
        TaskState::Cancelled
    );
    // Both places come back: the worker runs new work at once.
    let follow_up = client.submit(&spec("noop", json!({}), None)).await.unwrap();
    let second = client.submit(&spec("noop", json!({}), None)).await.unwrap();
    assert_eq!(
        wait_terminal(follow_up.id).await.state,
        TaskState::Succeeded
    );
    assert_eq!(wait_terminal(second.id).await.state, TaskState::Succeeded);
    assert_eq!(
        client.task(polite.id).await.unwrap().state,
        TaskState::Cancelled
    );
    assert_eq!(
        client.task(waiting.id).await.unwrap().state,
        TaskState::Cancelled
    );

    // Cancelling a finished task changes nothing.
    assert_eq!(
        client.cancel(follow_up.id, false).await.unwrap().state,
        TaskState::Succeeded
    );

    // Purge cancels what waits in a queue.
    let backlog: Vec<_> = (0..5)
        .map(|_| spec("noop", json!({}), Some("import")))
        .collect();
    client.submit_many(&backlog).await.unwrap();
    assert_eq!(
        client
            .purge(&celeritas::domain::QueueName::parse("q", "import").unwrap())
            .await
            .unwrap(),
        5
    );

    // Bad input names its field.
    let unknown = client.cancel(TaskId::generate(), false).await.unwrap_err();
    assert!(
        matches!(&unknown, ClientError::Status { kind: ErrorKind::NotFound, message } if message.starts_with("task_id:")),
        "{unknown:?}"
    );
    let mut greedy = spec("noop", json!({}), None);
    greedy.max_retries = Some(5_000);
    let refused = client.submit(&greedy).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Status { message, .. } if message.starts_with("task.max_retries:")),
        "{refused:?}"
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_replaces_itself_after_max_tasks_per_child() {
    let database = TestDatabase::create().await;
    let logs = log_dir("recycling");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "recycled",
        &["-c", "1", "--max-tasks-per-child", "5"],
    );
    let pid = worker.pid();
    let mut client = coordinator.client().await;
    let batch: Vec<_> = (0..12).map(|_| spec("noop", json!({}), None)).collect();
    client.submit_many(&batch).await.unwrap();
    wait_until("every task to succeed", Duration::from_secs(60), || async {
        count_in_state(&database.pool, "succeeded").await == 12
    })
    .await;
    let log = std::fs::read_to_string(logs.join("recycled.log")).unwrap();
    assert_eq!(
        log.matches("starting a fresh worker process").count(),
        2,
        "{log}"
    );
    assert_eq!(
        worker.pid(),
        pid,
        "the fresh process replaced the old one in place"
    );
    assert!(worker.terminate().await.success());
}
