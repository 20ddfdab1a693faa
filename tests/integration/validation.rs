//! Bad input over raw gRPC: every refusal names the field, nothing is written, and the
//! coordinator keeps serving.

use std::time::Duration;

use celeritas::grpc::pb;
use celeritas::grpc::pb::task_service_client::TaskServiceClient;
use celeritas::grpc::pb::worker_service_client::WorkerServiceClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::support::{CoordinatorProcess, TestDatabase, log_dir};

/// A gRPC channel to `coordinator`.
pub async fn channel(coordinator: &CoordinatorProcess) -> Channel {
    Endpoint::from_shared(coordinator.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect to the coordinator")
}

fn task(name: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        name: name.to_owned(),
        ..Default::default()
    }
}

async fn submit(
    client: &mut TaskServiceClient<Channel>,
    spec: pb::TaskSpec,
) -> Result<pb::SubmitTaskResponse, Status> {
    client
        .submit_task(pb::SubmitTaskRequest { task: Some(spec) })
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused(result: Result<impl std::fmt::Debug, Status>, code: Code, field: &str) {
    let status = result.expect_err("the request is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "the message names {field}: {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_by_field_and_write_nothing() {
    let database = TestDatabase::create().await;
    let logs = log_dir("bad_submissions");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut client = TaskServiceClient::new(channel(&coordinator).await);

    let mut spec = task("noop");
    spec.args_json = "{not json".to_owned();
    assert_refused(
        submit(&mut client, spec).await,
        Code::InvalidArgument,
        "task.args_json",
    );

    let mut spec = task("noop");
    spec.args_json = format!("\"{}\"", "x".repeat(1024 * 1024));
    let status = submit(&mut client, spec).await.unwrap_err();
    assert!(
        status.message().contains("limit of 1048576 bytes"),
        "{status:?}"
    );

    let mut spec = task("noop");
    spec.queue = Some("mail".to_owned());
    assert_refused(
        submit(&mut client, spec).await,
        Code::InvalidArgument,
        "task.queue",
    );

    let mut spec = task("noop");
    spec.countdown = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    assert_refused(
        submit(&mut client, spec).await,
        Code::InvalidArgument,
        "task.countdown",
    );

    assert_refused(
        submit(&mut client, task("import_everything")).await,
        Code::InvalidArgument,
        "task.name",
    );
    assert_refused(
        submit(&mut client, task("")).await,
        Code::InvalidArgument,
        "task.name",
    );

    let mut spec = task("noop");
    spec.priority = 300;
    assert_refused(
        submit(&mut client, spec).await,
        Code::InvalidArgument,
        "task.priority",
    );

    let mut spec = task("noop");
    spec.parent_id = uuid::Uuid::new_v4().to_string();
    assert_refused(
        submit(&mut client, spec).await,
        Code::NotFound,
        "task.parent_id",
    );

    let mut spec = task("noop");
    spec.countdown = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    spec.expires_in = Some(prost_types::Duration {
        seconds: 30,
        nanos: 0,
    });
    assert_refused(
        submit(&mut client, spec).await,
        Code::InvalidArgument,
        "task.expires_in",
    );

    let missing = client
        .submit_task(pb::SubmitTaskRequest { task: None })
        .await;
    assert_refused(missing, Code::InvalidArgument, "task");

    // One bad spec refuses the whole batch.
    let mut third = task("noop");
    third.queue = Some("nowhere".to_owned());
    let batch = client
        .submit_tasks(pb::SubmitTasksRequest {
            tasks: vec![task("noop"), task("noop"), third],
        })
        .await;
    assert_refused(batch, Code::InvalidArgument, "tasks[2].queue");
    let empty = client
        .submit_tasks(pb::SubmitTasksRequest { tasks: vec![] })
        .await;
    assert_refused(empty, Code::InvalidArgument, "tasks");

    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "no refused submission wrote anything");

    let unknown = client
        .get_task(pb::GetTaskRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            wait: None,
        })
        .await;
    assert_refused(unknown, Code::NotFound, "task_id");
    let malformed = client
        .get_task(pb::GetTaskRequest {
            task_id: "42".to_owned(),
            wait: None,
        })
        .await;
    assert_refused(malformed, Code::InvalidArgument, "task_id");

    // Still serving, and an idempotency key returns the first task.
    let mut keyed = task("noop");
    keyed.idempotency_key = "order-17".to_owned();
    let first = submit(&mut client, keyed.clone()).await.unwrap();
    let second = submit(&mut client, keyed).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.task_id, second.task_id);
}

/// Opens a raw worker stream and sends `messages`; returns the coordinator's replies until the
/// stream ends or goes quiet.
async fn worker_conversation(
    coordinator: &CoordinatorProcess,
    messages: Vec<pb::connect_request::Message>,
) -> (Vec<pb::ConnectResponse>, Option<Status>) {
    let mut client = WorkerServiceClient::new(channel(coordinator).await);
    let (sender, receiver) = mpsc::channel(16);
    for message in messages {
        sender
            .send(pb::ConnectRequest {
                message: Some(message),
            })
            .await
            .unwrap();
    }
    let mut replies = Vec::new();
    let mut inbound = match client.connect(ReceiverStream::new(receiver)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (replies, Some(status)),
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(3), inbound.next()).await {
            Ok(Some(Ok(reply))) => replies.push(reply),
            Ok(Some(Err(status))) => return (replies, Some(status)),
            Ok(None) | Err(_) => return (replies, None),
        }
    }
}

