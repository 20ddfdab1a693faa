//! Sessions on tokio's paused clock: silence is measured by hand-moved time, and a worker's
//! place is counted from the lease's sending until its result is durable.

use super::*;
use crate::domain::{JsonText, Priority, TimeLimits};

fn hello(concurrency: u32, prefetch_multiplier: u32) -> Hello {
    Hello {
        worker_id: WorkerId::parse("worker_id", "w1").unwrap(),
        hostname: "test".to_owned(),
        pid: 1,
        queues: vec![QueueName::parse("queue", "default").unwrap()],
        concurrency,
        prefetch_multiplier,
        task_names: vec![TaskName::parse("name", "noop").unwrap()],
        version: "test".to_owned(),
        held_leases: vec![],
    }
}

fn lease(args_bytes: usize) -> Lease {
    let id = TaskId::generate();
    Lease {
        token: LeaseToken {
            task_id: id,
            attempt: 1,
        },
        name: TaskName::parse("name", "noop").unwrap(),
        queue: QueueName::parse("queue", "default").unwrap(),
        priority: Priority::parse("priority", 0).unwrap(),
        args: JsonText::parse(
            "args",
            &format!("{{\"pad\":\"{}\"}}", "x".repeat(args_bytes)),
            usize::MAX,
        )
        .unwrap(),
        retries: 0,
        max_retries: 3,
        time_limits: TimeLimits::new(Duration::from_secs(1), Duration::from_secs(2), "").unwrap(),
        expires_at: None,
        parent_id: None,
        root_id: id,
        run_at: Utc::now(),
    }
}

type Received = mpsc::Receiver<Result<CoordinatorMessage, CoordinatorError>>;

fn session(hello: Hello, buffer_bytes: usize, channel: usize) -> (Session, Received) {
    let (outbound, received) = mpsc::channel(channel);
    let session = Session::new(
        Uuid::new_v4(),
        hello,
        vec![(QueueName::parse("queue", "default").unwrap(), 0)],
        &[],
        outbound,
        Arc::new(StreamBuffer::new(buffer_bytes)),
        Utc::now(),
    );
    (session, received)
}

#[tokio::test(start_paused = true)]
async fn silence_is_the_time_since_the_worker_last_spoke() {
    let (session, _received) = session(hello(1, 1), 1 << 20, 8);
    tokio::time::advance(Duration::from_secs(14)).await;
    assert_eq!(session.silent_for(), Duration::from_secs(14));
    session.touch();
    assert_eq!(session.silent_for(), Duration::ZERO);
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(session.silent_for(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_place_is_taken_from_sending_until_the_result_is_durable() {
    // Capacity 2 × 2 = 4; the worker grants 3, then 10 more (capped at its capacity).
    let (session, mut received) = session(hello(2, 2), 1 << 20, 64);
    assert_eq!(session.available(), 0, "no credit, no leases");
    session.grant(3);
    assert_eq!(session.available(), 3);
    let sent: Vec<Lease> = (0..3).map(|_| lease(10)).collect();
    let tokens: Vec<LeaseToken> = sent.iter().map(|lease| lease.token).collect();
    assert!(session.deliver(sent).is_empty());
    assert_eq!(session.available(), 0, "the credit is spent");
    session.grant(10);
    assert_eq!(session.available(), 1, "capacity 4, three outstanding");
    for _ in 0..3 {
        assert!(matches!(
            received.recv().await,
            Some(Ok(CoordinatorMessage::Lease(_)))
        ));
    }

    // A result being written still holds its place, and cannot be released under it.
    let completing = session.begin_completion(&tokens[0]).unwrap();
    assert!(completing.completing);
    assert!(
        session.begin_completion(&tokens[0]).is_none(),
        "a second copy waits"
    );
    assert_eq!(
        session.take_releasable(&tokens[..1]),
        Vec::<LeaseToken>::new()
    );
    assert_eq!(session.available(), 1);
    session.abandon_completion(&tokens[0]);
    assert_eq!(
        session.available(),
        1,
        "a result not written keeps its place"
    );
    session.begin_completion(&tokens[0]).unwrap();
    session.settle(&tokens[0]);
    assert_eq!(session.available(), 2, "a durable result frees its place");

    // Released leases free theirs; a stream's end takes all but those being written.
    assert_eq!(session.take_releasable(&tokens[1..2]), vec![tokens[1]]);
    assert_eq!(session.available(), 3);
    session.begin_completion(&tokens[2]).unwrap();
    assert!(session.take_all_releasable().is_empty());
    assert_eq!(session.leases().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_does_not_read_is_sent_no_more_than_its_byte_budget() {
    // A budget of 64 KiB, leases of about 16 KiB, a channel with room for all of them.
    let (session, mut received) = session(hello(100, 1), 64 * 1024, 1000);
    session.grant(100);
    assert!(
        session.available() <= 64,
        "a new stream's first claim is small"
    );
    let leases: Vec<Lease> = (0..10).map(|_| lease(16 * 1024)).collect();
    let undelivered = session.deliver(leases);
    assert_eq!(undelivered.len(), 6, "four leases fill the budget");
    assert_eq!(session.available(), 0);
    assert_eq!(session.leases().len(), 4);
    // The wire takes one lease: room for one more.
    let Some(Ok(CoordinatorMessage::Lease(taken))) = received.recv().await else {
        panic!("a lease was sent");
    };
    assert!(session.buffer.sent(&taken), "the budget has room again");
    assert!(session.available() > 0);
    let undelivered = session.deliver((0..2).map(|_| lease(16 * 1024)).collect());
    assert_eq!(undelivered.len(), 1, "room for one lease of that size");
    assert_eq!(session.available(), 0);
}
