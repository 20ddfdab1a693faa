//! The coordinator and workers a benchmark starts for itself: real child processes of this
//! binary on a fresh Postgres database, stopped (and the database dropped) when it is done.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::grpc::CoordinatorClient;

/// How long the coordinator and the workers get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The database to create (dropped first if it exists) and run the coordinator on.
    pub database_url: String,
    /// How many worker processes.
    pub workers: u32,
    /// Each worker's concurrency.
    pub concurrency: u32,
    /// Each worker's prefetch multiplier.
    pub prefetch_multiplier: u32,
    /// The configuration file to hand to the children, if one was given.
    pub config: Option<PathBuf>,
}

/// A started coordinator with its workers.
#[derive(Debug)]
pub struct LocalCluster {
    /// The coordinator's URL.
    pub url: String,
    coordinator: Child,
    workers: Vec<Child>,
    database: FreshDatabase,
    /// Where the children's logs are.
    pub log_directory: PathBuf,
}

/// The peak resident memory of one process, from `/proc/PID/status`.
#[derive(Debug, Clone)]
pub struct ProcessMemory {
    /// What the process is (`coordinator`, `worker 1`, ...).
    pub role: String,
    /// Its process id.
    pub pid: u32,
    /// `VmHWM` in bytes, when the system reports it.
    pub peak_bytes: Option<u64>,
}

