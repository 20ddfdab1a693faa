use super::*;
use crate::domain::{JsonText, QueueName, WorkerId};

fn runtime() -> Runtime {
    Runtime::new(
        WorkerOptions {
            coordinator: crate::grpc::client::Target::plain("http://127.0.0.1:1"),
            worker_id: WorkerId::parse("worker", "w1").unwrap(),
            hostname: "test".to_owned(),
            queues: vec![QueueName::parse("queue", "default").unwrap()],
            concurrency: 1,
            prefetch_multiplier: 1,
            shutdown_timeout: Duration::from_secs(1),
            reconnect_backoff_max: Duration::from_secs(1),
            max_tasks_per_child: None,
            execution_log: None,
        },
        Registry::new(),
    )
}

/// Puts the runtime on a welcomed stream whose outbound channel holds `room` messages.
fn up(runtime: &mut Runtime, room: usize) -> mpsc::Receiver<WorkerMessage> {
    let (outbound, receiver) = mpsc::channel(room);
    runtime.connection = Connection::Up(Link {
        outbound,
        outbox: VecDeque::new(),
        inbound: futures::stream::pending().boxed(),
        welcomed: true,
        heartbeat: tokio::time::interval(Duration::from_secs(3600)),
    });
    receiver
}

fn credit(message: WorkerMessage) -> u32 {
    match message {
        WorkerMessage::Credit(grant) => grant,
        other => panic!("expected credit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_stream_delays_what_must_arrive_and_loses_none_of_it() {
    let mut runtime = runtime();
    let mut receiver = up(&mut runtime, 2);
    // Skip the heartbeat's immediate first tick.
    if let Connection::Up(link) = &mut runtime.connection {
        link.heartbeat.tick().await;
    }
    for grant in 0..10 {
        runtime.send(WorkerMessage::Credit(grant));
    }
    // What may be lost is dropped while the stream is full, never queued ahead.
    runtime.send_or_drop(WorkerMessage::Heartbeat(None));
    let mut received = Vec::new();
    while received.len() < 10 {
        while let Ok(message) = receiver.try_recv() {
            received.push(credit(message));
        }
        if received.len() < 10 {
            assert!(matches!(
                connection_event(&mut runtime.connection).await,
                Event::Flushed
            ));
        }
    }
    assert_eq!(
        received,
        (0..10).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert!(receiver.try_recv().is_err(), "the heartbeat was dropped");
}

#[tokio::test]
async fn results_not_acknowledged_in_time_are_sent_again_after_their_records() {
    let mut runtime = runtime();
    let mut receiver = up(&mut runtime, 64);
    let token = LeaseToken {
        task_id: crate::domain::TaskId::generate(),
        attempt: 1,
    };
    runtime.records.insert(
        token,
        vec![RecordEntry::parse("r", "item", "a", "ok", "").unwrap()],
    );
    runtime.finish(token, Outcome::Succeeded(JsonText::empty_object()));
    while receiver.try_recv().is_ok() {}
    runtime.resend_overdue_results();
    assert!(receiver.try_recv().is_err(), "not overdue yet");
    if let Some(unacked) = runtime.unacked.get_mut(&token) {
        unacked.sent_at = Instant::now() - RESEND_UNACKED_AFTER;
    }
    runtime.resend_overdue_results();
    assert!(matches!(
        receiver.try_recv(),
        Ok(WorkerMessage::EmitRecords { token: sent, .. }) if sent == token
    ));
    assert!(matches!(
        receiver.try_recv(),
        Ok(WorkerMessage::Result { token: sent, .. }) if sent == token
    ));
}