fn hello(queues: &[&str]) -> pb::connect_request::Message {
    pb::connect_request::Message::Hello(pb::Hello {
        worker_id: format!("raw-{}", uuid::Uuid::new_v4().simple()),
        hostname: "test".to_owned(),
        pid: 1,
        queues: queues.iter().map(|queue| (*queue).to_owned()).collect(),
        concurrency: 1,
        prefetch_multiplier: 1,
        task_names: vec!["noop".to_owned()],
        version: "test".to_owned(),
        held_leases: vec![],
        accepts_batches: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_break_the_protocol_are_refused_and_change_nothing() {
    let database = TestDatabase::create().await;
    let logs = log_dir("bad_workers");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut tasks = TaskServiceClient::new(channel(&coordinator).await);
    let pending = submit(&mut tasks, task("noop")).await.unwrap();

    let (_, error) = worker_conversation(&coordinator, vec![hello(&[])]).await;
    assert_refused(
        Err::<(), _>(error.expect("an error")),
        Code::InvalidArgument,
        "hello.queues",
    );

    // A worker is leased only the tasks it registered: one that registers none is refused.
    let mut nameless = hello(&["default"]);
    if let pb::connect_request::Message::Hello(hello) = &mut nameless {
        hello.task_names.clear();
    }
    let (_, error) = worker_conversation(&coordinator, vec![nameless]).await;
    assert_refused(
        Err::<(), _>(error.expect("an error")),
        Code::InvalidArgument,
        "hello.task_names",
    );

    // A batch is opened at the edge; one inside another is refused by its place.
    let nested = pb::connect_request::Message::Batch(pb::WorkerBatch {
        messages: vec![pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Batch(
                pb::WorkerBatch::default(),
            )),
        }],
    });
    let (_, error) = worker_conversation(&coordinator, vec![nested]).await;
    assert_refused(
        Err::<(), _>(error.expect("an error")),
        Code::InvalidArgument,
        "batch.messages[0]",
    );

    let (_, error) = worker_conversation(&coordinator, vec![hello(&["default", "mail"])]).await;
    assert_refused(
        Err::<(), _>(error.expect("an error")),
        Code::InvalidArgument,
        "hello.queues[1]",
    );

    let result = pb::connect_request::Message::Result(pb::TaskResult {
        lease: Some(pb::LeaseToken {
            task_id: pending.task_id.clone(),
            attempt: 1,
        }),
        outcome: Some(pb::task_result::Outcome::Success(pb::TaskSuccess {
            result_json: "{}".to_owned(),
        })),
    });
    let (_, error) = worker_conversation(&coordinator, vec![result.clone()]).await;
    let error = error.expect("a result before hello ends the stream");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");

    // A worker that never received a lease reports a result for the task: refused, no change.
    let (replies, error) =
        worker_conversation(&coordinator, vec![hello(&["campaigns"]), result]).await;
    assert!(error.is_none(), "{error:?}");
    let acknowledgement = replies
        .iter()
        .find_map(|reply| match &reply.message {
            Some(pb::connect_response::Message::ResultAck(ack)) => Some(ack.clone()),
            _ => None,
        })
        .expect("the result is answered");
    assert!(!acknowledgement.accepted);
    assert!(
        acknowledgement.reason.contains("not held"),
        "{acknowledgement:?}"
    );

    let state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1::uuid")
        .bind(&pending.task_id)
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(state, "pending", "the refused result changed nothing");
    assert!(
        submit(&mut tasks, task("noop")).await.is_ok(),
        "the coordinator still serves"
    );
}
