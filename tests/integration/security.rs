//! Security: TLS on the coordinator's port, client certificates for workers, tokens with roles.
//!
//! The certificates are made here (rcgen): a CA, the coordinator's certificate, workers'
//! certificates, an expired one and one from another CA. Clients include stock Python grpcio,
//! which nobody here wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use celeritas::domain::{ErrorKind, TaskId, TaskQuery, TaskState, TokenSecret};
use celeritas::grpc::client::{ClientError, CoordinatorClient, Target, check_health};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

use crate::health::python;
use crate::support::{
    CoordinatorLaunch, CoordinatorProcess, TemporaryPostgres, TestDatabase, WorkerProcess,
    free_port, log_dir, scrape_metrics, spec, wait_for_state, wait_for_workers, wait_until,
};

/// A certificate authority the test runs, writing PEM files into one directory.
struct Authority {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA whose certificate is `DIR/NAME.pem`.
    fn create(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).expect("a CA certificate");
        std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).expect("write the CA");
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate file.
    fn certificate(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// The coordinator's certificate (for `localhost` and 127.0.0.1) as `FILE.pem`, `FILE.key`.
    fn server(&self, file: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "coordinator");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, file)
    }

    /// A client certificate whose common name is `identity`.
    fn client(&self, identity: &str, file: &str) -> (PathBuf, PathBuf) {
        self.issue(client_params(identity), file)
    }

    /// A client certificate for `identity` that expired in 2021.
    fn expired_client(&self, identity: &str, file: &str) -> (PathBuf, PathBuf) {
        let mut params = client_params(identity);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params, file)
    }

    fn issue(&self, params: CertificateParams, file: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("sign a certificate");
        let (certificate_file, key_file) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&certificate_file, certificate.pem()).expect("write a certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write a key");
        (certificate_file, key_file)
    }
}

