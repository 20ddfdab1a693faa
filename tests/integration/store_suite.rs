//! One suite, both stores: every scenario runs against Postgres (a fresh database) and the
//! embedded SQLite store (a fresh file), through the `Store` trait, with time passed explicitly.

use std::sync::Arc;
use std::time::Duration;

use celeritas::clock::after;
use celeritas::domain::{
    JsonText, LeaseToken, NewTask, Priority, QueueName, TaskId, TaskName, TaskState, TimeLimits,
    WorkerId,
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
                    let (store, _backing) = super::postgres().await;
                    super::$scenario(store).await;
                }

                #[tokio::test]
                async fn sqlite() {
                    let (store, _backing) = super::sqlite().await;
                    super::$scenario(store).await;
                }
            }
        )*
    };
}

on_both_stores!(
    inserts_read_back_and_idempotency_keys_return_the_first_task,
    claims_serve_queue_priority_then_task_priority_then_fifo,
    expired_tasks_are_never_leased,
    scheduled_tasks_become_pending_when_due,
    completions_are_fenced_by_attempt_and_worker,
    failures_are_retried_or_final_and_kept_in_history,
    releases_are_fenced_by_session,
    a_reconnecting_worker_keeps_what_it_holds_and_loses_the_rest,
    a_running_attempt_the_worker_comes_back_without_counts_as_lost,
    leases_are_renewed_and_expired_ones_reaped_by_verdict,
    cancel_and_purge_stop_waiting_and_running_tasks,
    workers_are_registered_with_their_task_names,
    trees_tell_their_children_and_finish_after_the_last,
    callbacks_wait_for_the_parent_and_every_child,
    records_are_fenced_unique_and_paged_in_order,
    quiet_tasks_are_listed_and_interrupted_by_attempt,
);

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
    }
}

fn claim(
    worker_name: &str,
    session: Uuid,
    queues: &[(&str, u8)],
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
        limit,
        now,
        lease_expires_at: after(now, Duration::from_secs(30)),
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

async fn inserts_read_back_and_idempotency_keys_return_the_first_task(store: Arc<dyn Store>) {
    let now = t0();
    let mut first = task("noop", "default", 3, now);
    first.idempotency_key = Some("order-1".to_owned());
    let mut again = task("noop", "default", 3, now);
    again.idempotency_key = Some("order-1".to_owned());
    let plain = task("noop", "email", 0, now);
    let inserted = store
        .insert_tasks(&[first.clone(), plain.clone()])
        .await
        .unwrap();
    assert!(inserted.iter().all(|entry| entry.created));
    let repeated = store.insert_tasks(&[again]).await.unwrap();
    assert_eq!(repeated[0].id, first.id);
    assert!(!repeated[0].created);

    let record = store.task(first.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Pending);
    assert_eq!(record.priority.value(), 3);
    assert_eq!(record.args.to_value()["n"], 1);
    assert_eq!(record.created_at, now);
    assert_eq!(record.idempotency_key.as_deref(), Some("order-1"));
    assert!(store.task(TaskId::generate()).await.unwrap().is_none());
    let roots = store.roots(&[plain.id, TaskId::generate()]).await.unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[&plain.id], plain.id);
}

async fn claims_serve_queue_priority_then_task_priority_then_fifo(store: Arc<dyn Store>) {
    let now = t0();
    let tasks = vec![
        task("noop", "default", 9, now),
        task("noop", "import", 0, now),
        task("noop", "email", 0, now),
        task("noop", "campaigns", 5, now),
        task("noop", "email", 0, now),
        task("noop", "email", 7, now),
    ];
    store.insert_tasks(&tasks).await.unwrap();
    let queues = [
        ("default", 0),
        ("import", 5),
        ("email", 10),
        ("campaigns", 10),
    ];
    let session = Uuid::new_v4();
    let mut order = Vec::new();
    for _ in 0..3 {
        let claimed = store
            .claim(&claim("w", session, &queues, 2, now))
            .await
            .unwrap();
        assert!(claimed.tasks.len() <= 2);
        order.extend(claimed.tasks.iter().map(|lease| lease.token.task_id));
    }
    // Email and campaigns share priority 10: task priority decides (7, 5), then FIFO.
    let expected = vec![
        tasks[5].id,
        tasks[3].id,
        tasks[2].id,
        tasks[4].id,
        tasks[1].id,
        tasks[0].id,
    ];
    assert_eq!(order, expected);
    for id in &order {
        let record = store.task(*id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Leased);
        assert_eq!(record.attempt, 1);
        assert_eq!(record.worker_id.unwrap().as_str(), "w");
    }
    let empty = store
        .claim(&claim("w", session, &queues, 5, now))
        .await
        .unwrap();
    assert_eq!(empty.consumed(), 0);
}

