//! One suite, both stores: every scenario runs against Postgres (a fresh database) and the
//! embedded SQLite store (a fresh file), through the `Store` trait, with time passed explicitly.

use std::sync::Arc;
use std::time::Duration;

use celeritas::clock::after;
use celeritas::domain::{
    JsonText, LeaseToken, NewTask, Priority, QueueName, TaskId, TaskName, TaskState, TimeLimits,
    TimeRange, WorkerId,
};
use celeritas::store::{
    AttemptBatch, Claim, Completion, Interruption, PostgresStore, Resolution, SqliteStore, Start,
    Store, TaskFilter, WorkerRegistration,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::support::TestDatabase;

/// Starts and ends written as one batch.
trait RecordParts {
    async fn record_parts(
        &self,
        starts: &[Start],
        completions: &[Completion],
    ) -> Result<Vec<bool>, celeritas::store::StoreError>;
}

impl RecordParts for Arc<dyn Store> {
    async fn record_parts(
        &self,
        starts: &[Start],
        completions: &[Completion],
    ) -> Result<Vec<bool>, celeritas::store::StoreError> {
        self.record_attempts(&AttemptBatch {
            starts: starts.to_vec(),
            completions: completions.to_vec(),
            ..AttemptBatch::default()
        })
        .await
    }
}

/// Keeps a backend's resources (its database, its directory) alive for the test.
type Backing = Box<dyn std::any::Any>;

async fn postgres() -> (Arc<dyn Store>, Backing) {
    let database = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect_lazy(&database.url, 4).unwrap());
    store.migrate().await.unwrap();
    (store, Box::new(database))
}

async fn sqlite() -> (Arc<dyn Store>, Backing) {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&directory.path().join("store.db"))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    (store, Box::new(directory))
}

/// Runs a scenario on both backends.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn postgres() {
                    let (store, _backing) = crate::store_suite::postgres().await;
                    super::$scenario(store).await;
                }

                #[tokio::test]
                async fn sqlite() {
                    let (store, _backing) = crate::store_suite::sqlite().await;
                    super::$scenario(store).await;
                }
            }
        )*
    };
}

mod announcements;
mod attempts;
mod credentials;
mod files;
mod flow;
mod leases;
mod records;
mod schedules;
mod tasks;
mod trees;
mod workers;

fn t0() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn queue(name: &str) -> QueueName {
    QueueName::parse("queue", name).unwrap()
}

fn worker(name: &str) -> WorkerId {
    WorkerId::parse("worker", name).unwrap()
}

fn task(name: &str, queue_name: &str, priority: u32, now: DateTime<Utc>) -> NewTask {
    let id = TaskId::generate();
    NewTask {
        id,
        name: TaskName::parse("name", name).unwrap(),
        queue: queue(queue_name),
        priority: Priority::parse("priority", priority).unwrap(),
        args: JsonText::parse("args", r#"{"n": 1}"#, 1024).unwrap(),
        run_at: now,
        expires_at: None,
        max_retries: 2,
        time_limits: TimeLimits {
            soft: Duration::from_secs(10),
            hard: Duration::from_secs(20),
        },
        idempotency_key: None,
        parent_id: None,
        root_id: id,
        created_at: now,
        waits_for: None,
        submitted_by: None,
        rate_keys: Default::default(),
        governed: false,
        group_key: None,
        max_concurrency: None,
        fair_position: None,
    }
}

/// The task names the suite's tasks use; `claim` registers them all.
const SUITE_TASK_NAMES: &[&str] = &[
    "noop",
    "batch",
    "cleanup",
    "emit_records",
    "fail",
    "fan_out",
    "other",
];

fn claim(
    worker_name: &str,
    session: Uuid,
    queues: &[(&str, u8)],
    limit: u32,
    now: DateTime<Utc>,
) -> Claim {
    claim_of_names(worker_name, session, queues, SUITE_TASK_NAMES, limit, now)
}

/// A claim of a worker that registered only `names`.
fn claim_of_names(
    worker_name: &str,
    session: Uuid,
    queues: &[(&str, u8)],
    names: &[&str],
    limit: u32,
    now: DateTime<Utc>,
) -> Claim {
    Claim {
        worker: worker(worker_name),
        session,
        queues: queues
            .iter()
            .map(|(name, priority)| (queue(name), *priority))
            .collect(),
        names: names
            .iter()
            .map(|name| TaskName::parse("name", name).unwrap())
            .collect(),
        limit,
        now,
        lease_expires_at: after(now, Duration::from_secs(30)),
        rate_limits: Default::default(),
    }
}

fn completion(
    token: LeaseToken,
    worker_name: &str,
    resolution: Resolution,
    at: DateTime<Utc>,
) -> Completion {
    Completion {
        token,
        worker: worker(worker_name),
        started_at: Some(at),
        resolution,
        at,
    }
}

async fn state(store: &Arc<dyn Store>, id: TaskId) -> TaskState {
    store
        .task(id)
        .await
        .unwrap()
        .expect("the task exists")
        .state
}

/// Claims (as worker "w") and starts the given tasks at `now`; returns their leases.
async fn run(
    store: &Arc<dyn Store>,
    queue_name: &str,
    count: u32,
    now: DateTime<Utc>,
) -> Vec<LeaseToken> {
    let leases = store
        .claim(&claim("w", Uuid::new_v4(), &[(queue_name, 0)], count, now))
        .await
        .unwrap()
        .tasks;
    let starts: Vec<Start> = leases
        .iter()
        .map(|lease| Start {
            token: lease.token,
            worker: worker("w"),
            at: now,
            lease_expires_at: after(now, Duration::from_secs(60)),
        })
        .collect();
    store.record_parts(&starts, &[]).await.unwrap();
    leases.iter().map(|lease| lease.token).collect()
}

fn succeeded(token: LeaseToken, now: DateTime<Utc>) -> Completion {
    completion(
        token,
        "w",
        Resolution::Succeeded(JsonText::empty_object()),
        now,
    )
}

fn child_of(parent: &NewTask, queue_name: &str, now: DateTime<Utc>) -> NewTask {
    let mut child = task("noop", queue_name, 0, now);
    child.parent_id = Some(parent.id);
    child.root_id = parent.root_id;
    child
}
