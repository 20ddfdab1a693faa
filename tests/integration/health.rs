//! `grpc.health.v1`, checked with a client nobody here wrote: Python's grpcio-health-checking.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{CoordinatorProcess, TestDatabase, log_dir, wait_until};

/// The Python with grpcio-health-checking: `CELERITAS_TEST_PYTHON`, else the project's `.venv`
/// (which `scripts/test` creates).
pub fn python() -> PathBuf {
    let python = std::env::var_os("CELERITAS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} does not exist; run scripts/test, which installs the Python test tools",
        python.display()
    );
    python
}

const CHECK_HEALTH: &str = r#"
import sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
stub = health_pb2_grpc.HealthStub(channel)
for service in sys.argv[2:]:
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    print(service or "(server)", health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
"#;

pub fn check_health(address: &str, services: &[&str]) -> String {
    let output = Command::new(python())
        .args(["-c", CHECK_HEALTH, address])
        .args(services)
        .output()
        .expect("run the Python health client");
    assert!(
        output.status.success(),
        "the Python health client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_grpc_health_client_sees_the_coordinator_serving() {
    let database = TestDatabase::create().await;
    let logs = log_dir("health");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let address = coordinator.url.trim_start_matches("http://").to_owned();
    // The first store ping follows start-up by a moment.
    wait_until(
        "the coordinator to report SERVING",
        std::time::Duration::from_secs(20),
        || {
            let address = address.clone();
            async move { check_health(&address, &[""]) == "(server) SERVING\n" }
        },
    )
    .await;
    let report = check_health(
        &address,
        &["", "celeritas.v1.TaskService", "celeritas.v1.WorkerService"],
    );
    assert_eq!(
        report,
        "(server) SERVING\nceleritas.v1.TaskService SERVING\nceleritas.v1.WorkerService SERVING\n"
    );

    // Reflection lets stock tools discover the API without the proto files.
    let output = Command::new(python())
        .args(["-c", LIST_SERVICES, &address])
        .output()
        .expect("run the Python reflection client");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let services = String::from_utf8(output.stdout).unwrap();
    for service in [
        "celeritas.v1.TaskService",
        "celeritas.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} is not listed: {services}"
        );
    }
}

const LIST_SERVICES: &str = r#"
import sys
import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
stub = reflection_pb2_grpc.ServerReflectionStub(channel)
request = reflection_pb2.ServerReflectionRequest(list_services="")
for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
    for service in response.list_services_response.service:
        print(service.name)
"#;
