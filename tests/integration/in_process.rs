//! The coordinator built in this process (`Application::with_store`) on the embedded store, with
//! a clock the test moves by hand, and a worker speaking the protocol over real gRPC through
//! `WorkerLink`. Moments the coordinator writes (lease expiries, retry times, failures) are
//! then exact, and a lease expires or a retry falls due only when the test says so.

use std::sync::Arc;
use std::time::Duration;

use celeritas::clock::{Clock, ManualClock};
use celeritas::config::Config;
use celeritas::domain::{
    CoordinatorMessage, Failure, Hello, JsonText, Lease, Outcome, QueueName, TaskId, TaskName,
    TaskRecord, TaskSpec, TaskState, WorkerId, WorkerMessage,
};
use celeritas::grpc::{CoordinatorClient, WorkerLink};
use celeritas::startup::Application;
use celeritas::store::{self, Store};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::support::wait_until;

/// The moment the coordinator's clock shows until a test moves it.
fn start_moment() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

/// A coordinator in this process, on an embedded store in a temporary directory.
struct InProcess {
    url: String,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    _directory: tempfile::TempDir,
}

impl InProcess {
    /// Heartbeats every 100 ms (a silent worker is lost after 300 ms), the dispatcher and the
    /// reaper every 50 ms, a 15 s grace for broken streams, on the coordinator's clock.
    async fn start() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}",
            directory.path().join("celeritas.db").display()
        );
        let store = store::open(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let mut config = Config::default();
        config.schedules.clear();
        let settings = &mut config.coordinator;
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.metrics_listen = None;
        settings.heartbeat_interval = Duration::from_millis(100);
        settings.lease_grace = Duration::from_secs(15);
        settings.poll_interval = Duration::from_millis(50);
        settings.reap_interval = Duration::from_millis(50);
        config.validate().unwrap();
        let clock = Arc::new(ManualClock::new(start_moment()));
        let application = Application::with_store(store.clone(), &config, clock.clone())
            .await
            .unwrap();
        let url = format!("http://{}", application.address());
        let stop = application.stop_token();
        let served = tokio::spawn(application.run_until_stopped());
        Self {
            url,
            clock,
            store,
            stop,
            served,
            _directory: directory,
        }
    }

    async fn client(&self) -> CoordinatorClient {
        CoordinatorClient::connect(&self.url).await.unwrap()
    }

    async fn task(&self, id: TaskId) -> TaskRecord {
        self.store.task(id).await.unwrap().unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.served.await.unwrap().unwrap();
    }
}

/// A worker on `default` running `noop`, driven message by message.
struct Worker {
    link: WorkerLink,
}

impl Worker {
    async fn connect(coordinator: &InProcess, id: &str) -> Self {
        Self::connect_with_names(coordinator, id, &["noop"]).await
    }

    /// A worker on `default` that registered `names`.
    async fn connect_with_names(coordinator: &InProcess, id: &str, names: &[&str]) -> Self {
        let hello = Hello {
            worker_id: WorkerId::parse("worker_id", id).unwrap(),
            hostname: "in-process".to_owned(),
            pid: 1,
            queues: vec![QueueName::parse("queue", "default").unwrap()],
            concurrency: 1,
            prefetch_multiplier: 1,
            task_names: names
                .iter()
                .map(|name| TaskName::parse("name", name).unwrap())
                .collect(),
            version: "test".to_owned(),
            held_leases: vec![],
        };
        let mut link = WorkerLink::open(&coordinator.url, hello).await.unwrap();
        match next(&mut link).await {
            CoordinatorMessage::Welcome { .. } => {}
            other => panic!("expected a welcome, got {other:?}"),
        }
        Self { link }
    }

    /// Heartbeats in the background, as a live worker does, until the stream closes.
    fn keep_alive(&self) {
        let outbound = self.link.outbound.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(50));
            loop {
                beat.tick().await;
                if outbound.send(WorkerMessage::Heartbeat(None)).await.is_err() {
                    return;
                }
            }
        });
    }

    async fn send(&self, message: WorkerMessage) {
        self.link.outbound.send(message).await.unwrap();
    }

    /// Asks for one task and waits for its lease.
    async fn lease(&mut self) -> Lease {
        self.send(WorkerMessage::Credit(1)).await;
        loop {
            if let CoordinatorMessage::Lease(lease) = next(&mut self.link).await {
                return lease;
            }
        }
    }

    /// Reports a result and waits for its acknowledgement.
    async fn finish(&mut self, lease: &Lease, outcome: Outcome) {
        self.send(WorkerMessage::Result {
            token: lease.token,
            outcome,
        })
        .await;
        loop {
            if let CoordinatorMessage::ResultAck {
                token, accepted, ..
            } = next(&mut self.link).await
            {
                assert_eq!(token, lease.token);
                assert!(accepted, "the result of {token} was refused");
                return;
            }
        }
    }
}

