//! What an adversarial run threw at celeritas: text a store cannot hold, undecodable messages,
//! oversized values. Over raw gRPC against a real coordinator and Postgres: one bad item fails
//! alone, with its field named, and the stream and every good item go on.

use std::collections::HashMap;
use std::time::Duration;

use celeritas::grpc::pb;
use celeritas::grpc::pb::task_service_client::TaskServiceClient;
use celeritas::grpc::pb::worker_service_client::WorkerServiceClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::support::{CoordinatorProcess, TestDatabase, log_dir};
use crate::validation::channel;

fn request(message: pb::connect_request::Message) -> pb::ConnectRequest {
    pb::ConnectRequest {
        message: Some(message),
    }
}

/// A raw worker's hello on `default`, running `noop`, with `concurrency` × 1 leases.
fn raw_hello(worker_id: &str, concurrency: u32) -> pb::Hello {
    pb::Hello {
        worker_id: worker_id.to_owned(),
        hostname: "test".to_owned(),
        pid: 1,
        queues: vec!["default".to_owned()],
        concurrency,
        prefetch_multiplier: 1,
        task_names: vec!["noop".to_owned()],
        version: "test".to_owned(),
        held_leases: vec![],
        accepts_batches: false,
    }
}

fn hello_message(hello: pb::Hello) -> pb::ConnectRequest {
    request(pb::connect_request::Message::Hello(hello))
}

fn success(token: pb::LeaseToken, result_json: &str) -> pb::ConnectRequest {
    request(pb::connect_request::Message::Result(pb::TaskResult {
        lease: Some(token),
        outcome: Some(pb::task_result::Outcome::Success(pb::TaskSuccess {
            result_json: result_json.to_owned(),
        })),
    }))
}

