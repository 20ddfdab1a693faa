//! Progress streaming, child tasks, callbacks and records, with real processes.

use std::collections::HashMap;
use std::time::Duration;

use celeritas::grpc::pb;
use celeritas::grpc::pb::task_service_client::TaskServiceClient;
use futures::StreamExt;
use serde_json::json;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::support::{
    CoordinatorProcess, TestDatabase, WorkerProcess, count_in_state, executions, log_dir, spec,
    wait_until,
};

pub async fn tasks_client(coordinator: &CoordinatorProcess) -> TaskServiceClient<Channel> {
    let channel = Endpoint::from_shared(coordinator.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    TaskServiceClient::new(channel)
}

pub async fn submit(
    client: &mut TaskServiceClient<Channel>,
    name: &str,
    args: serde_json::Value,
) -> String {
    client
        .submit_task(pb::SubmitTaskRequest {
            task: Some(pb::TaskSpec {
                name: name.to_owned(),
                args_json: args.to_string(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task_id
}

/// Reads up to `limit` events of a stream (all of them with `None`), then drops it.
pub async fn read_events(
    client: &mut TaskServiceClient<Channel>,
    task_id: &str,
    from: Option<u64>,
    limit: Option<usize>,
) -> Vec<pb::StreamProgressResponse> {
    let mut stream = client
        .stream_progress(pb::StreamProgressRequest {
            task_id: task_id.to_owned(),
            from_sequence: from,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within a minute")
    {
        events.push(event.unwrap());
        if limit.is_some_and(|limit| events.len() >= limit) {
            break;
        }
    }
    events
}

fn is_finished(event: &pb::StreamProgressResponse) -> bool {
    matches!(
        event.event,
        Some(pb::stream_progress_response::Event::TreeFinished(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_of_a_thousand_children_holds_every_event_exactly_once() {
    let database = TestDatabase::create().await;
    let logs = log_dir("fan_out_stream");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "fanner", &["-c", "4"]);
    let mut client = tasks_client(&coordinator).await;
    let root = submit(
        &mut client,
        "fan_out",
        json!({"task": "sleep", "args": (0..1_000).map(|_| json!({"ms": 2})).collect::<Vec<_>>()}),
    )
    .await;

    // The first stream is cut off after two events; the second resumes after the last seen.
    let first = read_events(&mut client, &root, None, Some(2)).await;
    assert_eq!(first.len(), 2);
    let last_seen = first.last().unwrap().sequence;
    let second = read_events(&mut client, &root, Some(last_seen), None).await;
    let sequences: Vec<u64> = first
        .iter()
        .chain(&second)
        .map(|event| event.sequence)
        .collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order, no gap");
    assert!(
        second.len() >= 2,
        "the tree was followed to its end: {second:?}"
    );
    let last = second.last().unwrap();
    assert!(is_finished(last), "the stream ends with the tree: {last:?}");
    let aggregate = last.aggregate.as_ref().unwrap();
    assert_eq!(aggregate.tasks_total, 1_001);
    assert_eq!(aggregate.tasks_finished, 1_001);
    assert_eq!(aggregate.tasks_by_state.get("succeeded"), Some(&1_001));
    // Throttled: far fewer events than tasks, and every one carries the aggregate.
    assert!(
        sequences.len() < 200,
        "{} events for 1,000 children",
        sequences.len()
    );
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|event| event.aggregate.is_some())
    );

    // Following a finished tree again replays it; a sequence past its end is refused.
    let replay = read_events(&mut client, &root, None, None).await;
    assert_eq!(replay.len(), sequences.len());
    let after_end = read_events(&mut client, &root, Some(sequences.len() as u64), None).await;
    assert!(after_end.is_empty(), "resuming after the end ends at once");
    let beyond = client
        .stream_progress(pb::StreamProgressRequest {
            task_id: root.clone(),
            from_sequence: Some(sequences.len() as u64 + 5),
        })
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::InvalidArgument);
    assert!(beyond.message().starts_with("from_sequence:"), "{beyond:?}");

    // A child is not a root: its tree is followed through the root.
    let child: String =
        sqlx::query_scalar("SELECT id::text FROM tasks WHERE parent_id IS NOT NULL LIMIT 1")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    let refused = client
        .stream_progress(pb::StreamProgressRequest {
            task_id: child,
            from_sequence: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains(&root), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_runs_once_after_the_last_child_even_when_children_retry() {
    let database = TestDatabase::create().await;
    let logs = log_dir("callback");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let journal = logs.join("executions.jsonl");
    let _worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "chord",
        &["-c", "4", "--execution-log", &journal.display().to_string()],
    );
    let mut client = tasks_client(&coordinator).await;
    // Every child fails once and succeeds on its retry.
    let root = submit(
        &mut client,
        "fan_out",
        json!({
            "task": "fail",
            "args": (0..20).map(|_| json!({"times": 1, "retry_after_ms": 50})).collect::<Vec<_>>(),
            "callback": {"task": "noop", "args": {"chord": "done"}},
        }),
    )
    .await;
    let events = read_events(&mut client, &root, None, None).await;
    assert!(is_finished(events.last().unwrap()));

    let callbacks: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT id::text, state, attempt FROM tasks WHERE name = 'noop' AND waits_for IS NOT NULL",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(callbacks.len(), 1, "one callback");
    let (callback_id, state, attempt) = &callbacks[0];
    assert_eq!(state, "succeeded");
    assert_eq!(*attempt, 1);
    let ran = executions(&journal)
        .into_iter()
        .filter(|run| &run.task_id == callback_id)
        .count();
    assert_eq!(ran, 1, "the callback ran exactly once");
    let (children_retried, last_child_finished, callback_started): (i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE name = 'fail' AND retries = 1 AND state = 'succeeded'), \
                (SELECT max(finished_at) FROM tasks WHERE name = 'fail'), \
                (SELECT started_at FROM tasks WHERE id = $1::uuid)",
    )
    .bind(callback_id)
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(children_retried, 20, "every child was retried once");
    assert!(
        callback_started >= last_child_finished,
        "the callback ran after the last child"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_page_back_completely_and_in_order() {
    let database = TestDatabase::create().await;
    let logs = log_dir("records");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "recorder", &["-c", "2"]);
    let mut client = tasks_client(&coordinator).await;
    let task = submit(&mut client, "emit_records", json!({"count": 10_000})).await;
    let events = read_events(&mut client, &task, None, None).await;
    let last = events.last().unwrap();
    assert!(is_finished(last));
    assert_eq!(
        last.aggregate.as_ref().unwrap().records_by_status.get("ok"),
        Some(&10_000)
    );

    let mut keys = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_records(pb::ListRecordsRequest {
                task_id: task.clone(),
                page_size: 1_000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        keys.extend(page.records.iter().map(|record| record.key.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..10_000).map(|index| format!("item-{index}")).collect();
    assert_eq!(keys.len(), expected.len(), "every record once");
    if let Some(index) = keys
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want)
    {
        panic!(
            "records out of emission order at {index}: {:?}",
            &keys[index..(index + 3).min(keys.len())]
        );
    }
    assert_eq!(pages, 10);

    let forged = client
        .list_records(pb::ListRecordsRequest {
            task_id: task.clone(),
            page_token: "AAAAAAAAAAE".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert!(forged.message().starts_with("page_token:"), "{forged:?}");
    let unknown = client
        .list_records(pb::ListRecordsRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A task without children keeps every record it emitted just before returning.
    for round in 0..8 {
        let small = submit(
            &mut client,
            "emit_records",
            json!({"count": 3, "kind": format!("round{round}")}),
        )
        .await;
        let done = client
            .get_task(pb::GetTaskRequest {
                task_id: small.clone(),
                wait: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(done.state, pb::TaskState::Succeeded as i32);
        let page = client
            .list_records(pb::ListRecordsRequest {
                task_id: small,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            page.records.len(),
            3,
            "round {round}: the last records arrived before the result"
        );
    }

    // A retried attempt asks which keys exist and skips them.
    let again = submit(
        &mut client,
        "emit_records",
        json!({"count": 10, "skip_recorded": true}),
    )
    .await;
    let done = client
        .get_task(pb::GetTaskRequest {
            task_id: again.clone(),
            wait: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(done.state, pb::TaskState::Succeeded as i32);
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(
        result["emitted"], 10,
        "a new tree has no records yet: {result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_cancels_its_descendants_and_waiting_get_task_returns_at_the_end() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cancel_tree");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "tree", &["-c", "2"]);
    let mut client = tasks_client(&coordinator).await;

    // GetTask with a wait answers when the task ends, not before.
    let quick = submit(&mut client, "sleep", json!({"ms": 300})).await;
    let started = tokio::time::Instant::now();
    let done = client
        .get_task(pb::GetTaskRequest {
            task_id: quick,
            wait: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(done.state, pb::TaskState::Succeeded as i32);
    assert!(started.elapsed() < Duration::from_secs(10));

    let root = submit(
        &mut client,
        "fan_out",
        json!({"task": "sleep", "args": (0..30).map(|_| json!({"ms": 60_000})).collect::<Vec<_>>()}),
    )
    .await;
    wait_until("children to run", Duration::from_secs(30), || async {
        count_in_state(&database.pool, "running").await >= 2
    })
    .await;
    let cancelled = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: root.clone(),
            terminate: false,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        cancelled.state,
        pb::TaskState::Succeeded as i32,
        "the fan-out itself had finished"
    );
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM tasks WHERE parent_id = $1::uuid GROUP BY state",
    )
    .bind(&root)
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let states: HashMap<String, i64> = states.into_iter().collect();
    assert_eq!(states.get("cancelled"), Some(&30), "{states:?}");
    // The worker's places come back: new work runs at once.
    let after = submit(&mut client, "noop", json!({})).await;
    let after = client
        .get_task(pb::GetTaskRequest {
            task_id: after,
            wait: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(after.state, pb::TaskState::Succeeded as i32);
    let events = read_events(&mut client, &root, None, None).await;
    assert!(is_finished(events.last().unwrap()));
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_plain_spec_are_refused_by_field() {
    let database = TestDatabase::create().await;
    let logs = log_dir("bad_children");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "fanner", &["-c", "1"]);
    let mut client = coordinator.client().await;
    let bad = client
        .submit(&spec(
            "fan_out",
            json!({"task": "noop", "count": 3, "queue": "nowhere"}),
            None,
        ))
        .await
        .unwrap();
    let mut tasks = tasks_client(&coordinator).await;
    let done = tasks
        .get_task(pb::GetTaskRequest {
            task_id: bad.id.to_string(),
            wait: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(done.state, pb::TaskState::Failed as i32);
    let error = done.error.unwrap();
    assert_eq!(error.kind, "submit_children");
    assert!(
        error
            .message
            .starts_with("children[0].queue: unknown queue"),
        "{error:?}"
    );
    assert_eq!(done.attempt, 1, "a bad spec is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_tree_to_its_end_and_exits_by_its_outcome() {
    let database = TestDatabase::create().await;
    let logs = log_dir("follow");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "followed", &["-c", "4"]);
    let mut client = tasks_client(&coordinator).await;
    let root = submit(&mut client, "fan_out", json!({"task": "noop", "count": 50})).await;
    let url = coordinator.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
            .args(["follow", &root, "--json", "--coordinator", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let last = lines.last().expect("events");
    assert_eq!(last["tasks_total"], 51);
    assert_eq!(last["tasks_finished"], 51);
    assert_eq!(last["event"]["kind"], "tree_finished", "{last}");
    assert_eq!(last["event"]["root_state"], "succeeded", "{last}");
    for line in &lines {
        assert!(line["event"]["kind"].is_string(), "{line}");
    }
}