async fn next(link: &mut WorkerLink) -> CoordinatorMessage {
    tokio::time::timeout(Duration::from_secs(30), link.inbound.next())
        .await
        .expect("the coordinator said nothing for 30 s")
        .expect("the coordinator ended the stream")
        .expect("the stream failed")
}

async fn submit_noop(client: &mut CoordinatorClient, max_retries: u32) -> TaskId {
    let mut spec = TaskSpec::new(
        TaskName::parse("name", "noop").unwrap(),
        JsonText::empty_object(),
    );
    spec.max_retries = Some(max_retries);
    client.submit(&spec).await.unwrap().id
}

/// A worker that goes silent is lost after three heartbeat intervals; its lease then gets the
/// grace period on the coordinator's clock, and runs again only once that clock passes it: the
/// attempt counts as lost at the moment the clock shows, and the next worker gets attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_workers_lease_runs_again_only_when_the_clock_passes_its_grace() {
    let coordinator = InProcess::start().await;
    let mut client = coordinator.client().await;
    let id = submit_noop(&mut client, 3).await;
    let mut silent = Worker::connect(&coordinator, "silent").await;
    let lease = silent.lease().await;
    assert_eq!((lease.token.task_id, lease.token.attempt), (id, 1));
    silent
        .send(WorkerMessage::Started {
            token: lease.token,
            at: coordinator.clock.now(),
        })
        .await;
    wait_until("the task to run", Duration::from_secs(30), || async {
        coordinator.task(id).await.state == TaskState::Running
    })
    .await;

    // The worker says nothing more. Once the coordinator gives up on it, a second worker waits
    // for work; the lease is still the silent worker's, for as long as the clock stands still.
    let mut second = Worker::connect(&coordinator, "second").await;
    second.keep_alive();
    second.send(WorkerMessage::Credit(1)).await;
    wait_until(
        "the silent worker to be taken for lost",
        Duration::from_secs(30),
        || async {
            coordinator
                .client()
                .await
                .workers()
                .await
                .unwrap()
                .iter()
                .any(|worker| worker.id == "silent" && !worker.connected)
        },
    )
    .await;
    let held = coordinator.task(id).await;
    assert_eq!(held.state, TaskState::Running);
    assert_eq!(held.attempt, 1);
    assert!(held.failures.is_empty());

    // Past the grace period on the coordinator's clock, the reaper counts the attempt lost and
    // the second worker gets the task again.
    coordinator.clock.advance(Duration::from_secs(16));
    let again = loop {
        if let CoordinatorMessage::Lease(lease) = next(&mut second.link).await {
            break lease;
        }
    };
    assert_eq!((again.token.task_id, again.token.attempt), (id, 2));
    let requeued = coordinator.task(id).await;
    assert_eq!(requeued.failures.len(), 1);
    assert_eq!(requeued.failures[0].kind, "worker_lost");
    assert_eq!(requeued.failures[0].attempt, 1);
    assert_eq!(
        requeued.failures[0].at,
        start_moment() + chrono::Duration::seconds(16)
    );
    second
        .finish(
            &again,
            Outcome::Succeeded(JsonText::parse("result", "{\"ok\":true}", 1024).unwrap()),
        )
        .await;
    let done = coordinator.task(id).await;
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(
        done.finished_at,
        Some(start_moment() + chrono::Duration::seconds(16))
    );
    drop(silent);
    coordinator.stop().await;
}

