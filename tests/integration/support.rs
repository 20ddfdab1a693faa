//! What the integration tests stand on: a fresh database per test on the Postgres at
//! `DATABASE_URL`, real `celeritas` coordinator and worker processes, and their logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use celeritas::domain::{JsonText, QueueName, TaskId, TaskName, TaskSpec, TaskState};
use celeritas::grpc::CoordinatorClient;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server the tests create their databases on.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let server = server_url();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
            .unwrap_or_else(|error| panic!("cannot reach Postgres at {server}: {error}"));
        let name = format!("celeritas_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the test database");
        Self { name, url, pool }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = server_url();
        // Drop runs outside any async context the test had; use a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&server)
                    .await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                }
            });
        })
        .join();
    }
}

pub fn with_database(server: &str, database: &str) -> String {
    use sqlx::ConnectOptions;
    let options: PgConnectOptions = server.parse().expect("DATABASE_URL is a Postgres URL");
    options.database(database).to_url_lossy().to_string()
}

/// A directory for one test's logs under the target directory.
pub fn log_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("logs")
        .join(format!("{test}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create the log directory");
    dir
}

fn celeritas(logs: &Path, log_name: &str) -> Command {
    program(Path::new(env!("CARGO_BIN_EXE_celeritas")), logs, log_name)
}

/// `binary` run from `logs`, its stderr in `logs/LOG_NAME.log`, killed when dropped.
fn program(binary: &Path, logs: &Path, log_name: &str) -> Command {
    let mut command = Command::new(binary);
    let log = std::fs::File::create(logs.join(format!("{log_name}.log"))).expect("create a log");
    command
        .env("RUST_LOG", "info")
        .env_remove("CELERITAS_COORDINATOR")
        .env_remove("CELERITAS_CONFIG")
        .current_dir(logs)
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    command
}

/// A `celeritas coordinator` process.
pub struct CoordinatorProcess {
    process: Child,
    pub url: String,
    pub address: String,
}

/// How to start a coordinator: its database, log name, address and environment.
pub struct CoordinatorLaunch<'a> {
    database_url: &'a str,
    logs: &'a Path,
    name: String,
    listen: String,
    metrics: String,
    env: Vec<(String, String)>,
}

impl<'a> CoordinatorLaunch<'a> {
    pub fn new(database_url: &'a str, logs: &'a Path) -> Self {
        Self {
            database_url,
            logs,
            name: "coordinator".to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            metrics: "none".to_owned(),
            env: Vec::new(),
        }
    }

    /// Serves metrics at this address.
    pub fn metrics(mut self, address: &str) -> Self {
        self.metrics = address.to_owned();
        self
    }

    /// The log file's name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// A fixed address, so a restarted coordinator comes back where workers look for it.
    pub fn listen(mut self, address: &str) -> Self {
        self.listen = address.to_owned();
        self
    }

    /// A configuration override, such as `CELERITAS_COORDINATOR__LEASE_GRACE`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub async fn start(self) -> CoordinatorProcess {
        let mut command = celeritas(self.logs, &self.name);
        command
            .args([
                "coordinator",
                "--listen",
                &self.listen,
                "--database-url",
                self.database_url,
                "--metrics-listen",
                &self.metrics,
            ])
            .envs(self.env)
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("start the coordinator");
        let stdout = child.stdout.take().expect("the coordinator's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the coordinator announces its address within a minute")
            .expect("read the coordinator's stdout")
            .unwrap_or_else(|| panic!("the coordinator exited; see {}", self.logs.display()));
        let address = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Keep draining stdout so the coordinator never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        CoordinatorProcess {
            process: child,
            url: format!("http://{address}"),
            address,
        }
    }
}

impl CoordinatorProcess {
    /// A coordinator on `database` at a free port, with the default configuration.
    pub async fn start(database: &TestDatabase, logs: &Path) -> Self {
        CoordinatorLaunch::new(&database.url, logs).start().await
    }

    pub async fn client(&self) -> CoordinatorClient {
        CoordinatorClient::connect(&self.url)
            .await
            .expect("connect to the coordinator")
    }

    /// Sends a signal (`KILL`, `TERM`, ...) and waits for the process to exit.
    pub async fn stop_with(mut self, signal: &str) {
        send_signal(&self.process, signal);
        tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .expect("the coordinator exits within a minute")
            .expect("wait for the coordinator");
    }
}

/// Sends a signal to a child process.
pub fn send_signal(child: &Child, signal: &str) {
    if let Some(pid) = child.id() {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

/// A `celeritas worker` process.
pub struct WorkerProcess {
    pub child: Child,
    pub name: String,
}

impl WorkerProcess {
    /// Starts `celeritas worker --name NAME` with `extra` arguments (`-Q`, `-c`, ...).
    pub fn start(
        coordinator: &CoordinatorProcess,
        logs: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_at(&coordinator.url, logs, name, extra)
    }

    /// Starts a worker pointed at `url`, which may have no coordinator yet.
    pub fn start_at(url: &str, logs: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_binary(
            Path::new(env!("CARGO_BIN_EXE_celeritas")),
            url,
            logs,
            name,
            extra,
        )
    }

    /// Starts `BINARY worker` of another binary with celeritas' command line (a team's own
    /// worker, `examples/own-tasks`).
    pub fn start_binary(binary: &Path, url: &str, logs: &Path, name: &str, extra: &[&str]) -> Self {
        let child = program(binary, logs, name)
            .args(["worker", "--coordinator", url, "--name", name])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker");
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        send_signal(&self.child, "TERM");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the worker stops within a minute of SIGTERM")
            .expect("wait for the worker")
    }

    /// Sends SIGKILL and waits for the process to exit.
    pub async fn kill(mut self) {
        send_signal(&self.child, "KILL");
        let _ = self.child.wait().await;
    }
}

/// One line of a worker's `--execution-log`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Execution {
    pub task_id: String,
    pub attempt: u32,
    pub worker_id: String,
}

/// Reads an execution log; a missing file means no executions.
pub fn executions(path: &Path) -> Vec<Execution> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| serde_json::from_str(line).expect("an execution log line"))
        .collect()
}