async fn expired_tasks_are_never_leased(store: Arc<dyn Store>) {
    let now = t0();
    let mut stale = task("noop", "default", 0, now);
    stale.expires_at = Some(after(now, Duration::from_secs(1)));
    let fresh = task("noop", "default", 0, now);
    store
        .insert_tasks(&[stale.clone(), fresh.clone()])
        .await
        .unwrap();
    let later = after(now, Duration::from_secs(5));
    let claimed = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 10, later))
        .await
        .unwrap();
    assert_eq!(claimed.expired, 1);
    assert_eq!(claimed.tasks.len(), 1);
    assert_eq!(claimed.tasks[0].token.task_id, fresh.id);
    assert_eq!(state(&store, stale.id).await, TaskState::Expired);

    // The sweeper finds expired tasks nobody claims.
    let mut waiting = task("noop", "import", 0, now);
    waiting.expires_at = Some(after(now, Duration::from_secs(1)));
    store.insert_tasks(&[waiting.clone()]).await.unwrap();
    let reaped = store.reap(later, 100).await.unwrap();
    assert_eq!(reaped.expired, 1);
    assert_eq!(state(&store, waiting.id).await, TaskState::Expired);
}

async fn scheduled_tasks_become_pending_when_due(store: Arc<dyn Store>) {
    let now = t0();
    let mut soon = task("noop", "default", 0, now);
    soon.run_at = after(now, Duration::from_secs(10));
    let mut later = task("noop", "default", 0, now);
    later.run_at = after(now, Duration::from_secs(60));
    store
        .insert_tasks(&[soon.clone(), later.clone()])
        .await
        .unwrap();
    assert_eq!(state(&store, soon.id).await, TaskState::Scheduled);
    let nothing = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 10, now))
        .await
        .unwrap();
    assert_eq!(nothing.consumed(), 0);

    let promoted = store.promote_due(now, 100).await.unwrap();
    assert_eq!(promoted.count, 0);
    assert_eq!(promoted.next_due, Some(soon.run_at));
    let promoted = store
        .promote_due(after(now, Duration::from_secs(11)), 100)
        .await
        .unwrap();
    assert_eq!(promoted.count, 1);
    assert_eq!(promoted.next_due, Some(later.run_at));
    assert_eq!(state(&store, soon.id).await, TaskState::Pending);
    assert_eq!(state(&store, later.id).await, TaskState::Scheduled);
}