impl LocalCluster {
    /// Creates the database, starts the coordinator and the workers, and waits until every
    /// worker is connected.
    pub async fn start(plan: &ClusterPlan) -> anyhow::Result<Self> {
        let database = FreshDatabase::create(&plan.database_url).await?;
        let log_directory =
            std::env::temp_dir().join(format!("celeritas-bench-{}", std::process::id()));
        std::fs::create_dir_all(&log_directory)
            .with_context(|| format!("cannot create {}", log_directory.display()))?;
        let executable =
            std::env::current_exe().context("cannot find this executable to start children")?;

        let mut coordinator = child_command(&executable, plan, &log_directory, "coordinator")?
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "none",
            ])
            .arg("--database-url")
            .arg(&plan.database_url)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the coordinator")?;
        let address =
            match tokio::time::timeout(START_TIMEOUT, listening_address(&mut coordinator)).await {
                Ok(Ok(address)) => address,
                Ok(Err(error)) => {
                    let _ = coordinator.kill().await;
                    database.drop_now().await;
                    return Err(error.context(format!(
                        "the coordinator did not start; see {}",
                        log_directory.join("coordinator.log").display()
                    )));
                }
                Err(_) => {
                    let _ = coordinator.kill().await;
                    database.drop_now().await;
                    anyhow::bail!(
                        "the coordinator did not start within {START_TIMEOUT:?}; see {}",
                        log_directory.join("coordinator.log").display()
                    );
                }
            };
        let url = format!("http://{address}");
        let mut cluster = Self {
            url,
            coordinator,
            workers: Vec::new(),
            database,
            log_directory,
        };
        if let Err(error) = cluster.start_workers(plan, &executable).await {
            cluster.stop().await;
            return Err(error);
        }
        Ok(cluster)
    }

    /// Starts workers until `plan.workers` are connected.
    async fn start_workers(&mut self, plan: &ClusterPlan, executable: &Path) -> anyhow::Result<()> {
        for index in 1..=plan.workers {
            let role = format!("worker-{index}");
            let worker = child_command(executable, plan, &self.log_directory, &role)?
                .arg("worker")
                .arg("--coordinator")
                .arg(&self.url)
                .arg("-c")
                .arg(plan.concurrency.to_string())
                .arg("--prefetch-multiplier")
                .arg(plan.prefetch_multiplier.to_string())
                .arg("-n")
                .arg(format!("bench-{}-{index}", std::process::id()))
                .args(["--shutdown-timeout", "10"])
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {role}"))?;
            self.workers.push(worker);
        }
        self.wait_for_workers(plan.workers).await
    }

    /// Starts the workers (after a preload, for example).
    pub async fn start_workers_later(&mut self, plan: &ClusterPlan) -> anyhow::Result<()> {
        let executable =
            std::env::current_exe().context("cannot find this executable to start children")?;
        self.start_workers(plan, &executable).await
    }

    async fn wait_for_workers(&self, expected: u32) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut client = CoordinatorClient::connect(&self.url).await?;
        loop {
            let connected = client.ping(Duration::from_secs(1)).await?.len();
            if connected >= expected as usize {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "only {connected} of {expected} workers connected within {START_TIMEOUT:?}; see the logs in {}",
                    self.log_directory.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The peak memory of the coordinator and of each worker, so far.
    pub fn memory(&self) -> Vec<ProcessMemory> {
        let mut memory = vec![process_memory("coordinator", &self.coordinator)];
        for (index, worker) in self.workers.iter().enumerate() {
            memory.push(process_memory(&format!("worker {}", index + 1), worker));
        }
        memory
    }

    /// Stops the workers (they drain), then the coordinator, then drops the database.
    pub async fn stop(mut self) {
        for worker in &mut self.workers {
            terminate(worker).await;
        }
        terminate(&mut self.coordinator).await;
        self.database.drop_now().await;
    }
}

fn child_command(
    executable: &Path,
    plan: &ClusterPlan,
    log_directory: &Path,
    role: &str,
) -> anyhow::Result<Command> {
    let log_path = log_directory.join(format!("{role}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(executable);
    if let Some(config) = &plan.config {
        command.arg("--config").arg(config);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    command
        .env_remove("DATABASE_URL")
        .env_remove("CELERITAS_COORDINATOR")
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    Ok(command)
}

/// Reads the coordinator's standard output until it says where it listens; keeps draining it
/// afterwards so later lines never meet a closed pipe.
async fn listening_address(coordinator: &mut Child) -> anyhow::Result<String> {
    let stdout = coordinator
        .stdout
        .take()
        .context("the coordinator's standard output is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.strip_prefix("listening on ") {
            let address = address.trim().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(address);
        }
    }
    anyhow::bail!("the coordinator exited before it listened")
}

/// SIGTERM, then SIGKILL if the process has not exited in time.
async fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(STOP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn process_memory(role: &str, child: &Child) -> ProcessMemory {
    let pid = child.id().unwrap_or(0);
    ProcessMemory {
        role: role.to_owned(),
        pid,
        peak_bytes: peak_resident_bytes(pid),
    }
}

/// `VmHWM` of a process, in bytes.
pub fn peak_resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kilobytes * 1024)
}

/// A Postgres database created for one run and dropped after it.
#[derive(Debug)]
struct FreshDatabase {
    admin: PgConnectOptions,
    name: String,
}

impl FreshDatabase {
    async fn create(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|error| {
            anyhow::anyhow!("--database-url: {url:?} is not a Postgres URL: {error}")
        })?;
        let name = options
            .get_database()
            .context("--database-url: the URL names no database")?
            .to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_')
        {
            anyhow::bail!(
                "--database-url: the database name {name:?} must be letters, digits and underscores"
            );
        }
        if name == "postgres" {
            anyhow::bail!(
                "--database-url: the bench drops its database afterwards; name another than \"postgres\""
            );
        }
        let admin = options.database("postgres");
        let mut connection = PgConnection::connect_with(&admin)
            .await
            .context("--database-url: cannot connect to Postgres")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await
        .with_context(|| format!("cannot drop the old database {name}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        let _ = connection.close().await;
        Ok(Self { admin, name })
    }

    async fn drop_now(&self) {
        let dropped = async {
            let mut connection = PgConnection::connect_with(&self.admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut connection)
            .await?;
            connection.close().await
        }
        .await;
        if let Err(error) = dropped {
            tracing::warn!(%error, database = %self.name, "cannot drop the benchmark database");
        }
    }
}