fn client_params(identity: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
    params.distinguished_name.push(DnType::CommonName, identity);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A coordinator that requires TLS, takes client certificates from `ca`, and requires tokens:
/// `django` may submit, `dashboard` may read, `ops` is admin. Worker `worker-a` may consume
/// every queue, `worker-b` only `import`.
struct SecureCoordinator {
    process: CoordinatorProcess,
    url: String,
    metrics: String,
    ca: Authority,
    django: String,
    dashboard: String,
    ops: String,
    _database: TestDatabase,
}

impl SecureCoordinator {
    async fn start(logs: &Path) -> Self {
        let database = TestDatabase::create().await;
        let ca = Authority::create(logs, "ca");
        let (certificate, key) = ca.server("coordinator");
        let [django, dashboard, ops] =
            std::array::from_fn(|_| TokenSecret::generate().expose().to_owned());
        let digest = |token: &str| {
            TokenSecret::parse("token", token)
                .unwrap()
                .digest()
                .to_hex()
        };
        let config = format!(
            r#"
[coordinator.tls]
cert_file = "{certificate}"
key_file = "{key}"
client_ca_file = "{ca}"

[auth]
required = true

[auth.tokens.django]
roles = ["submit"]
sha256 = "{django}"

[auth.tokens.dashboard]
roles = ["read"]
sha256 = "{dashboard}"

[auth.tokens.ops]
roles = ["admin"]
sha256 = "{ops}"

[auth.worker_queues]
worker-a = ["*"]
worker-b = ["import"]
"#,
            certificate = certificate.display(),
            key = key.display(),
            ca = ca.certificate().display(),
            django = digest(&django),
            dashboard = digest(&dashboard),
            ops = digest(&ops),
        );
        let config_file = logs.join("celeritas.toml");
        std::fs::write(&config_file, config).expect("write the configuration");
        let metrics = format!("127.0.0.1:{}", free_port());
        let process = CoordinatorLaunch::new(&database.url, logs)
            .metrics(&metrics)
            .env("CELERITAS_CONFIG", config_file.to_str().unwrap())
            .start()
            .await;
        let url = format!("https://{}", process.address);
        Self {
            process,
            url,
            metrics,
            ca,
            django,
            dashboard,
            ops,
            _database: database,
        }
    }

    /// How a client with `token` (and no certificate) reaches it.
    fn target(&self, token: &str) -> Target {
        Target {
            url: self.url.clone(),
            ca_file: Some(self.ca.certificate()),
            identity: None,
            token: Some(TokenSecret::parse("token", token).unwrap()),
        }
    }

    async fn admin(&self) -> CoordinatorClient {
        CoordinatorClient::connect_to(&self.target(&self.ops))
            .await
            .expect("connect as ops")
    }

    /// Starts a worker presenting `certificate` (or none), trusting this coordinator's CA.
    fn worker(
        &self,
        logs: &Path,
        name: &str,
        certificate: Option<&(PathBuf, PathBuf)>,
        extra: &[&str],
    ) -> WorkerProcess {
        let ca = self.ca.certificate();
        let mut arguments = vec!["--tls-ca".to_owned(), ca.display().to_string()];
        if let Some((certificate, key)) = certificate {
            arguments.extend([
                "--tls-cert".to_owned(),
                certificate.display().to_string(),
                "--tls-key".to_owned(),
                key.display().to_string(),
            ]);
        }
        arguments.extend(extra.iter().map(|argument| argument.to_string()));
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        WorkerProcess::start_at(&self.url, logs, name, &arguments)
    }

    /// The count of `metric` with `reason`, or 0.
    async fn refusals(&self, metric: &str, reason: &str) -> f64 {
        scrape_metrics(&self.metrics)
            .await
            .get(&format!("{metric}{{reason=\"{reason}\"}}"))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Waits for a worker process to stop on its own, returning its log.
async fn refused_worker(mut worker: WorkerProcess, logs: &Path) -> String {
    let status = tokio::time::timeout(Duration::from_secs(60), worker.child.wait())
        .await
        .expect("a refused worker stops within a minute")
        .expect("wait for the worker");
    assert!(!status.success(), "a refused worker exits with a failure");
    std::fs::read_to_string(logs.join(format!("{}.log", worker.name))).expect("the worker's log")
}

/// A stock grpcio client: every call it tries and the code (and message) each answered.
const GRPCIO_CLIENT: &str = r#"
import json, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from celeritas.v1 import tasks_pb2, tasks_pb2_grpc

address, ca, submit_token, read_token = sys.argv[1:5]
credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
channel = grpc.secure_channel(address, credentials)
tasks = tasks_pb2_grpc.TaskServiceStub(channel)
spec = tasks_pb2.TaskSpec(name="noop", args_json='{"from": "grpcio"}')
submit = tasks_pb2.SubmitTaskRequest(task=spec)
outcome = {}

def attempt(name, call, metadata):
    try:
        call(metadata)
        outcome[name] = "OK"
    except grpc.RpcError as error:
        outcome[name] = f"{error.code().name}: {error.details()}"

def bearer(token):
    return [("authorization", f"Bearer {token}")]

health = health_pb2_grpc.HealthStub(channel)
status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
outcome["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
attempt("no token", lambda metadata: tasks.SubmitTask(submit, timeout=10), None)
attempt("wrong token", lambda m: tasks.SubmitTask(submit, metadata=m, timeout=10),
        bearer("celeritas_" + "x" * 43))
attempt("basic scheme", lambda m: tasks.SubmitTask(submit, metadata=m, timeout=10),
        [("authorization", "Basic dXNlcjpwYXNz")])
attempt("read submits", lambda m: tasks.SubmitTask(submit, metadata=m, timeout=10),
        bearer(read_token))
attempt("huge header", lambda m: tasks.SubmitTask(submit, metadata=m, timeout=10),
        bearer(submit_token) + [("x-padding", "p" * 40000)])

task_id = tasks.SubmitTask(submit, metadata=bearer(submit_token), timeout=10).task_id
outcome["task_id"] = task_id
events = tasks.StreamProgress(
    tasks_pb2.StreamProgressRequest(task_id=task_id), metadata=bearer(submit_token), timeout=60)
outcome["events"] = [event.WhichOneof("event") for event in events]
task = tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task_id), metadata=bearer(read_token),
                     timeout=10).task
outcome["read sees"] = [tasks_pb2.TaskState.Name(task.state), task.result_json]
print(json.dumps(outcome))
"#;

/// Runs the grpcio client against `coordinator` in a blocking thread.
async fn run_grpcio_client(coordinator: &SecureCoordinator) -> Value {
    let address = coordinator.url.trim_start_matches("https://").to_owned();
    let ca = coordinator.ca.certificate();
    let tokens = [coordinator.django.clone(), coordinator.dashboard.clone()];
    tokio::task::spawn_blocking(move || grpcio_client(&address, &ca, &tokens))
        .await
        .expect("run the grpcio client")
}

fn grpcio_client(address: &str, ca: &Path, tokens: &[String; 2]) -> Value {
    let client_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/src");
    let output = Command::new(python())
        .args(["-c", GRPCIO_CLIENT, address])
        .arg(ca)
        .args(tokens)
        .env("PYTHONPATH", client_source)
        .output()
        .expect("run the grpcio client");
    assert!(
        output.status.success(),
        "the grpcio client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the grpcio client prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_grpcio_client_over_tls_needs_a_token_with_the_role() {
    let logs = log_dir("security-grpcio");
    let coordinator = SecureCoordinator::start(&logs).await;
    let (certificate, key) = coordinator.ca.client("worker-a", "worker-a");
    let _worker = coordinator.worker(&logs, "a-1", Some(&(certificate, key)), &[]);

    let outcome = run_grpcio_client(&coordinator).await;
    assert_eq!(outcome["health"], "SERVING", "{outcome}");
    let refusal = |name: &str| outcome[name].as_str().unwrap_or_default().to_owned();
    assert!(
        refusal("no token").starts_with("UNAUTHENTICATED: ")
            && refusal("no token").contains("authorization"),
        "{outcome}"
    );
    assert!(
        refusal("wrong token").starts_with("UNAUTHENTICATED: "),
        "{outcome}"
    );
    assert!(
        refusal("basic scheme").starts_with("UNAUTHENTICATED: ")
            && refusal("basic scheme").contains("Bearer"),
        "{outcome}"
    );
    assert!(
        refusal("read submits").starts_with("PERMISSION_DENIED: ")
            && refusal("read submits").contains("needs the submit role")
            && refusal("read submits").contains(r#""dashboard""#),
        "{outcome}"
    );
    assert_ne!(refusal("huge header"), "OK", "{outcome}");
    let events: Vec<&str> = outcome["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.last(), Some(&"tree_finished"), "{outcome}");
    assert_eq!(outcome["read sees"][0], "TASK_STATE_SUCCEEDED", "{outcome}");
    let result: Value =
        serde_json::from_str(outcome["read sees"][1].as_str().unwrap_or_default()).unwrap();
    assert_eq!(result, json!({"from": "grpcio"}));

    // Plaintext to the TLS port is refused at the handshake, and counted.
    let plaintext = CoordinatorClient::connect(&format!("http://{}", coordinator.process.address))
        .await
        .expect("a lazy channel")
        .task(TaskId::generate())
        .await;
    assert!(plaintext.is_err(), "plaintext is refused: {plaintext:?}");
    wait_until(
        "the refusals to be counted",
        Duration::from_secs(20),
        || async {
            coordinator
                .refusals("celeritas_refused_connections_total", "not_tls")
                .await
                >= 1.0
                && coordinator
                    .refusals("celeritas_refused_requests_total", "unauthenticated")
                    .await
                    >= 3.0
                && coordinator
                    .refusals("celeritas_refused_requests_total", "permission_denied")
                    .await
                    >= 1.0
        },
    )
    .await;
    // None of it hurt the coordinator.
    let mut admin = coordinator.admin().await;
    assert!(admin.list_tasks(&TaskQuery::default()).await.is_ok());

    // A token that may only submit reads what it submitted, and nothing else.
    let mut django = CoordinatorClient::connect_to(&coordinator.target(&coordinator.django))
        .await
        .unwrap();
    let own = TaskId::parse("task_id", outcome["task_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        django.task(own).await.unwrap().submitted_by.as_deref(),
        None,
        "who submitted a task stays inside the coordinator"
    );
    let others = admin
        .submit(&spec("noop", json!({"by": "ops"}), None))
        .await
        .unwrap()
        .id;
    for refused in [
        django.task(others).await.map(|_| ()),
        django.stream_progress(others, None).await.map(|_| ()),
    ] {
        match refused {
            Err(ClientError::Status {
                kind: ErrorKind::PermissionDenied,
                message,
            }) => assert!(message.contains("needs the read role"), "{message}"),
            other => panic!("a submit token reads another's task: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_who_their_certificates_say_and_consume_only_their_queues() {
    let logs = log_dir("security-workers");
    let coordinator = SecureCoordinator::start(&logs).await;
    let mut admin = coordinator.admin().await;

    // No certificate and no token: the worker is not let in, and stops (it is its configuration).
    let log = refused_worker(coordinator.worker(&logs, "anonymous", None, &[]), &logs).await;
    assert!(log.contains("needs a token"), "{log}");

    // A certificate from another CA, or an expired one, fails the handshake. Such a worker keeps
    // retrying (the network may be at fault), so the refusals are counted and it never gets in.
    let stranger = Authority::create(&logs, "other-ca");
    let foreign = stranger.client("worker-a", "foreign");
    let expired = coordinator.ca.expired_client("worker-a", "expired");
    let foreign_worker = coordinator.worker(&logs, "foreign", Some(&foreign), &[]);
    let expired_worker = coordinator.worker(&logs, "expired", Some(&expired), &[]);
    wait_until(
        "both handshakes to be refused",
        Duration::from_secs(30),
        || async {
            let metric = "celeritas_refused_connections_total";
            coordinator
                .refusals(metric, "certificate_unknown_issuer")
                .await
                >= 1.0
                && coordinator.refusals(metric, "certificate_expired").await >= 1.0
        },
    )
    .await;
    assert!(admin.workers().await.unwrap().is_empty());
    foreign_worker.kill().await;
    expired_worker.kill().await;

    // worker-b may consume `import` only: asking for `email` is refused, naming the queue.
    let worker_b = coordinator.ca.client("worker-b", "worker-b");
    let log = refused_worker(
        coordinator.worker(&logs, "b-email", Some(&worker_b), &["-Q", "email"]),
        &logs,
    )
    .await;
    assert!(
        log.contains("hello.queues[0]") && log.contains("email"),
        "{log}"
    );
    let _b_imports = coordinator.worker(&logs, "b-import", Some(&worker_b), &["-Q", "import"]);
    let email = admin
        .submit(&spec("noop", json!({"to": "email"}), Some("email")))
        .await
        .unwrap()
        .id;
    wait_until("b-import to connect", Duration::from_secs(30), || {
        let mut admin = admin.clone();
        async move {
            admin.workers().await.unwrap().iter().any(|worker| {
                worker.id == "b-import"
                    && worker.connected
                    && worker
                        .queues
                        .iter()
                        .all(|(queue, _)| queue.as_str() == "import")
            })
        }
    })
    .await;
    let worker_a = coordinator.ca.client("worker-a", "worker-a");
    let _a_email = coordinator.worker(&logs, "a-email", Some(&worker_a), &["-Q", "email"]);
    wait_for_state(&mut admin, email, TaskState::Succeeded).await;
    assert_eq!(
        admin
            .task(email)
            .await
            .unwrap()
            .worker_id
            .map(|id| id.to_string()),
        Some("a-email".to_owned())
    );

    // A worker id belongs to the credential it first came with: worker-b's certificate cannot
    // take a-email's id (and its leases), and a-email goes on undisturbed.
    let impostor_logs = log_dir("security-workers-impostor");
    let log = refused_worker(
        coordinator.worker(
            &impostor_logs,
            "a-email",
            Some(&worker_b),
            &["-Q", "import"],
        ),
        &impostor_logs,
    )
    .await;
    assert!(log.contains("hello.worker_id"), "{log}");
    let after = admin
        .submit(&spec("noop", json!({"after": "impostor"}), Some("email")))
        .await
        .unwrap()
        .id;
    wait_for_state(&mut admin, after, TaskState::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_serve_new_connections_while_open_ones_go_on() {
    let logs = log_dir("security-rotation");
    let database = TestDatabase::create().await;
    let first = Authority::create(&logs, "first-ca");
    let second = Authority::create(&logs, "second-ca");
    let (certificate, key) = first.server("coordinator");
    let config_file = logs.join("celeritas.toml");
    std::fs::write(
        &config_file,
        format!(
            "[coordinator.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certificate.display(),
            key.display()
        ),
    )
    .unwrap();
    let process = CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_CONFIG", config_file.to_str().unwrap())
        .start()
        .await;
    let url = format!("https://{}", process.address);
    let trusting = |ca: &Authority| Target {
        url: url.clone(),
        ca_file: Some(ca.certificate()),
        identity: None,
        token: None,
    };
    let mut old_client = CoordinatorClient::connect_to(&trusting(&first))
        .await
        .unwrap();
    let first_ca = first.certificate().display().to_string();
    let _worker = WorkerProcess::start_at(&url, &logs, "steady", &["--tls-ca", &first_ca]);
    let before = old_client
        .submit(&spec("noop", json!({"n": 1}), None))
        .await
        .unwrap()
        .id;
    wait_for_state(&mut old_client, before, TaskState::Succeeded).await;

    // Rotate to a certificate from another CA: the new pair is written beside the old one and
    // renamed over it, as certificate managers do.
    let (next_certificate, next_key) = second.server("next");
    std::fs::rename(next_key, &key).unwrap();
    std::fs::rename(next_certificate, &certificate).unwrap();
    wait_until(
        "new connections to get the new certificate",
        Duration::from_secs(30),
        || async { check_health(&trusting(&second), "").await.unwrap_or(false) },
    )
    .await;
    assert!(
        check_health(&trusting(&first), "").await.is_err(),
        "a new connection trusting only the old CA is refused"
    );

    // The worker trusts only the old CA, so the task below runs only if its stream, opened
    // before the rotation, goes on (a reconnection would fail); the old client's connection
    // goes on too.
    let mut new_client = CoordinatorClient::connect_to(&trusting(&second))
        .await
        .unwrap();
    let after = new_client
        .submit(&spec("noop", json!({"n": 2}), None))
        .await
        .unwrap()
        .id;
    wait_for_state(&mut new_client, after, TaskState::Succeeded).await;
    assert_eq!(
        old_client
            .task(after)
            .await
            .unwrap()
            .worker_id
            .map(|id| id.to_string()),
        Some("steady".to_owned())
    );
}

/// Runs `celeritas ARGS` against `database`, with `stdin`.
fn celeritas(database: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(args)
        .env("DATABASE_URL", database)
        .env_remove("CELERITAS_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run celeritas");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait for celeritas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_on_every_coordinator() {
    let database = TestDatabase::create().await;
    let logs = log_dir("security-revocation");
    let config_file = logs.join("celeritas.toml");
    std::fs::write(&config_file, "[auth]\nrequired = true\n").unwrap();
    let created = celeritas(
        &database.url,
        &["tokens", "create", "reporting", "--roles", "read"],
        "",
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let secret = TokenSecret::parse("token", &token).expect("a token is printed");
    let again = celeritas(
        &database.url,
        &["tokens", "create", "reporting", "--roles", "admin"],
        "",
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let hashed = celeritas(&database.url, &["tokens", "hash"], &format!("{token}\n"));
    assert_eq!(
        String::from_utf8(hashed.stdout).unwrap().trim(),
        secret.digest().to_hex()
    );

    let launch = |name: &str| {
        CoordinatorLaunch::new(&database.url, &logs)
            .name(name)
            .env("CELERITAS_CONFIG", config_file.to_str().unwrap())
    };
    let first = launch("first").start().await;
    let second = launch("second").start().await;
    let mut clients = Vec::new();
    for coordinator in [&first, &second] {
        let mut client = CoordinatorClient::connect_to(&Target {
            token: Some(secret.clone()),
            ..Target::plain(&coordinator.url)
        })
        .await
        .unwrap();
        client.list_tasks(&TaskQuery::default()).await.unwrap();
        clients.push(client);
    }
    // A worker whose token is revoked loses its stream, and is not let back in.
    let created = celeritas(
        &database.url,
        &["tokens", "create", "mailer", "--roles", "worker"],
        "",
    );
    let mailer_token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let mailer = WorkerProcess::start(&first, &logs, "mailer", &["--token", &mailer_token]);
    wait_for_workers(&clients[0], "the mailer to connect", |ids| {
        ids.iter().any(|id| id == "mailer")
    })
    .await;
    let revoked = celeritas(&database.url, &["tokens", "revoke", "mailer"], "");
    assert!(revoked.status.success());
    let log = refused_worker(mailer, &logs).await;
    assert!(log.contains("was revoked"), "{log}");
    assert!(log.contains("does not accept the token"), "{log}");

    let listed = celeritas(&database.url, &["tokens", "list"], "");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("reporting") && listed.contains("read") && !listed.contains(&token),
        "{listed}"
    );

    let revoked = celeritas(&database.url, &["tokens", "revoke", "reporting"], "");
    assert!(revoked.status.success());
    for client in clients {
        wait_until(
            "the revoked token to be refused",
            Duration::from_secs(20),
            || {
                let mut client = client.clone();
                async move {
                    matches!(
                        client.list_tasks(&TaskQuery::default()).await,
                        Err(ClientError::Status {
                            kind: ErrorKind::Unauthenticated,
                            ..
                        })
                    )
                }
            },
        )
        .await;
    }
    let listed = celeritas(&database.url, &["tokens", "list", "--json"], "");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|token| token["revoked_at"].is_string()),
        "{listed}"
    );
    let twice = celeritas(&database.url, &["tokens", "revoke", "reporting"], "");
    assert!(!twice.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeritas_dev_runs_its_worker_behind_its_own_tls_and_tokens() {
    let logs = log_dir("security-dev");
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::write(logs.join("dev.pem"), cert.pem()).unwrap();
    std::fs::write(logs.join("dev.key"), signing_key.serialize_pem()).unwrap();
    let token = TokenSecret::generate();
    std::fs::write(
        logs.join("celeritas.toml"),
        format!(
            "[coordinator.tls]\ncert_file = \"dev.pem\"\nkey_file = \"dev.key\"\n\n[auth]\n\
             required = true\n[auth.tokens.django]\nroles = [\"submit\", \"read\"]\n\
             sha256 = \"{}\"\n[auth.worker_queues]\nnobody = []\n",
            token.digest().to_hex()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--database-url",
            &format!("sqlite://{}/dev.db", logs.display()),
        ])
        .env_remove("CELERITAS_CONFIG")
        .current_dir(&logs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(logs.join("dev.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start celeritas dev");
    let target = Target {
        url: format!("https://127.0.0.1:{port}"),
        ca_file: Some(logs.join("dev.pem")),
        identity: None,
        token: Some(token),
    };
    wait_until("dev to serve", Duration::from_secs(60), || async {
        check_health(&target, "").await.unwrap_or(false)
    })
    .await;
    let mut client = CoordinatorClient::connect_to(&target).await.unwrap();
    let id = client
        .submit(&spec("noop", json!({"dev": true}), None))
        .await
        .unwrap()
        .id;
    wait_for_state(&mut client, id, TaskState::Succeeded).await;
    let _ = dev.kill().await;
}

/// Runs `celeritas ARGS` with `env`, returning what it printed on both streams (after the
/// arguments, which hold no secret: secrets go in `env`).
async fn celeritas_output(args: Vec<String>, env: Vec<(&'static str, String)>) -> String {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_celeritas"))
            .args(&args)
            .envs(env)
            .env_remove("CELERITAS_CONFIG")
            .output()
            .expect("run celeritas");
        format!(
            "$ celeritas {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_an_answer_a_metric_or_a_failure() {
    let logs = log_dir("security-secrets");
    let database = TestDatabase::create().await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let smtp_password = format!("smtp-password-{marker}");
    let database_password = format!("database-password-{marker}");
    let token = TokenSecret::generate();
    let unknown_token = TokenSecret::generate();
    let dkim = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out", "dkim.pem", "2048"])
        .current_dir(&logs)
        .output()
        .expect("run openssl");
    assert!(dkim.status.success());
    let dkim_key = std::fs::read_to_string(logs.join("dkim.pem")).unwrap();
    // A line of the key's body: any of it in an output is a leak.
    let dkim_fragment = dkim_key.lines().nth(3).unwrap().to_owned();
    // Postgres here trusts every connection, so a password in the URL is accepted and ignored.
    let mut database_url = url::Url::parse(&database.url).unwrap();
    database_url.set_password(Some(&database_password)).unwrap();
    let database_url = database_url.to_string();
    let closed_port = free_port();
    let config_file = logs.join("celeritas.toml");
    std::fs::write(
        &config_file,
        format!(
            "[auth]\nrequired = true\n[auth.tokens.ops]\nroles = [\"admin\"]\nsha256 = \"{}\"\n\n\
             [smtp.relays.default]\nhost = \"127.0.0.1\"\nport = {closed_port}\n\
             tls = \"starttls\"\nusername = \"news\"\npassword_env = \"SECRET_SMTP_PASSWORD\"\n\n\
             [smtp.dkim]\ndomain = \"example.com\"\nselector = \"news\"\nkey_file = \"{}\"\n",
            token.digest().to_hex(),
            logs.join("dkim.pem").display()
        ),
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let coordinator = CoordinatorLaunch::new(&database_url, &logs)
        .metrics(&metrics)
        .env("CELERITAS_CONFIG", config_file.to_str().unwrap())
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args([
            "worker",
            "--coordinator",
            &coordinator.url,
            "--name",
            "mailer",
        ])
        .args(["-Q", "email"])
        .env("CELERITAS_TOKEN", token.expose())
        .env("CELERITAS_CONFIG", &config_file)
        .env("SECRET_SMTP_PASSWORD", &smtp_password)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(logs.join("worker.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");

    // A message the relay cannot take: the failure is recorded for everyone to read.
    let mut client = CoordinatorClient::connect_to(&Target {
        token: Some(token.clone()),
        ..Target::plain(&coordinator.url)
    })
    .await
    .unwrap();
    let mut message = spec(
        "send_single_email",
        json!({
            "campaign_id": "c-1",
            "from": "News <news@example.com>",
            "subject": "Hi",
            "text": "Hello",
            "to": "anna@example.org",
        }),
        Some("email"),
    );
    message.max_retries = Some(0);
    let id = client.submit(&message).await.unwrap().id;
    wait_until("the send to end", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            client
                .task(id)
                .await
                .is_ok_and(|task| task.state.is_terminal())
        }
    })
    .await;
    let failed = client.task(id).await.unwrap();
    let failure = format!("{:?} {:?}", failed.error, failed.result);
    assert!(
        failure.contains(r#"\"failed\": 1"#),
        "the send failed: {failure}"
    );

    // Everything the test can read: answers, CLI output, metrics, then every log.
    let authorized = vec![("CELERITAS_TOKEN", token.expose().to_owned())];
    let mut outputs = vec![failure];
    for args in [
        vec!["status", &id.to_string(), "--json"],
        vec!["tasks", "--json"],
        vec!["records", &id.to_string(), "--json"],
        vec!["inspect", "stats", "--json"],
        vec!["inspect", "registered", "--json"],
        vec!["inspect", "active", "--json"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend(["--coordinator".to_owned(), coordinator.url.clone()]);
        outputs.push(celeritas_output(args, authorized.clone()).await);
    }
    let delivery = &outputs[3];
    assert!(delivery.contains("anna@example.org"), "{delivery}");
    outputs.push(
        celeritas_output(
            vec![
                "tasks".into(),
                "--coordinator".into(),
                coordinator.url.clone(),
            ],
            vec![("CELERITAS_TOKEN", unknown_token.expose().to_owned())],
        )
        .await,
    );
    outputs.push(
        celeritas_output(
            vec!["tokens".into(), "list".into()],
            vec![("DATABASE_URL", database_url.clone())],
        )
        .await,
    );
    // A store that cannot be reached names its address, not its password.
    let unreachable = format!("postgres://postgres:{database_password}@127.0.0.1:{closed_port}/x");
    let refused =
        celeritas_output(vec!["migrate".into()], vec![("DATABASE_URL", unreachable)]).await;
    assert!(refused.contains("127.0.0.1"), "{refused}");
    outputs.push(refused);
    let scraped = scrape_metrics(&metrics).await;
    assert!(!scraped.is_empty());
    outputs.push(format!("{scraped:?}"));
    coordinator.stop_with("TERM").await;
    crate::support::send_signal(&worker, "TERM");
    let _ = worker.wait().await;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "log") {
            outputs.push(format!(
                "{}:\n{}",
                path.display(),
                std::fs::read_to_string(&path).unwrap()
            ));
        }
    }
    assert!(
        outputs
            .iter()
            .any(|output| output.contains("worker connected")),
        "the logs were read"
    );
    for (what, secret) in [
        ("the SMTP password", smtp_password.as_str()),
        ("the database password", database_password.as_str()),
        ("the token", token.expose()),
        ("the unknown token", unknown_token.expose()),
        ("the DKIM key", dkim_fragment.as_str()),
    ] {
        for output in &outputs {
            assert!(
                !output.contains(secret),
                "{what} leaked into:\n{}",
                output.chars().take(4000).collect::<String>()
            );
        }
    }
}

/// `curl` against `url` with `args`: the HTTP status (0 when no answer came) and the body.
async fn curl(url: String, args: Vec<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .args(&args)
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_beyond_loopback_need_tls_and_a_token_that_may_read() {
    let logs = log_dir("security-metrics");
    let database = TestDatabase::create().await;
    let ca = Authority::create(&logs, "ca");
    let (certificate, key) = ca.server("coordinator");
    let [reader, submitter] = std::array::from_fn(|_| TokenSecret::generate());
    let tls = format!(
        "[coordinator.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certificate.display(),
        key.display()
    );
    let auth = format!(
        "[auth]\nrequired = true\n[auth.tokens.prometheus]\nroles = [\"read\"]\nsha256 = \"{}\"\n\
         [auth.tokens.django]\nroles = [\"submit\"]\nsha256 = \"{}\"\n",
        reader.digest().to_hex(),
        submitter.digest().to_hex()
    );
    let port = free_port();
    let everywhere = format!("0.0.0.0:{port}");

    // Without TLS the coordinator will not serve metrics beyond loopback.
    let plain = logs.join("plain.toml");
    std::fs::write(&plain, &auth).unwrap();
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database.url,
        ])
        .args(["--metrics-listen", &everywhere])
        .env("CELERITAS_CONFIG", &plain)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("refusing to serve metrics") && message.contains("metrics_listen"),
        "{message}"
    );

    let secured = logs.join("secured.toml");
    std::fs::write(&secured, format!("{tls}\n{auth}")).unwrap();
    let _coordinator = CoordinatorLaunch::new(&database.url, &logs)
        .metrics(&everywhere)
        .env("CELERITAS_CONFIG", secured.to_str().unwrap())
        .start()
        .await;
    let url = format!("https://127.0.0.1:{port}/metrics");
    let trusted = vec![
        "--cacert".to_owned(),
        ca.certificate().display().to_string(),
    ];
    let with_token = |token: &TokenSecret| {
        let mut args = trusted.clone();
        args.extend([
            "-H".to_owned(),
            format!("Authorization: Bearer {}", token.expose()),
        ]);
        args
    };
    let (status, body) = curl(url.clone(), with_token(&reader)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(url.clone(), trusted.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("needs a token"), "{body}");
    let (status, body) = curl(url.clone(), with_token(&submitter)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read"), "{body}");
    // Plaintext gets no metrics.
    let (status, _) = curl(format!("http://127.0.0.1:{port}/metrics"), Vec::new()).await;
    assert_eq!(status, 0);
    let (status, body) = curl(url, with_token(&reader)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"celeritas_refused_requests_total{reason="metrics"} 2"#),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_a_postgres_that_takes_only_tls_and_verifies_its_certificate() {
    let logs = log_dir("security-postgres-tls");
    let authority = Authority::create(&logs, "postgres-ca");
    let stranger = Authority::create(&logs, "stranger");
    let (certificate, key) = authority.server("postgres");
    let postgres = TemporaryPostgres::start_with_tls(&certificate, &key);
    let database = |parameters: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?{parameters}",
            postgres.port
        )
    };
    let verified = database(&format!(
        "sslmode=verify-full&sslrootcert={}",
        authority.certificate().display()
    ));

    // The server really refuses what is not encrypted, and a certificate from another CA.
    let plain = celeritas(&database("sslmode=disable"), &["tokens", "list"], "");
    assert!(!plain.status.success());
    let refusal = String::from_utf8_lossy(&plain.stderr).into_owned();
    assert!(refusal.contains("no encryption"), "{refusal}");
    let forged = database(&format!(
        "sslmode=verify-full&sslrootcert={}",
        stranger.certificate().display()
    ));
    let unverified = celeritas(&forged, &["tokens", "list"], "");
    assert!(!unverified.status.success());
    let refusal = String::from_utf8_lossy(&unverified.stderr).into_owned();
    assert!(refusal.to_lowercase().contains("certificate"), "{refusal}");

    // With its CA, the store migrates, and a coordinator and a worker run a task on it.
    let listed = celeritas(&verified, &["tokens", "list"], "");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let coordinator = CoordinatorLaunch::new(&verified, &logs).start().await;
    let worker = WorkerProcess::start(&coordinator, &logs, "over-tls", &["-c", "2"]);
    let mut client = coordinator.client().await;
    let task = client.submit(&spec("noop", json!({}), None)).await.unwrap();
    wait_for_state(&mut client, task.id, TaskState::Succeeded).await;
    assert!(worker.terminate().await.success());
}
