//! `celeritas bench`: it runs end to end, reports every figure, and cleans up after itself.
//! Figures are printed, never asserted: tests do not time anything.

use std::process::Command;
use std::time::Duration;

use crate::support::{
    CoordinatorProcess, TestDatabase, WorkerProcess, log_dir, server_url, wait_until, with_database,
};

fn bench(arguments: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .arg("bench")
        .args(arguments)
        .env_remove("CELERITAS_COORDINATOR")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run celeritas bench")
}

async fn run_bench(arguments: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || bench(&arguments))
        .await
        .expect("the bench ran")
}

fn parse_report(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("the bench prints JSON")
}

async fn database_exists(name: &str) -> bool {
    let admin = sqlx::PgPool::connect(&server_url())
        .await
        .expect("connect to Postgres");
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await
        .expect("query pg_database");
    admin.close().await;
    found.is_some()
}

fn strings(arguments: &[&str]) -> Vec<String> {
    arguments
        .iter()
        .map(|argument| (*argument).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_of_its_own_reports_every_figure_and_drops_its_database() {
    let name = format!("celeritas_test_bench_{}", uuid::Uuid::new_v4().simple());
    let url = with_database(&server_url(), &name);
    let mut arguments = strings(&[
        "--tasks",
        "300",
        "--batch-size",
        "100",
        "--idle-samples",
        "5",
        "--round-trip-samples",
        "30",
        "--workers",
        "2",
        "-c",
        "4",
        "--json",
        "--database-url",
    ]);
    arguments.push(url.clone());
    let report = parse_report(&run_bench(arguments).await);
    assert_eq!(report["tasks"], 300);
    assert_eq!(report["workers"], 2);
    assert_eq!(report["started_coordinator"], true);
    let load = &report["load"];
    assert_eq!(load["failed"], 0);
    assert!(load["submit_rate_per_second"].as_f64().unwrap() > 0.0);
    assert!(load["throughput_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(load["pickup_latency"]["samples"], 300);
    assert_eq!(load["round_trip_latency"]["samples"], 30);
    assert_eq!(report["idle"]["round_trip_latency"]["samples"], 5);
    assert_eq!(report["idle"]["pickup_latency"]["samples"], 5);
    let memory = report["peak_memory"]
        .as_array()
        .expect("memory per process");
    assert_eq!(memory.len(), 3, "{memory:?}");
    assert!(
        memory
            .iter()
            .all(|process| process["vm_hwm_bytes"].as_u64().unwrap() > 0)
    );
    assert!(report["clocks"].as_str().unwrap().contains("client"));
    assert!(
        !database_exists(&name).await,
        "the bench left {name} behind"
    );

    // A backlog stays pending underneath the measured tasks; the idle phase is skipped.
    let mut arguments = strings(&[
        "--tasks",
        "100",
        "--batch-size",
        "50",
        "--preload",
        "500",
        "--json",
        "--database-url",
    ]);
    arguments.push(url);
    let report = parse_report(&run_bench(arguments).await);
    assert_eq!(report["preload"], 500);
    assert_eq!(report["load"]["failed"], 0);
    assert_eq!(report["load"]["pickup_latency"]["samples"], 100);
    assert!(report["idle"].is_null());
    assert!(
        !database_exists(&name).await,
        "the bench left {name} behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_against_a_running_coordinator_says_memory_is_unknown() {
    let database = TestDatabase::create().await;
    let logs = log_dir("bench");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "bench-worker", &["-c", "2"]);
    let client = coordinator.client().await;
    wait_until("the worker connects", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            client
                .ping(Duration::from_secs(1))
                .await
                .is_ok_and(|workers| !workers.is_empty())
        }
    })
    .await;
    let arguments = vec![
        "--coordinator".to_owned(),
        coordinator.url.clone(),
        "--tasks".to_owned(),
        "50".to_owned(),
        "--idle-samples".to_owned(),
        "3".to_owned(),
        "--json".to_owned(),
    ];
    let report = parse_report(&run_bench(arguments).await);
    assert_eq!(report["started_coordinator"], false);
    assert_eq!(report["load"]["failed"], 0);
    assert!(
        report["peak_memory"]
            .as_str()
            .unwrap()
            .starts_with("unknown")
    );
}

#[tokio::test]
async fn bad_bench_flags_are_named_without_a_panic() {
    for (arguments, flag) in [
        (vec!["--batch-size", "20000"], "--batch-size"),
        (vec!["--tasks", "0"], "--tasks"),
        (vec!["--workers", "0"], "--workers"),
        (
            vec!["--coordinator", "http://127.0.0.1:1", "--preload", "10"],
            "--preload",
        ),
        (vec!["--database-url", "mysql://x/y"], "--database-url"),
    ] {
        let output = run_bench(strings(&arguments)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(if flag == "--preload" { 2 } else { 1 }),
            "{stderr}"
        );
        assert!(stderr.contains(flag), "{arguments:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
