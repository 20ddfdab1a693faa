//! A team's own Rust tasks: `examples/own-tasks` builds `vashsender-worker`, the celeritas
//! command line with its tasks registered beside the built-ins (`cli::main_with_tasks`). Run
//! as a real worker process against a real coordinator.

use std::path::PathBuf;
use std::time::Duration;

use celeritas::domain::{TaskId, TaskState};
use serde_json::json;

use crate::support::{CoordinatorProcess, TestDatabase, WorkerProcess, log_dir, spec, wait_until};

/// `target/debug/vashsender-worker`, which `scripts/test` builds before the tests
/// (`cargo build -p vashsender-worker`).
fn example_binary() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_celeritas")).with_file_name("vashsender-worker");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p vashsender-worker` (scripts/test does)",
        binary.display()
    );
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_own_worker_runs_its_tasks_beside_the_built_ins() {
    let binary = example_binary();
    let database = TestDatabase::create().await;
    let logs = log_dir("own_tasks");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start_binary(
        &binary,
        &coordinator.url,
        &logs,
        "vashsender",
        &["-Q", "default"],
    );
    let mut client = coordinator.client().await;
    let deliveries = json!([
        {"email": "a@example.com", "status": "delivered"},
        {"email": "b@example.com", "status": "failed"},
        {"email": "c@example.com", "status": "delivered"},
    ]);
    let report = client
        .submit(&spec(
            "vashsender.campaign_report",
            json!({"campaign_id": "c-1", "deliveries": deliveries}),
            Some("default"),
        ))
        .await
        .unwrap()
        .id;
    let bad = client
        .submit(&spec(
            "vashsender.campaign_report",
            json!({"campaign_id": "c-2", "deliveries": [{"email": "nobody", "status": "delivered"}]}),
            Some("default"),
        ))
        .await
        .unwrap()
        .id;
    let unparsed = client
        .submit(&spec(
            "vashsender.campaign_report",
            json!({"campaign": "c-3"}),
            Some("default"),
        ))
        .await
        .unwrap()
        .id;
    let noop = client
        .submit(&spec("noop", json!({"hello": 1}), None))
        .await
        .unwrap()
        .id;

    let finished = |id: TaskId| {
        let url = coordinator.url.clone();
        async move {
            let mut client = celeritas::grpc::CoordinatorClient::connect(&url)
                .await
                .unwrap();
            let task = client.task(id).await.unwrap();
            task.state.is_terminal().then_some(task)
        }
    };
    for id in [report, bad, unparsed, noop] {
        wait_until("the task to finish", Duration::from_secs(60), || async {
            finished(id).await.is_some()
        })
        .await;
    }

    let done = finished(report).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(
        done.result.unwrap().to_value(),
        json!({"campaign_id": "c-1", "by_status": {"delivered": 2, "failed": 1}})
    );
    assert_eq!(done.worker_id.unwrap().as_str(), "vashsender");
    let records: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT kind, key, status FROM task_records WHERE task_id = $1::uuid ORDER BY key",
    )
    .bind(report.to_string())
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        records,
        vec![
            (
                "report_line".into(),
                "c-1:delivered".into(),
                "delivered".into()
            ),
            ("report_line".into(), "c-1:failed".into(), "failed".into()),
        ]
    );

    // Bad arguments fail for good at their first attempt, naming what is wrong.
    for (id, field) in [(bad, "deliveries[0].email"), (unparsed, "campaign")] {
        let failed = finished(id).await.unwrap();
        assert_eq!(failed.state, TaskState::Failed, "{failed:?}");
        assert_eq!(failed.attempt, 1);
        let failure = failed.failures.last().unwrap();
        assert_eq!(failure.kind, "invalid_args");
        assert!(failure.message.contains(field), "{failure:?}");
    }

    // The built-ins are still there.
    let noop = finished(noop).await.unwrap();
    assert_eq!(noop.state, TaskState::Succeeded);
    assert_eq!(noop.worker_id.unwrap().as_str(), "vashsender");
}
