//! Flow control: queues paused and resumed across coordinators and restarts, bulk retry and
//! cancel, and rate limits measured at a real SMTP server.

use std::time::Duration;

use celeritas::domain::{ErrorKind, QueueName, TaskId, TaskState};
use celeritas::grpc::client::{ClientError, CoordinatorClient};
use serde_json::json;

use crate::email::{SmtpServer, campaign, configure, recipient};
use crate::support::{
    CoordinatorLaunch, CoordinatorProcess, TestDatabase, WorkerProcess, free_port, log_dir, spec,
    wait_for_state, wait_for_workers, wait_until,
};

/// Runs `celeritas ARGS --coordinator URL`, answering its stdout or panicking with its stderr.
pub(crate) fn cli(url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(args)
        .args(["--coordinator", url])
        .env_remove("CELERITAS_CONFIG")
        .output()
        .expect("run celeritas");
    assert!(
        output.status.success(),
        "celeritas {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// How many of `ids` are in `state`.
async fn count_in(client: &mut CoordinatorClient, ids: &[TaskId], state: TaskState) -> usize {
    let mut count = 0;
    for id in ids {
        if client.task(*id).await.unwrap().state == state {
            count += 1;
        }
    }
    count
}

/// Runs one `noop` on `import` to its end: the dispatchers had their rounds since the call.
async fn round_trip_beside(client: &mut CoordinatorClient) {
    let probe = client
        .submit(&spec("noop", json!({}), Some("import")))
        .await
        .unwrap();
    wait_for_state(client, probe.id, TaskState::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_holds_its_tasks_across_coordinators_and_a_restart() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-pause-queue");
    let address = format!("127.0.0.1:{}", free_port());
    let launch = |name: &str| CoordinatorLaunch::new(&database.url, &logs).name(name);
    let first = launch("first").listen(&address).start().await;
    let second = launch("second").start().await;
    let queues = ["-Q", "default,import", "-c", "4"];
    let workers = [
        WorkerProcess::start(&first, &logs, "on-first", &queues),
        WorkerProcess::start(&second, &logs, "on-second", &queues),
    ];
    let mut client = first.client().await;
    let mut other = second.client().await;
    let default = QueueName::parse("queue", "default").unwrap();

    // A task running when the queue is paused finishes; nothing new starts on any coordinator.
    let running = client
        .submit(&spec("sleep", json!({ "ms": 1500 }), None))
        .await
        .unwrap();
    wait_for_state(&mut client, running.id, TaskState::Running).await;
    let said = cli(&first.url, &["pause-queue", "default"]);
    assert!(said.contains("queue default paused"), "{said}");
    assert!(
        !client.pause_queue(&default).await.unwrap(),
        "paused already"
    );
    let mut held = Vec::new();
    for n in 0..20 {
        let target = if n % 2 == 0 { &mut client } else { &mut other };
        held.push(
            target
                .submit(&spec("noop", json!({ "n": n }), None))
                .await
                .unwrap()
                .id,
        );
    }
    wait_for_state(&mut client, running.id, TaskState::Succeeded).await;
    round_trip_beside(&mut client).await;
    round_trip_beside(&mut other).await;
    assert_eq!(count_in(&mut client, &held, TaskState::Pending).await, 20);
    for coordinator in [&mut client, &mut other] {
        let depth = coordinator.queues().await.unwrap();
        let depth = depth.iter().find(|queue| queue.queue == default).unwrap();
        assert!(depth.paused_at.is_some(), "{depth:?}");
        assert_eq!(depth.by_state.get("pending"), Some(&20));
    }
    let table = cli(&second.url, &["inspect", "queues"]);
    assert!(
        table.contains("PAUSED") && table.contains("since "),
        "{table}"
    );

    // The pause is stored: a restarted coordinator keeps it.
    first.stop_with("TERM").await;
    let first = launch("first-again").listen(&address).start().await;
    let mut client = first.client().await;
    wait_for_workers(&client, "the first worker to come back", |ids| {
        ids.iter().any(|id| id == "on-first")
    })
    .await;
    round_trip_beside(&mut client).await;
    assert_eq!(count_in(&mut client, &held, TaskState::Pending).await, 20);

    // Resumed on the other coordinator, every held task runs.
    assert!(other.resume_queue(&default).await.unwrap());
    let said = cli(&first.url, &["resume-queue", "default"]);
    assert!(said.contains("was not paused"), "{said}");
    wait_until("the held tasks to run", Duration::from_secs(60), || {
        let mut client = client.clone();
        let held = held.clone();
        async move { count_in(&mut client, &held, TaskState::Succeeded).await == held.len() }
    })
    .await;
    let depth = client.queues().await.unwrap();
    assert!(depth.iter().all(|queue| queue.paused_at.is_none()));

    // An unknown queue is refused, naming the field.
    match client
        .pause_queue(&QueueName::parse("queue", "nowhere").unwrap())
        .await
    {
        Err(ClientError::Status { kind, message }) => {
            assert_eq!(kind, ErrorKind::InvalidArgument);
            assert!(
                message.contains("queue") && message.contains("nowhere"),
                "{message}"
            );
        }
        other => panic!("an unknown queue must be refused: {other:?}"),
    }
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

/// Runs `celeritas ARGS --coordinator URL`, answering whether it succeeded, and its stdout and
/// stderr.
fn try_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(args)
        .args(["--coordinator", url])
        .env_remove("CELERITAS_CONFIG")
        .output()
        .expect("run celeritas");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tasks_are_retried_and_waiting_ones_cancelled_in_bulk_after_a_dry_run() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-bulk");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs).start().await;
    let worker = WorkerProcess::start(&coordinator, &logs, "bulk", &["-c", "16"]);
    let mut client = coordinator.client().await;
    let url = coordinator.url.clone();

    // 1,000 tasks fail for a relay that was down, 50 for a bad address; each succeeds once
    // retried (`times: 1`), so what runs again is visible.
    let failing = |kind: &str| {
        spec(
            "fail",
            json!({ "kind": kind, "retryable": false, "times": 1 }),
            None,
        )
    };
    let mut relay_down = Vec::new();
    for _ in 0..10 {
        let specs: Vec<_> = (0..100).map(|_| failing("relay_down")).collect();
        relay_down.extend(
            client
                .submit_many(&specs)
                .await
                .unwrap()
                .iter()
                .map(|task| task.id),
        );
    }
    let specs: Vec<_> = (0..50).map(|_| failing("bad_address")).collect();
    let bad_address: Vec<TaskId> = client
        .submit_many(&specs)
        .await
        .unwrap()
        .iter()
        .map(|task| task.id)
        .collect();
    wait_until("every task to fail", Duration::from_secs(120), || {
        let pool = database.pool.clone();
        async move { crate::support::count_in_state(&pool, "failed").await == 1_050 }
    })
    .await;

    let selector = [
        "retry-tasks",
        "--name",
        "fail",
        "--error-kind",
        "relay_down",
    ];
    let (ok, out, err) = try_cli(&url, &[&selector[..], &["--dry-run", "--json"]].concat());
    assert!(ok, "{err}");
    let counted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counted["matched"], 1_000, "{out}");
    assert_eq!(counted["retried"], 0, "{out}");
    // Without --yes nothing moves, and the command says how to act.
    let (ok, _, err) = try_cli(&url, &selector);
    assert!(!ok);
    assert!(err.contains("pass --yes") && err.contains("1000"), "{err}");
    assert_eq!(
        crate::support::count_in_state(&database.pool, "failed").await,
        1_050
    );

    let (ok, out, err) = try_cli(&url, &[&selector[..], &["--yes"]].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("1000 failed tasks matched; 1000 retried"),
        "{out}"
    );
    wait_until(
        "the retried tasks to succeed",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            let ids = relay_down.clone();
            async move { count_in(&mut client, &ids, TaskState::Succeeded).await == ids.len() }
        },
    )
    .await;
    let retried = client.task(relay_down[0]).await.unwrap();
    assert_eq!(retried.retries, 1);
    assert_eq!(
        retried.failures.len(),
        1,
        "the failed attempt stays in the history"
    );
    assert_eq!(
        count_in(&mut client, &bad_address, TaskState::Failed).await,
        50,
        "another error kind is left alone"
    );

    // Bad selectors change nothing and say why.
    let (ok, _, err) = try_cli(&url, &["retry-tasks", "--yes"]);
    assert!(!ok && err.contains("selector"), "{err}");
    let (ok, _, err) = try_cli(
        &url,
        &["retry-tasks", "--error-kind", "nothing_like_it", "--yes"],
    );
    assert!(!ok && err.contains("matches no task"), "{err}");
    let (ok, _, err) = try_cli(&url, &["cancel-tasks", "--state", "succeeded", "--yes"]);
    assert!(!ok && err.contains("selector.states"), "{err}");
    assert_eq!(
        crate::support::count_in_state(&database.pool, "failed").await,
        50
    );

    // Waiting tasks on a paused queue are cancelled in bulk, after a dry run.
    let import = QueueName::parse("queue", "import").unwrap();
    client.pause_queue(&import).await.unwrap();
    let specs: Vec<_> = (0..30)
        .map(|n| spec("noop", json!({ "n": n }), Some("import")))
        .collect();
    let waiting: Vec<TaskId> = client
        .submit_many(&specs)
        .await
        .unwrap()
        .iter()
        .map(|task| task.id)
        .collect();
    let dry = client
        .cancel_tasks(
            &celeritas::domain::TaskSelector {
                queues: vec![import.clone()],
                ..Default::default()
            },
            false,
            true,
        )
        .await
        .unwrap();
    assert_eq!((dry.matched, dry.changed), (30, 0));
    let (ok, out, err) = try_cli(&url, &["cancel-tasks", "--queue", "import", "--yes"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("30 unfinished tasks matched; 30 cancelled"),
        "{out}"
    );
    assert_eq!(
        count_in(&mut client, &waiting, TaskState::Cancelled).await,
        30
    );
    client.resume_queue(&import).await.unwrap();
    assert!(worker.terminate().await.success());
}

/// Two coordinators on one database and three email workers, two on the first and one on the
/// second, every one connected. A process stops when dropped: keep each field bound for as long
/// as the test needs it.
pub(crate) struct MailCluster {
    pub(crate) first: CoordinatorProcess,
    pub(crate) second: CoordinatorProcess,
    pub(crate) workers: [WorkerProcess; 3],
}

/// Starts a `MailCluster` of workers with `concurrency` each, the coordinators named `first`
/// and `second`.
pub(crate) async fn mail_cluster(
    database: &TestDatabase,
    logs: &std::path::Path,
    concurrency: &str,
) -> MailCluster {
    let launch = |name: &str| CoordinatorLaunch::new(&database.url, logs).name(name);
    let first = launch("first").start().await;
    let second = launch("second").start().await;
    let workers = [
        WorkerProcess::start(&first, logs, "mailer-1", &["-c", concurrency]),
        WorkerProcess::start(&first, logs, "mailer-2", &["-c", concurrency]),
        WorkerProcess::start(&second, logs, "mailer-3", &["-c", concurrency]),
    ];
    wait_for_workers(&first.client().await, "three workers", |ids| ids.len() == 3).await;
    MailCluster {
        first,
        second,
        workers,
    }
}

/// Messages per second over a series of moments: (count − 1) over the time from the first to
/// the last.
pub(crate) fn rate_of(moments: &[f64]) -> f64 {
    let (first, last) = (moments[0], moments[moments.len() - 1]);
    (moments.len() - 1) as f64 / (last - first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_rate_limit_holds_across_every_worker_and_coordinator() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-rate-limit");
    let server = SmtpServer::start(&logs, &[]).await;
    configure(
        &logs,
        &server,
        "[rate_limits]\n\"domain:limited.test\" = \"50/s\"\n",
    );
    let MailCluster {
        first,
        second: _second,
        workers,
    } = mail_cluster(&database, &logs, "8").await;
    let mut client = first.client().await;

    // 1,000 recipients of the limited domain and 1,000 of another, interleaved.
    let recipients: Vec<_> = (0..2_000)
        .map(|n| {
            let domain = if n % 2 == 0 {
                "limited.test"
            } else {
                "free.test"
            };
            recipient(&format!("user{n}@{domain}"), "Reader")
        })
        .collect();
    let args = campaign("limited", recipients, 100);
    let campaign = client
        .submit(&spec("send_campaign", args, None))
        .await
        .unwrap();
    wait_until(
        "every message to arrive",
        Duration::from_secs(120),
        || async { server.messages().len() >= 2_000 },
    )
    .await;
    wait_for_state(&mut client, campaign.id, TaskState::Succeeded).await;

    let messages = server.messages();
    assert_eq!(messages.len(), 2_000, "each recipient once");
    let moments = |domain: &str| {
        let mut moments: Vec<f64> = messages
            .iter()
            .filter(|message| message.to[0].ends_with(domain))
            .map(|message| message.at)
            .collect();
        moments.sort_by(f64::total_cmp);
        moments
    };
    let limited = moments("@limited.test");
    let free = moments("@free.test");
    assert_eq!((limited.len(), free.len()), (1_000, 1_000));
    let rate = rate_of(&limited);
    eprintln!(
        "limited.test: {rate:.1}/s over {:.1} s; free.test: {:.1}/s",
        limited[limited.len() - 1] - limited[0],
        rate_of(&free)
    );
    assert!(
        (45.0..=55.0).contains(&rate),
        "the limited domain got {rate:.1} messages/s over {:.1} s; its limit is 50/s",
        limited[limited.len() - 1] - limited[0]
    );
    // The other domain is not held to the limit: it is done while the limited one has most of
    // its 20 s still to go.
    let free_span = free[free.len() - 1] - free[0];
    let limited_span = limited[limited.len() - 1] - limited[0];
    assert!(
        free_span < limited_span / 2.0,
        "the unlimited domain took {free_span:.1} s, the limited one {limited_span:.1} s"
    );
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rate_keys_are_refused_naming_the_field() {
    use celeritas::grpc::pb;
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-bad-rate-keys");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs).start().await;
    let mut tasks = pb::task_service_client::TaskServiceClient::new(
        crate::validation::channel(&coordinator).await,
    );
    let submit = |rate_keys: Vec<(&str, u32)>| pb::SubmitTaskRequest {
        task: Some(pb::TaskSpec {
            name: "noop".to_owned(),
            args_json: "{}".to_owned(),
            rate_keys: rate_keys
                .into_iter()
                .map(|(key, cost)| (key.to_owned(), cost))
                .collect(),
            ..Default::default()
        }),
    };
    let too_many: Vec<(String, u32)> = (0..65).map(|n| (format!("k{n}"), 1)).collect();
    let too_many: Vec<(&str, u32)> = too_many.iter().map(|(k, c)| (k.as_str(), *c)).collect();
    for (keys, says) in [
        (vec![("domain:*", 1)], "no control characters and no `*`"),
        (vec![("", 1)], "1 to 200 bytes"),
        (vec![("customer:1", 2_000_000)], "is more than"),
        (too_many, "at most 64"),
    ] {
        let status = tasks.submit_task(submit(keys)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("rate_keys") && status.message().contains(says),
            "{}",
            status.message()
        );
    }
    // Good keys are taken, and nothing was written for the refused ones.
    tasks
        .submit_task(submit(vec![("customer:1", 0)]))
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