/// A batch of 100 results written in group commits, one of them with a `\u0000` the store
/// cannot hold, one after records that cannot be stored, one after a refused child: those three
/// fail alone, named, and the other 97 succeed on the same, still open, stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unstorable_item_fails_alone_and_the_stream_goes_on() {
    let database = TestDatabase::create().await;
    let logs = log_dir("one_unstorable_item");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut tasks = TaskServiceClient::new(channel(&coordinator).await);
    let submitted = tasks
        .submit_tasks(pb::SubmitTasksRequest {
            tasks: (0..100)
                .map(|_| pb::TaskSpec {
                    name: "noop".to_owned(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.tasks.len(), 100);

    let mut workers = WorkerServiceClient::new(channel(&coordinator).await);
    let (sender, receiver) = mpsc::channel(1024);
    sender
        .send(hello_message(raw_hello("raw-hardening", 100)))
        .await
        .unwrap();
    sender
        .send(request(pb::connect_request::Message::Credit(pb::Credit {
            grant: 100,
        })))
        .await
        .unwrap();
    let mut inbound = workers
        .connect(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut leases = Vec::new();
    while leases.len() < 100 {
        if let pb::connect_response::Message::Lease(lease) = next(&mut inbound).await {
            leases.push(lease.token.unwrap());
        }
    }

    let unstorable_result = leases[37].clone();
    let unstorable_records = leases[38].clone();
    let refused_child = leases[39].clone();
    sender
        .send(request(pb::connect_request::Message::EmitRecords(
            pb::EmitRecords {
                lease: Some(unstorable_records.clone()),
                records: vec![pb::RecordEntry {
                    kind: "delivery".to_owned(),
                    key: "good@example.com".to_owned(),
                    status: "delivered".to_owned(),
                    data_json: r#"{"reply": "250 ok\u0000"}"#.to_owned(),
                }],
            },
        )))
        .await
        .unwrap();
    sender
        .send(request(pb::connect_request::Message::SubmitChildren(
            pb::SubmitChildren {
                request_id: 7,
                lease: Some(refused_child.clone()),
                children: vec![pb::TaskSpec {
                    name: "noop".to_owned(),
                    args_json: r#"{"to": "\u0000"}"#.to_owned(),
                    ..Default::default()
                }],
                callback: None,
            },
        )))
        .await
        .unwrap();
    for (index, token) in leases.iter().enumerate() {
        let result = if index == 37 {
            r#"{"reply": "250\u0000"}"#.to_owned()
        } else {
            format!(r#"{{"index": {index}}}"#)
        };
        sender.send(success(token.clone(), &result)).await.unwrap();
    }

    let mut acks = HashMap::new();
    let mut child_answer = None;
    while acks.len() < 100 {
        match next(&mut inbound).await {
            pb::connect_response::Message::ResultAck(ack) => {
                acks.insert(ack.lease.clone().unwrap().task_id, ack);
            }
            pb::connect_response::Message::ChildrenSubmitted(answer) => {
                child_answer = Some(answer);
            }
            _ => {}
        }
    }
    let child_answer = child_answer.expect("the children request is answered");
    assert_eq!(child_answer.request_id, 7);
    assert!(
        child_answer
            .error
            .starts_with("submit_children.children[0].args_json: "),
        "{child_answer:?}"
    );
    assert!(!child_answer.retryable);
    assert!(acks.values().all(|ack| ack.accepted), "{acks:?}");

    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id::text, state, error_kind, error_message FROM tasks ORDER BY id")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 100, "the refused child was not written");
    let by_id: HashMap<_, _> = rows
        .into_iter()
        .map(|(id, state, kind, message)| (id, (state, kind, message)))
        .collect();
    let (state, kind, message) = &by_id[&unstorable_result.task_id];
    assert_eq!(
        (state.as_str(), kind.as_deref()),
        ("failed", Some("invalid_result"))
    );
    assert!(
        message
            .as_deref()
            .unwrap()
            .contains("result.success.result_json"),
        "{message:?}"
    );
    let (state, kind, _) = &by_id[&unstorable_records.task_id];
    assert_eq!(
        (state.as_str(), kind.as_deref()),
        ("failed", Some("invalid_record"))
    );
    let succeeded = by_id
        .values()
        .filter(|(state, _, _)| state == "succeeded")
        .count();
    // The refused child's parent succeeds: the task was told, and went on.
    assert_eq!(succeeded, 98);
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM task_records")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(records, 0, "no record of the refused message was written");
}

/// Text nobody should be able to store is refused at submit, named, and short however long
/// the input; a cron that never fires is refused; a huge hostname is refused at hello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_or_oversized_input_is_refused_by_field() {
    let database = TestDatabase::create().await;
    let logs = log_dir("unstorable_input");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut tasks = TaskServiceClient::new(channel(&coordinator).await);
    let submit = |args_json: String| pb::SubmitTaskRequest {
        task: Some(pb::TaskSpec {
            name: "noop".to_owned(),
            args_json,
            ..Default::default()
        }),
    };
    for (args, why) in [
        (r#"{"to": "a\u0000b"}"#.to_owned(), "NUL"),
        (r#"["\ud800"]"#.to_owned(), "escape"),
        (
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            "nested deeper",
        ),
    ] {
        let status = tasks.submit_task(submit(args)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("task.args_json: ") && status.message().contains(why),
            "{status:?}"
        );
    }
    let mut keyed = submit(String::new());
    keyed.task.as_mut().unwrap().idempotency_key = "order\u{0}17".to_owned();
    let status = tasks.submit_task(keyed).await.unwrap_err();
    assert!(
        status.message().starts_with("task.idempotency_key: "),
        "{status:?}"
    );

    // A 100 KB id is not echoed back whole.
    let status = tasks
        .get_task(pb::GetTaskRequest {
            task_id: "x".repeat(100_000),
            wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 300, "{}", status.message().len());

    let mut schedules =
        pb::schedule_service_client::ScheduleServiceClient::new(channel(&coordinator).await);
    let status = schedules
        .put_schedule(pb::PutScheduleRequest {
            schedule: Some(pb::Schedule {
                name: "never".to_owned(),
                task: Some(pb::TaskSpec {
                    name: "noop".to_owned(),
                    ..Default::default()
                }),
                timing: Some(pb::schedule::Timing::Cron("0 0 30 2 *".to_owned())),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("never fires"), "{status:?}");

    let mut workers = WorkerServiceClient::new(channel(&coordinator).await);
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(hello_message(pb::Hello {
            hostname: "h".repeat(70_000),
            ..raw_hello("raw-hostname", 1)
        }))
        .await
        .unwrap();
    let status = match workers.connect(ReceiverStream::new(receiver)).await {
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            tokio::time::timeout(Duration::from_secs(10), inbound.next())
                .await
                .expect("the hello is answered")
                .expect("an answer")
                .expect_err("the hello is refused")
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("hello.hostname: "),
        "{status:?}"
    );
}

/// Bytes that are not protobuf are the sender's mistake: INVALID_ARGUMENT, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_invalid_arguments() {
    let database = TestDatabase::create().await;
    let logs = log_dir("undecodable_messages");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut grpc = tonic::client::Grpc::new(channel(&coordinator).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/celeritas.v1.TaskService/SubmitTask",
    );
    // Field 1 (task), length-delimited, claiming 100 bytes that never come.
    let garbage = vec![0x0a, 100, 1, 2, 3];
    let status = grpc
        .unary::<_, pb::SubmitTaskResponse, _>(
            tonic::Request::new(garbage),
            path,
            raw::RawCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not valid protobuf"),
        "{status:?}"
    );

    // On a worker stream, after a good hello: the stream ends saying why.
    use prost::Message as _;
    let hello = hello_message(raw_hello("raw-garbage", 1)).encode_to_vec();
    let (sender, receiver) = mpsc::channel::<Vec<u8>>(4);
    sender.send(hello).await.unwrap();
    grpc.ready().await.unwrap();
    let mut replies = grpc
        .streaming::<_, Vec<u8>, pb::ConnectResponse, _>(
            tonic::Request::new(ReceiverStream::new(receiver)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/celeritas.v1.WorkerService/Connect",
            ),
            raw::RawCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let welcome = next(&mut replies).await;
    assert!(matches!(welcome, pb::connect_response::Message::Welcome(_)));
    sender.send(vec![0x0a, 100, 1, 2, 3]).await.unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .expect("the stream ends")
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without saying why"),
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not valid protobuf"),
        "{status:?}"
    );
}

/// The coordinator's next message on a worker stream that must stay open.
async fn next(
    inbound: &mut tonic::Streaming<pb::ConnectResponse>,
) -> pb::connect_response::Message {
    tokio::time::timeout(Duration::from_secs(30), inbound.next())
        .await
        .expect("the coordinator answers within 30 s")
        .expect("the stream stays open")
        .expect("the stream ends with no error")
        .message
        .expect("a message")
}

mod raw {
    //! A codec that sends bytes as they are and decodes answers as protobuf.

    use std::marker::PhantomData;

    use prost::bytes::BufMut;
    use tonic::Status;
    use tonic::codec::{Codec, EncodeBuf, Encoder};

    pub struct RawCodec<U>(PhantomData<U>);

    impl<U> Default for RawCodec<U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<U: prost::Message + Default + Send + 'static> Codec for RawCodec<U> {
        type Encode = Vec<u8>;
        type Decode = U;
        type Encoder = Bytes;
        type Decoder = tonic_prost::ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            Bytes
        }

        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::default()
        }
    }

    pub struct Bytes;

    impl Encoder for Bytes {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }
}

/// A worker may not declare more capacity than the coordinator allows, and one that never
/// reads is not sent more than the stream's byte budget of leases, however much it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_no_more_than_the_coordinator_allows() {
    let database = TestDatabase::create().await;
    let logs = log_dir("worker_bounds");
    let coordinator = crate::support::CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_COORDINATOR__MAX_STREAM_BUFFER_BYTES", "1048576")
        .start()
        .await;
    let mut workers = WorkerServiceClient::new(channel(&coordinator).await);
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(hello_message(raw_hello("greedy", u32::MAX)))
        .await
        .unwrap();
    let mut inbound = workers
        .connect(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let status = tokio::time::timeout(Duration::from_secs(10), inbound.next())
        .await
        .expect("the hello is answered")
        .expect("an answer")
        .expect_err("the hello is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("hello.concurrency: ")
            && status.message().contains("max_worker_capacity"),
        "{status:?}"
    );

    // 400 tasks of 50 KB: 20 MB of leases for a worker that asks for 1,000 and reads nothing.
    let mut tasks = TaskServiceClient::new(channel(&coordinator).await);
    let args = format!(r#"{{"padding": "{}"}}"#, "x".repeat(50 * 1024));
    tasks
        .submit_tasks(pb::SubmitTasksRequest {
            tasks: (0..400)
                .map(|_| pb::TaskSpec {
                    name: "noop".to_owned(),
                    args_json: args.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap();
    let mut workers = WorkerServiceClient::new(channel(&coordinator).await);
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(hello_message(raw_hello("sleepy", 1000)))
        .await
        .unwrap();
    sender
        .send(request(pb::connect_request::Message::Credit(pb::Credit {
            grant: 1000,
        })))
        .await
        .unwrap();
    let _never_read = workers
        .connect(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let leased = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE state = 'leased'")
            .fetch_one(&database.pool)
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leased().await < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker is sent leases"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Watched for two seconds: what went down the stream stays near the 1 MiB budget (plus what
    // HTTP/2's windows hold), far from the 400 the worker asked for.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < watch_until {
        let count = leased().await;
        assert!(
            count <= 100,
            "{count} leases of 50 KB went to a worker that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TLS settings with an http:// coordinator URL are a clear refusal, never a silent plaintext
/// connection: the worker stops at once, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_with_a_plaintext_url_are_refused_not_downgraded() {
    for arguments in [
        vec![
            "worker",
            "--coordinator",
            "http://127.0.0.1:1",
            "--tls-ca",
            "/dev/null",
            "-Q",
            "default",
        ],
        vec![
            "inspect",
            "stats",
            "--coordinator",
            "http://127.0.0.1:1",
            "--tls-ca",
            "/dev/null",
        ],
    ] {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
            .args(&arguments)
            .env_remove("CELERITAS_CONFIG")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("{arguments:?} does not give up on TLS over http"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{arguments:?}: {stderr}");
        assert!(
            stderr.contains("https://") && stderr.contains("TLS"),
            "{arguments:?}: {stderr}"
        );
        assert!(!stderr.contains("connected"), "{arguments:?}: {stderr}");
    }
}

fn inspect_stats(url: &str) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(["inspect", "stats", "--json", "--coordinator", url])
        .output()
        .expect("run celeritas inspect stats");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

/// A stopped worker is shown as disconnected with no uptime, instead of its uptime counting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_has_no_uptime() {
    let database = TestDatabase::create().await;
    let logs = log_dir("stopped_worker_stats");
    let coordinator = crate::support::CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "300ms")
        .start()
        .await;
    let worker = crate::support::WorkerProcess::start(
        &coordinator,
        &logs,
        "short-lived",
        &["-Q", "default"],
    );
    let url = coordinator.url.clone();
    crate::support::wait_until(
        "the worker reports its uptime",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                tokio::task::spawn_blocking(move || inspect_stats(&url))
                    .await
                    .unwrap()
                    .as_array()
                    .and_then(|workers| workers.first().cloned())
                    .is_some_and(|worker| {
                        worker["connected"] == true && worker["uptime_seconds"].is_i64()
                    })
            }
        },
    )
    .await;
    assert!(worker.terminate().await.success());
    // The coordinator sees the stream end a moment after the process exits.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    crate::support::wait_until(
        "the worker shows as stopped",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let seen = seen.clone();
            async move {
                let stats = tokio::task::spawn_blocking(move || inspect_stats(&url))
                    .await
                    .unwrap();
                let worker = stats[0].clone();
                let stopped = worker["connected"] == false;
                *seen.lock().unwrap() = worker;
                stopped
            }
        },
    )
    .await;
    let worker = seen.lock().unwrap().clone();
    assert_eq!(worker["worker_id"], "short-lived");
    assert!(worker["uptime_seconds"].is_null(), "{worker}");
}
