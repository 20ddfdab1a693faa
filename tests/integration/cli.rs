//! The command line against a real coordinator and worker.

use std::process::Command;

use crate::support::{CoordinatorProcess, TestDatabase, WorkerProcess, log_dir};

fn celeritas(arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(arguments)
        .env_remove("CELERITAS_COORDINATOR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run celeritas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_result_and_exits_by_the_tasks_outcome() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-worker", &["-c", "2"]);
    let url = coordinator.url.clone();

    let run = |arguments: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            celeritas(&arguments)
        })
    };
    let succeeded = run(vec![
        "submit".into(),
        "test_celery".into(),
        "--wait".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(succeeded.status.success(), "{succeeded:?}");
    let result: serde_json::Value = serde_json::from_slice(&succeeded.stdout).unwrap();
    assert_eq!(result["message"], "celeritas is working");

    let failed = run(vec![
        "submit".into(),
        "sleep".into(),
        "--args".into(),
        r#"{"seconds": 1}"#.into(),
        "--wait".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("invalid_args"));

    let submitted = run(vec![
        "submit".into(),
        "noop".into(),
        "--args".into(),
        r#"{"n": 7}"#.into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(submitted.status.success());
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();
    uuid::Uuid::parse_str(&id).expect("submit prints the new task's id");

    let refused = run(vec![
        "submit".into(),
        "noop".into(),
        "--queue".into(),
        "nowhere".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("task.queue: unknown queue"));

    let status = run(vec![
        "status".into(),
        id.clone(),
        "--json".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(status.status.success());
    let task: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["args"]["n"], 7);

    assert!(worker.terminate().await.success());
}

#[test]
fn migrate_applies_the_schema_and_is_repeatable() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(TestDatabase::create());
    for _ in 0..2 {
        let output = celeritas(&["migrate", "--database-url", &database.url]);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "migrations applied"
        );
    }
    let tables: i64 = runtime.block_on(
        sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('tasks', 'workers')",
        )
        .fetch_one(&database.pool),
    )
    .unwrap();
    assert_eq!(tables, 2);
    drop(database);
}
