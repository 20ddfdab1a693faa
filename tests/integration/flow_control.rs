//! Flow control: queues paused and resumed across coordinators and restarts.

use std::time::Duration;

use celeritas::domain::{ErrorKind, QueueName, TaskId, TaskState};
use celeritas::grpc::client::{ClientError, CoordinatorClient};
use serde_json::json;

use crate::support::{
    CoordinatorLaunch, TestDatabase, WorkerProcess, free_port, log_dir, spec, wait_for_state,
    wait_until,
};

/// Runs `celeritas ARGS --coordinator URL`, answering its stdout or panicking with its stderr.
fn cli(url: &str, args: &[&str]) -> String {
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
    wait_until(
        "the first worker to come back",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                client
                    .workers()
                    .await
                    .unwrap()
                    .iter()
                    .any(|worker| worker.id == "on-first" && worker.connected)
            }
        },
    )
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