/// A retry asked for in a minute waits a minute of the coordinator's clock, however often the
/// dispatcher looks: its run time is exact, and it is leased again once the clock reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_falls_due_when_the_clock_reaches_its_time() {
    let coordinator = InProcess::start().await;
    let mut client = coordinator.client().await;
    let id = submit_noop(&mut client, 1).await;
    let mut worker = Worker::connect(&coordinator, "retrier").await;
    worker.keep_alive();
    let first = worker.lease().await;
    worker
        .finish(
            &first,
            Outcome::Failed(Failure {
                kind: "relay_busy".to_owned(),
                message: "try again in a minute".to_owned(),
                retryable: true,
                retry_after: Some(Duration::from_secs(60)),
            }),
        )
        .await;
    let waiting = coordinator.task(id).await;
    assert_eq!(waiting.state, TaskState::Scheduled);
    assert_eq!(
        waiting.run_at,
        start_moment() + chrono::Duration::seconds(60)
    );
    assert_eq!(waiting.retries, 1);

    // 59 seconds on: the dispatcher promotes nothing. Its passes are counted by a task submitted
    // behind the retry, which is leased once a pass has run at the new time.
    coordinator.clock.advance(Duration::from_secs(59));
    let marker = submit_noop(&mut client, 0).await;
    let leased = worker.lease().await;
    assert_eq!(leased.token.task_id, marker, "the retry is not due yet");
    worker
        .finish(&leased, Outcome::Succeeded(JsonText::empty_object()))
        .await;
    assert_eq!(coordinator.task(id).await.state, TaskState::Scheduled);

    coordinator.clock.advance(Duration::from_secs(1));
    let second = worker.lease().await;
    assert_eq!((second.token.task_id, second.token.attempt), (id, 2));
    worker
        .finish(&second, Outcome::Succeeded(JsonText::empty_object()))
        .await;
    assert_eq!(coordinator.task(id).await.state, TaskState::Succeeded);
    coordinator.stop().await;
}

/// A task is leased only to a worker that registered its name: one no connected worker has
/// waits, shown as unserved in its queue's depth, while later tasks the worker has run past it;
/// a worker that registers the name gets it at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_for_a_worker_that_registered_its_name() {
    let coordinator = InProcess::start().await;
    let mut client = coordinator.client().await;
    let mut report = TaskSpec::new(
        TaskName::parse("name", "reports.build").unwrap(),
        JsonText::empty_object(),
    );
    report.queue = Some(QueueName::parse("queue", "default").unwrap());
    let report = client.submit(&report).await.unwrap().id;
    let noop = submit_noop(&mut client, 0).await;

    let mut rust = Worker::connect(&coordinator, "rust").await;
    rust.keep_alive();
    let lease = rust.lease().await;
    assert_eq!(
        lease.token.task_id, noop,
        "the noop, though the report came first"
    );
    rust.finish(&lease, Outcome::Succeeded(JsonText::empty_object()))
        .await;
    // More credit changes nothing for the report: no worker has it.
    rust.send(WorkerMessage::Credit(1)).await;
    let unserved = |depths: Vec<celeritas::domain::QueueDepth>| {
        depths
            .into_iter()
            .find(|depth| depth.queue.as_str() == "default")
            .unwrap()
            .unserved
    };
    let waiting = unserved(client.queues().await.unwrap());
    assert_eq!(
        waiting.into_iter().collect::<Vec<_>>(),
        vec![("reports.build".to_owned(), 1)]
    );
    assert_eq!(coordinator.task(report).await.state, TaskState::Pending);

    let mut python = Worker::connect_with_names(&coordinator, "python", &["reports.build"]).await;
    python.keep_alive();
    let lease = python.lease().await;
    assert_eq!((lease.token.task_id, lease.token.attempt), (report, 1));
    assert!(unserved(client.queues().await.unwrap()).is_empty());
    python
        .finish(&lease, Outcome::Succeeded(JsonText::empty_object()))
        .await;
    let done = coordinator.task(report).await;
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.worker_id.unwrap().as_str(), "python");
    drop((rust, python));
    coordinator.stop().await;
}

/// Transactional mail keeps ahead of campaign batches on their shared queue: the seed's
/// `[tasks.send_single_email] priority` is what a submit without a priority gets, and a
/// priority the submit gives wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_names_priority_is_what_a_submit_without_one_gets() {
    let coordinator = InProcess::start().await;
    let mut client = coordinator.client().await;
    let single = |priority: u32| {
        let mut spec = TaskSpec::new(
            TaskName::parse("name", "send_single_email").unwrap(),
            JsonText::empty_object(),
        );
        spec.priority = celeritas::domain::Priority::parse("priority", priority).unwrap();
        spec
    };
    let unset = client.submit(&single(0)).await.unwrap().id;
    let given = client.submit(&single(3)).await.unwrap().id;
    let batch = TaskSpec::new(
        TaskName::parse("name", "send_email_batch").unwrap(),
        JsonText::empty_object(),
    );
    let batch = client.submit(&batch).await.unwrap().id;
    let priority = |record: TaskRecord| record.priority.value();
    assert_eq!(priority(coordinator.task(unset).await), 9);
    assert_eq!(priority(coordinator.task(given).await), 3);
    assert_eq!(priority(coordinator.task(batch).await), 0);
    coordinator.stop().await;
}