async fn completions_are_fenced_by_attempt_and_worker(store: Arc<dyn Store>) {
    let now = t0();
    let new = task("noop", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&new))
        .await
        .unwrap();
    let lease = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks
        .remove(0);
    let token = lease.token;
    store
        .record_parts(
            &[Start {
                token,
                worker: worker("w"),
                at: now,
                lease_expires_at: after(now, Duration::from_secs(60)),
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(state(&store, new.id).await, TaskState::Running);

    let done = Resolution::Succeeded(JsonText::parse("result", r#"{"ok": true}"#, 1024).unwrap());
    let stale = LeaseToken {
        task_id: token.task_id,
        attempt: token.attempt + 1,
    };
    let applied = store
        .record_parts(
            &[],
            &[
                completion(stale, "w", done.clone(), now),
                completion(token, "intruder", done.clone(), now),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false, false]);
    assert_eq!(state(&store, new.id).await, TaskState::Running);

    let applied = store
        .record_parts(&[], &[completion(token, "w", done.clone(), now)])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.result.unwrap().to_value()["ok"], true);
    assert_eq!(record.started_at, Some(now));
    assert_eq!(record.finished_at, Some(now));

    let again = store
        .record_parts(&[], &[completion(token, "w", done, now)])
        .await
        .unwrap();
    assert_eq!(again, vec![false], "a finished task takes no second result");
}

async fn failures_are_retried_or_final_and_kept_in_history(store: Arc<dyn Store>) {
    let now = t0();
    let new = task("fail", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&new))
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let token = store
        .claim(&claim("w", session, &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks[0]
        .token;
    let retry_at = after(now, Duration::from_secs(5));
    let retry = Resolution::Retry {
        kind: "smtp_transient".into(),
        message: "451".into(),
        run_at: retry_at,
    };
    assert_eq!(
        store
            .record_parts(&[], &[completion(token, "w", retry, now)])
            .await
            .unwrap(),
        vec![true]
    );
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Scheduled);
    assert_eq!(record.retries, 1);
    assert_eq!(record.run_at, retry_at);
    assert_eq!(record.finished_at, None);

    store.promote_due(retry_at, 10).await.unwrap();
    let token = store
        .claim(&claim("w", session, &[("default", 0)], 1, retry_at))
        .await
        .unwrap()
        .tasks[0]
        .token;
    assert_eq!(token.attempt, 2);
    let final_failure = Resolution::Failed {
        kind: "smtp_permanent".into(),
        message: "550".into(),
    };
    store
        .record_parts(&[], &[completion(token, "w", final_failure, retry_at)])
        .await
        .unwrap();
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.error, Some(("smtp_permanent".into(), "550".into())));
    let kinds: Vec<(u32, &str)> = record
        .failures
        .iter()
        .map(|failure| (failure.attempt, failure.kind.as_str()))
        .collect();
    assert_eq!(kinds, vec![(1, "smtp_transient"), (2, "smtp_permanent")]);
    assert!(
        record
            .failures
            .iter()
            .all(|failure| failure.worker_id.as_deref() == Some("w"))
    );
    assert_eq!(record.failures[0].at, now);
}

async fn releases_are_fenced_by_session(store: Arc<dyn Store>) {
    let now = t0();
    let new = task("noop", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&new))
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let token = store
        .claim(&claim("w", session, &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks[0]
        .token;
    assert_eq!(store.release(Uuid::new_v4(), &[token]).await.unwrap(), 0);
    assert_eq!(state(&store, new.id).await, TaskState::Leased);
    assert_eq!(store.release(session, &[token]).await.unwrap(), 1);
    assert_eq!(state(&store, new.id).await, TaskState::Pending);
    let again = store
        .claim(&claim("w", session, &[("default", 0)], 1, now))
        .await
        .unwrap();
    assert_eq!(
        again.tasks[0].token.attempt, 2,
        "a new lease gets a new token"
    );
}

async fn a_reconnecting_worker_keeps_what_it_holds_and_loses_the_rest(store: Arc<dyn Store>) {
    let now = t0();
    let tasks = vec![
        task("noop", "default", 0, now),
        task("noop", "default", 0, now),
    ];
    store.insert_tasks(&tasks).await.unwrap();
    let old_session = Uuid::new_v4();
    let leases = store
        .claim(&claim("w", old_session, &[("default", 0)], 2, now))
        .await
        .unwrap()
        .tasks;
    let held = leases[0].token;
    let new_session = Uuid::new_v4();
    let adopted = store
        .adopt_leases(
            &worker("w"),
            new_session,
            &[held],
            now,
            after(now, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(adopted.kept.len(), 1);
    assert_eq!(adopted.kept[0].token, held);
    assert_eq!(adopted.released, 1);
    assert_eq!(
        state(&store, leases[1].token.task_id).await,
        TaskState::Pending
    );
    // The old session can no longer give back what the new one adopted.
    assert_eq!(store.release(old_session, &[held]).await.unwrap(), 0);
    assert_eq!(state(&store, held.task_id).await, TaskState::Leased);
    // Another worker cannot adopt it.
    let stolen = store
        .adopt_leases(&worker("thief"), Uuid::new_v4(), &[held], now, now)
        .await
        .unwrap();
    assert!(stolen.kept.is_empty());
}

/// A task that kills its worker, whose worker comes back under the same id (a container
/// restart: same hostname, pid 1), must not run for ever: each lost attempt counts.
async fn a_running_attempt_the_worker_comes_back_without_counts_as_lost(store: Arc<dyn Store>) {
    let now = t0();
    let mut killer = task("noop", "default", 0, now);
    killer.max_retries = 1;
    store.insert_tasks(&[killer.clone()]).await.unwrap();
    let mut attempts = Vec::new();
    for round in 0..2u64 {
        let at = after(now, Duration::from_secs(round * 10));
        let session = Uuid::new_v4();
        let lease = store
            .claim(&claim("w", session, &[("default", 0)], 1, at))
            .await
            .unwrap()
            .tasks
            .pop()
            .expect("the task is pending again after each lost attempt");
        store
            .record_parts(
                &[Start {
                    token: lease.token,
                    worker: worker("w"),
                    at,
                    lease_expires_at: after(at, Duration::from_secs(60)),
                }],
                &[],
            )
            .await
            .unwrap();
        attempts.push(lease.token);
        // The worker was killed by the task and comes back holding nothing.
        let back = after(at, Duration::from_secs(1));
        let adopted = store
            .adopt_leases(
                &worker("w"),
                Uuid::new_v4(),
                &[],
                back,
                after(back, Duration::from_secs(30)),
            )
            .await
            .unwrap();
        assert_eq!((adopted.released, adopted.lost), (1, 1), "round {round}");
    }
    let record = store.task(killer.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed, "{record:?}");
    assert_eq!(record.retries, 1);
    assert_eq!(record.attempt, 2);
    assert_eq!(record.failures.len(), 2);
    assert!(
        record
            .failures
            .iter()
            .all(|failure| failure.kind == "worker_lost")
    );
    assert_eq!(record.error.unwrap().0, "worker_lost");
    assert!(record.finished_at.is_some());
    // Nothing to claim: it is not retried a third time.
    assert!(
        store
            .claim(&claim(
                "w",
                Uuid::new_v4(),
                &[("default", 0)],
                1,
                after(now, Duration::from_secs(60))
            ))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}

async fn leases_are_renewed_and_expired_ones_reaped_by_verdict(store: Arc<dyn Store>) {
    let now = t0();
    let ttl = Duration::from_secs(30);
    let tasks: Vec<_> = (0..4).map(|_| task("noop", "default", 0, now)).collect();
    store.insert_tasks(&tasks).await.unwrap();
    let live = Uuid::new_v4();
    let dead = Uuid::new_v4();
    let live_lease = store
        .claim(&claim("live", live, &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks[0]
        .token;
    let dead_leases = store
        .claim(&claim("dead", dead, &[("default", 0)], 3, now))
        .await
        .unwrap()
        .tasks;
    // Of the dead worker's three leases: one never started, one started, one started long ago
    // (so its hard limit, 20 s, has passed by the time it is reaped).
    let started = dead_leases[1].token;
    let overdue = dead_leases[2].token;
    let start = |token, at| Start {
        token,
        worker: worker("dead"),
        at,
        lease_expires_at: after(now, ttl),
    };
    store
        .record_parts(
            &[
                start(started, after(now, Duration::from_secs(50))),
                start(overdue, now),
            ],
            &[],
        )
        .await
        .unwrap();

    // Time passes; only the live worker's coordinator renews.
    let later = after(now, Duration::from_secs(25));
    assert_eq!(store.renew_leases(&[live], later, ttl).await.unwrap(), 1);
    let reap_at = after(now, Duration::from_secs(52));
    let reaped = store.reap(reap_at, 100).await.unwrap();
    assert_eq!((reaped.requeued, reaped.failed), (2, 1), "{reaped:?}");
    assert_eq!(state(&store, live_lease.task_id).await, TaskState::Leased);
    assert_eq!(
        state(&store, dead_leases[0].token.task_id).await,
        TaskState::Pending
    );
    let retried = store.task(started.task_id).await.unwrap().unwrap();
    assert_eq!(retried.state, TaskState::Pending);
    assert_eq!(retried.retries, 1);
    assert_eq!(retried.failures[0].kind, "worker_lost");
    let overdue = store.task(overdue.task_id).await.unwrap().unwrap();
    assert_eq!(overdue.state, TaskState::Failed);
    assert_eq!(overdue.error.unwrap().0, "time_limit");

    // The grace period: a broken stream's leases expire at its end.
    let grace_end = after(later, Duration::from_secs(5));
    assert_eq!(
        store.expire_session_leases(live, grace_end).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .reap(after(grace_end, Duration::from_secs(1)), 100)
            .await
            .unwrap()
            .requeued,
        1
    );
    assert_eq!(state(&store, live_lease.task_id).await, TaskState::Pending);
}

async fn cancel_and_purge_stop_waiting_and_running_tasks(store: Arc<dyn Store>) {
    let now = t0();
    let waiting = task("noop", "import", 0, now);
    let running = task("noop", "default", 0, now);
    let backlog: Vec<_> = (0..3).map(|_| task("noop", "import", 0, now)).collect();
    store
        .insert_tasks(&[waiting.clone(), running.clone()])
        .await
        .unwrap();
    store.insert_tasks(&backlog).await.unwrap();
    let token = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks[0]
        .token;

    let cancelled = store.cancel(waiting.id, now).await.unwrap().unwrap();
    assert_eq!(cancelled.previous, TaskState::Pending);
    assert_eq!(cancelled.leases, vec![]);
    let cancelled = store.cancel(running.id, now).await.unwrap().unwrap();
    assert_eq!(cancelled.previous, TaskState::Leased);
    assert_eq!(cancelled.leases, vec![token]);
    assert_eq!(state(&store, running.id).await, TaskState::Cancelled);
    // The worker's late result is refused.
    let done = Resolution::Succeeded(JsonText::empty_object());
    assert_eq!(
        store
            .record_parts(&[], &[completion(token, "w", done, now)])
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        store
            .cancel(running.id, now)
            .await
            .unwrap()
            .unwrap()
            .previous,
        TaskState::Cancelled
    );
    assert!(
        store
            .cancel(TaskId::generate(), now)
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(store.purge(&queue("import"), now).await.unwrap(), 3);
    for task in &backlog {
        assert_eq!(state(&store, task.id).await, TaskState::Cancelled);
    }
}

async fn workers_are_registered_with_their_task_names(store: Arc<dyn Store>) {
    let name = TaskName::parse("name", "send_campaign").unwrap();
    assert!(!store.knows_task_name(&name).await.unwrap());
    let registration = WorkerRegistration {
        id: worker("w"),
        hostname: "host".to_owned(),
        pid: 7,
        queues: vec![queue("campaigns")],
        task_names: vec![name.clone()],
        concurrency: 2,
        prefetch_multiplier: 1,
        version: "test".to_owned(),
        coordinator_id: "c".to_owned(),
        connected_at: t0(),
    };
    store.register_worker(&registration).await.unwrap();
    store.register_worker(&registration).await.unwrap();
    assert!(store.knows_task_name(&name).await.unwrap());
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

async fn trees_tell_their_children_and_finish_after_the_last(store: Arc<dyn Store>) {
    use celeritas::domain::TreeEventKind;
    let now = t0();
    let root = task("fan_out", "campaigns", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&root))
        .await
        .unwrap();
    assert!(
        store.tree_events(root.id, 0, 100).await.unwrap().is_none(),
        "a plain task has no tree"
    );
    let root_lease = run(&store, "campaigns", 1, now).await[0];
    store.open_tree(root.id, now).await.unwrap();
    store.open_tree(root.id, now).await.unwrap();
    let children: Vec<NewTask> = (0..3).map(|_| child_of(&root, "email", now)).collect();
    store.insert_tasks(&children).await.unwrap();
    let update = store.update_tree(root.id, now).await.unwrap();
    assert_eq!(update.events, 1);
    store
        .record_parts(&[], &[succeeded(root_lease, now)])
        .await
        .unwrap();
    let leases = run(&store, "email", 3, now).await;
    store
        .record_parts(&[], &[succeeded(leases[0], now), succeeded(leases[1], now)])
        .await
        .unwrap();
    let update = store.update_tree(root.id, now).await.unwrap();
    assert!(!update.finished, "a child is still running");
    assert_eq!(store.unfinished_trees(10).await.unwrap(), vec![root.id]);
    store
        .record_parts(&[], &[succeeded(leases[2], now)])
        .await
        .unwrap();
    let update = store.update_tree(root.id, now).await.unwrap();
    assert!(update.finished);
    assert_eq!(
        store.update_tree(root.id, now).await.unwrap().events,
        0,
        "a finished tree is quiet"
    );
    assert!(store.unfinished_trees(10).await.unwrap().is_empty());

    let events = store.tree_events(root.id, 0, 100).await.unwrap().unwrap();
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(matches!(
        events[0].kind,
        TreeEventKind::StateChanged {
            state: TaskState::Running,
            ..
        }
    ));
    assert!(matches!(
        events[1].kind,
        TreeEventKind::TreeUpdated {
            tasks_submitted: 3,
            tasks_finished: 0,
            ..
        }
    ));
    assert!(events.iter().any(|event| matches!(
        event.kind,
        TreeEventKind::StateChanged {
            state: TaskState::Succeeded,
            ..
        }
    )));
    let last = events.last().unwrap();
    assert!(matches!(
        last.kind,
        TreeEventKind::TreeFinished {
            root_state: TaskState::Succeeded
        }
    ));
    assert_eq!(
        (last.aggregate.tasks_total, last.aggregate.tasks_finished),
        (4, 4)
    );
    let later = store.tree_events(root.id, 2, 100).await.unwrap().unwrap();
    assert_eq!(
        later.first().unwrap().sequence,
        3,
        "resuming after an event starts at the next"
    );
}

async fn callbacks_wait_for_the_parent_and_every_child(store: Arc<dyn Store>) {
    let now = t0();
    let root = task("fan_out", "campaigns", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&root))
        .await
        .unwrap();
    let root_lease = run(&store, "campaigns", 1, now).await[0];
    store.open_tree(root.id, now).await.unwrap();
    let children: Vec<NewTask> = (0..2).map(|_| child_of(&root, "email", now)).collect();
    let mut callback = child_of(&root, "default", now);
    callback.waits_for = Some(root.id);
    store.insert_tasks(&children).await.unwrap();
    store
        .insert_tasks(std::slice::from_ref(&callback))
        .await
        .unwrap();
    assert_eq!(state(&store, callback.id).await, TaskState::Waiting);
    let nothing = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 5, now))
        .await
        .unwrap();
    assert_eq!(nothing.consumed(), 0, "a waiting callback is not claimed");

    let leases = run(&store, "email", 2, now).await;
    store
        .record_parts(&[], &[succeeded(leases[0], now), succeeded(leases[1], now)])
        .await
        .unwrap();
    assert_eq!(
        store
            .update_tree(root.id, now)
            .await
            .unwrap()
            .callbacks_released,
        0,
        "the parent still runs"
    );
    store
        .record_parts(&[], &[succeeded(root_lease, now)])
        .await
        .unwrap();
    assert_eq!(
        store
            .update_tree(root.id, now)
            .await
            .unwrap()
            .callbacks_released,
        1
    );
    assert_eq!(state(&store, callback.id).await, TaskState::Pending);
    assert_eq!(
        store
            .update_tree(root.id, now)
            .await
            .unwrap()
            .callbacks_released,
        0,
        "released once"
    );
    let callback_lease = run(&store, "default", 1, now).await;
    assert_eq!(callback_lease[0].task_id, callback.id);
    store
        .record_parts(&[], &[succeeded(callback_lease[0], now)])
        .await
        .unwrap();
    assert!(store.update_tree(root.id, now).await.unwrap().finished);
}

async fn records_are_fenced_unique_and_paged_in_order(store: Arc<dyn Store>) {
    use celeritas::domain::RecordEntry;
    use celeritas::store::{RecordQuery, RecordWrite};
    let now = t0();
    let root = task("emit_records", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&root))
        .await
        .unwrap();
    let lease = run(&store, "default", 1, now).await[0];
    store.open_tree(root.id, now).await.unwrap();
    let entry =
        |key: &str, status: &str| RecordEntry::parse("r", "delivery", key, status, "").unwrap();
    let write = |token: LeaseToken, records: Vec<RecordEntry>| RecordWrite {
        token,
        worker: worker("w"),
        records,
        at: now,
    };
    let stale = LeaseToken {
        task_id: lease.task_id,
        attempt: lease.attempt + 1,
    };
    store
        .record_attempts(&AttemptBatch {
            records: vec![
                write(
                    lease,
                    vec![
                        entry("c@x", "deferred"),
                        entry("a@x", "delivered"),
                        entry("b@x", "failed"),
                    ],
                ),
                write(stale, vec![entry("z@x", "delivered")]),
                write(lease, vec![entry("c@x", "delivered")]),
            ],
            ..AttemptBatch::default()
        })
        .await
        .unwrap();
    let query = |after: i64, limit: u32, status: Option<&str>| RecordQuery {
        task: root.id,
        whole_tree: true,
        kind: Some("delivery".to_owned()),
        status: status.map(str::to_owned),
        after,
        limit,
    };
    let first = store.records(&query(0, 2, None)).await.unwrap();
    let rest = store
        .records(&query(first.last().unwrap().0, 10, None))
        .await
        .unwrap();
    let keys: Vec<(&str, &str)> = first
        .iter()
        .chain(&rest)
        .map(|(_, record)| (record.entry.key.as_str(), record.entry.status.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("c@x", "delivered"),
            ("a@x", "delivered"),
            ("b@x", "failed")
        ]
    );
    assert_eq!(
        store
            .records(&query(0, 10, Some("failed")))
            .await
            .unwrap()
            .len(),
        1
    );
    let mut delivered = store
        .recorded_keys(root.id, "delivery", Some("delivered"))
        .await
        .unwrap();
    delivered.sort();
    assert_eq!(delivered, vec!["a@x".to_owned(), "c@x".to_owned()]);
    assert!(
        store
            .setting("page_token_secret")
            .await
            .unwrap()
            .is_some_and(|secret| secret.len() >= 32)
    );
}

async fn quiet_tasks_are_listed_and_interrupted_by_attempt(store: Arc<dyn Store>) {
    let now = t0();
    let first = task("batch", "default", 0, now);
    let second = task("batch", "default", 0, now);
    let mut last_chance = task("batch", "default", 0, now);
    last_chance.max_retries = 0;
    let other = task("other", "default", 0, now);
    let all = [
        first.clone(),
        second.clone(),
        last_chance.clone(),
        other.clone(),
    ];
    store.insert_tasks(&all).await.unwrap();
    let session = Uuid::new_v4();
    let leases = store
        .claim(&claim("w", session, &[("default", 0)], 4, now))
        .await
        .unwrap()
        .tasks;
    let token = |id: TaskId| {
        leases
            .iter()
            .find(|lease| lease.token.task_id == id)
            .unwrap()
            .token
    };
    // `second` started later than the others.
    let starts: Vec<Start> = all
        .iter()
        .map(|task| Start {
            token: token(task.id),
            worker: worker("w"),
            at: if task.id == second.id {
                after(now, Duration::from_secs(30))
            } else {
                now
            },
            lease_expires_at: after(now, Duration::from_secs(300)),
        })
        .collect();
    store.record_parts(&starts, &[]).await.unwrap();

    let batch = TaskName::parse("name", "batch").unwrap();
    let list = |quiet_since: Option<DateTime<Utc>>, root: Option<TaskId>| TaskFilter {
        root,
        names: vec![batch.clone()],
        states: vec![TaskState::Running],
        quiet_since,
        limit: 100,
        with_payloads: false,
    };
    let ids = |tasks: Vec<celeritas::domain::TaskRecord>| -> Vec<TaskId> {
        tasks.into_iter().map(|task| task.id).collect()
    };
    // Quiet since 10 s after the start: the two that started then, not `second` nor `other`.
    let quiet = store
        .list_tasks(&list(Some(after(now, Duration::from_secs(10))), None))
        .await
        .unwrap();
    let mut expected = vec![first.id, last_chance.id];
    let mut found = ids(quiet);
    expected.sort_by_key(ToString::to_string);
    found.sort_by_key(ToString::to_string);
    assert_eq!(found, expected);
    assert_eq!(
        store.list_tasks(&list(None, None)).await.unwrap().len(),
        3,
        "every running batch without a quiet filter"
    );
    let in_tree = store
        .list_tasks(&list(None, Some(second.id)))
        .await
        .unwrap();
    assert_eq!(ids(in_tree.clone()), vec![second.id]);
    assert_eq!(
        in_tree[0].args.to_value(),
        serde_json::json!({}),
        "no payloads asked for"
    );
    let with_payloads = TaskFilter {
        with_payloads: true,
        ..list(None, Some(second.id))
    };
    assert_eq!(
        store.list_tasks(&with_payloads).await.unwrap()[0]
            .args
            .to_value(),
        serde_json::json!({"n": 1})
    );

    let requeue = Interruption {
        requeue: true,
        kind: "requeued".to_owned(),
        message: "no progress".to_owned(),
    };
    let at = after(now, Duration::from_secs(60));
    // A stale attempt is refused.
    let stale = LeaseToken {
        task_id: first.id,
        attempt: token(first.id).attempt + 1,
    };
    assert_eq!(store.interrupt(stale, &requeue, at).await.unwrap(), None);
    assert_eq!(
        store
            .interrupt(token(first.id), &requeue, at)
            .await
            .unwrap(),
        Some(TaskState::Pending)
    );
    let requeued = store.task(first.id).await.unwrap().unwrap();
    assert_eq!(requeued.state, TaskState::Pending);
    assert_eq!(requeued.retries, 1);
    assert_eq!(requeued.started_at, None);
    assert_eq!(requeued.failures.len(), 1);
    assert_eq!(requeued.failures[0].kind, "requeued");
    assert_eq!(requeued.failures[0].message, "no progress");
    // Once is enough: the attempt is over.
    assert_eq!(
        store
            .interrupt(token(first.id), &requeue, at)
            .await
            .unwrap(),
        None
    );
    // No retry left: a requeue fails the task.
    assert_eq!(
        store
            .interrupt(token(last_chance.id), &requeue, at)
            .await
            .unwrap(),
        Some(TaskState::Failed)
    );
    let fail = Interruption {
        requeue: false,
        kind: "failed_by_request".to_owned(),
        message: "operator".to_owned(),
    };
    assert_eq!(
        store.interrupt(token(other.id), &fail, at).await.unwrap(),
        Some(TaskState::Failed)
    );
    let failed = store.task(other.id).await.unwrap().unwrap();
    assert_eq!(failed.retries, 0);
    assert_eq!(failed.finished_at, Some(at));
    assert_eq!(
        failed.error,
        Some(("failed_by_request".to_owned(), "operator".to_owned()))
    );
    // A requeued task's result is refused: the worker no longer holds it.
    let refused = store
        .record_parts(
            &[],
            &[completion(
                token(first.id),
                "w",
                Resolution::Succeeded(JsonText::parse("r", "{}", 16).unwrap()),
                at,
            )],
        )
        .await
        .unwrap();
    assert_eq!(refused, vec![false]);
}