/// A Postgres server of the test's own, started with Debian's PostgreSQL 15 binaries in a
/// temporary directory on a free port, so the test can stop and restart it.
pub struct TemporaryPostgres {
    directory: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres_user(program: &str, arguments: &[&str]) -> std::process::Output {
    let program = format!("{POSTGRES_BIN}/{program}");
    // Postgres refuses to run as root; the machine has a postgres user for it.
    let is_root = current_uid() == 0;
    let mut command = if is_root {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", &program]);
        command
    } else {
        std::process::Command::new(&program)
    };
    command
        .args(arguments)
        .output()
        .expect("run a PostgreSQL program")
}

/// Hands `path` (recursively) to the machine's postgres user when the test runs as root.
fn give_to_postgres(path: &Path) {
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres", &path.display().to_string()])
        .status();
}

fn current_uid() -> u32 {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

impl TemporaryPostgres {
    pub fn start() -> Self {
        let postgres = Self::initialised();
        postgres.resume();
        postgres
    }

    /// A server that takes TLS connections only, with `certificate` and `key` (PEM files):
    /// pg_hba rejects every connection over TCP that is not encrypted.
    pub fn start_with_tls(certificate: &Path, key: &Path) -> Self {
        let postgres = Self::initialised();
        let data = postgres.directory.path().join("data");
        std::fs::copy(certificate, data.join("server.crt")).expect("copy the certificate");
        std::fs::copy(key, data.join("server.key")).expect("copy the key");
        // Postgres refuses a key that others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("restrict the key");
        let settings = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        let mut configuration = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        configuration.push_str(settings);
        std::fs::write(data.join("postgresql.conf"), configuration).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostnossl all all all reject\nhostssl all all all trust\n",
        )
        .unwrap();
        give_to_postgres(&data);
        postgres.resume();
        postgres
    }

    /// A new cluster in a temporary directory, not yet started.
    fn initialised() -> Self {
        let directory = tempfile::Builder::new()
            .prefix("celeritas-pg-")
            .tempdir()
            .expect("a directory for Postgres");
        give_to_postgres(directory.path());
        let data = directory.path().join("data");
        let output = as_postgres_user(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            directory,
            port,
        }
    }

    fn data(&self) -> String {
        self.directory.path().join("data").display().to_string()
    }

    /// Starts the server (again) on its port, waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.directory.path().display()
        );
        let log = self
            .directory
            .path()
            .join("postgres.log")
            .display()
            .to_string();
        let output = as_postgres_user(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server the hard way, as a crash would.
    pub fn crash(&self) {
        let output = as_postgres_user("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TemporaryPostgres {
    fn drop(&mut self) {
        let _ = as_postgres_user("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

/// A spec for a built-in task on an explicit queue.
pub fn spec(name: &str, args: serde_json::Value, queue: Option<&str>) -> TaskSpec {
    let mut spec = TaskSpec::new(
        TaskName::parse("name", name).expect("a valid task name"),
        JsonText::from_value(&args),
    );
    spec.queue = queue.map(|queue| QueueName::parse("queue", queue).expect("a valid queue"));
    spec
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to a minute) until task `id` is in `state`.
pub async fn wait_for_state(client: &mut CoordinatorClient, id: TaskId, state: TaskState) {
    wait_until(
        &format!("task {id} to be {state:?}"),
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move { client.task(id).await.is_ok_and(|task| task.state == state) }
        },
    )
    .await;
}

/// Waits (up to 30 s) until `client`'s coordinator sees `ready` hold of the connected workers'
/// ids.
pub async fn wait_for_workers(
    client: &CoordinatorClient,
    what: &str,
    ready: impl Fn(&[String]) -> bool,
) {
    wait_until(what, Duration::from_secs(30), || {
        let mut client = client.clone();
        let ready = &ready;
        async move {
            let connected: Vec<String> = client
                .workers()
                .await
                .unwrap()
                .into_iter()
                .filter(|worker| worker.connected)
                .map(|worker| worker.id)
                .collect();
            ready(&connected)
        }
    })
    .await;
}

/// How many tasks of the database are in `state`.
pub async fn count_in_state(pool: &PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .expect("count tasks")
}

/// Starts `tests/peers/SCRIPT` with `arguments` under the test Python, its stderr in
/// `logs/LOG_NAME`, and waits for the `ready` line it prints once it listens.
pub async fn start_peer(script: &str, arguments: &[String], logs: &Path, log_name: &str) -> Child {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let mut process = Command::new(crate::health::python())
        .arg(path)
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(logs.join(log_name)).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("start {script}: {error}"));
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{script} starts within 30 s"))
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "see {}",
        logs.join(log_name).display()
    );
    process
}

/// Scrapes a coordinator's `/metrics` at `address` (with curl, a client nobody here wrote) into
/// `name{labels}` → value; empty when nothing answers.
pub async fn scrape_metrics(address: &str) -> std::collections::HashMap<String, f64> {
    let url = format!("http://{address}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("curl")
            .args(["-sf", &url])
            .output()
            .expect("run curl");
        String::from_utf8(output.stdout).expect("UTF-8 metrics")
    })
    .await
    .expect("scrape the metrics");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
