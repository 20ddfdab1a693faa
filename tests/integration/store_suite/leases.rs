//! Leases: claimed in order (never from a paused queue), released and adopted by session, renewed and reaped.

use super::*;

on_both_stores!(
    claims_serve_queue_priority_then_task_priority_then_fifo,
    claims_lease_only_registered_names_in_one_order_across_them,
    expired_tasks_are_never_leased,
    a_paused_queue_is_not_claimed_until_resumed,
    rate_limited_tasks_are_leased_as_their_buckets_allow,
    releases_are_fenced_by_session,
    a_reconnecting_worker_keeps_what_it_holds_and_loses_the_rest,
    a_running_attempt_the_worker_comes_back_without_counts_as_lost,
    leases_are_renewed_and_expired_ones_reaped_by_verdict,
);

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

async fn claims_lease_only_registered_names_in_one_order_across_them(store: Arc<dyn Store>) {
    let now = t0();
    let tasks = vec![
        task("reports.build", "default", 0, now),
        task("noop", "default", 0, now),
        task("reports.build", "default", 0, now),
        task("noop", "default", 3, now),
        task("reports.build", "default", 5, now),
        task("reports.build", "email", 9, now),
    ];
    store.insert_tasks(&tasks).await.unwrap();
    let queues = [("default", 0)];

    // A worker without `reports.build` gets only the noops, best priority first, and the
    // reports wait for a worker that has them, however many such claims come.
    let rust = store
        .claim(&claim_of_names(
            "rust",
            Uuid::new_v4(),
            &queues,
            &["noop", "fail"],
            10,
            now,
        ))
        .await
        .unwrap();
    let leased: Vec<TaskId> = rust.tasks.iter().map(|lease| lease.token.task_id).collect();
    assert_eq!(leased, vec![tasks[3].id, tasks[1].id]);
    let again = store
        .claim(&claim_of_names(
            "rust",
            Uuid::new_v4(),
            &queues,
            &["noop"],
            10,
            now,
        ))
        .await
        .unwrap();
    assert_eq!(again.consumed(), 0, "{again:?}");
    for waiting in [&tasks[0], &tasks[2], &tasks[4]] {
        let record = store.task(waiting.id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Pending);
    }

    // A worker with both names is served across them in one order: priority, then FIFO. The
    // report on `email`, a queue this worker does not consume, stays.
    let python = store
        .claim(&claim_of_names(
            "python",
            Uuid::new_v4(),
            &queues,
            &["noop", "reports.build"],
            2,
            now,
        ))
        .await
        .unwrap();
    let leased: Vec<TaskId> = python
        .tasks
        .iter()
        .map(|lease| lease.token.task_id)
        .collect();
    assert_eq!(leased, vec![tasks[4].id, tasks[0].id]);
    let rest = store
        .claim(&claim_of_names(
            "python",
            Uuid::new_v4(),
            &queues,
            &["reports.build"],
            10,
            now,
        ))
        .await
        .unwrap();
    let leased: Vec<TaskId> = rest.tasks.iter().map(|lease| lease.token.task_id).collect();
    assert_eq!(leased, vec![tasks[2].id]);
    let record = store.task(tasks[5].id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Pending);

    let nameless = store
        .claim(&claim_of_names(
            "none",
            Uuid::new_v4(),
            &[("email", 0)],
            &[],
            10,
            now,
        ))
        .await
        .unwrap();
    assert_eq!(
        nameless.consumed(),
        0,
        "a worker that registered nothing is leased nothing"
    );
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

async fn a_paused_queue_is_not_claimed_until_resumed(store: Arc<dyn Store>) {
    let now = t0();
    let email = task("noop", "email", 0, now);
    let import = task("noop", "import", 0, now);
    store
        .insert_tasks(&[email.clone(), import.clone()])
        .await
        .unwrap();
    let pause = |by: Option<&str>, at| celeritas::store::PausedQueue {
        queue: queue("email"),
        paused_at: at,
        paused_by: by.map(str::to_owned),
    };
    assert!(store.pause_queue(&pause(Some("ops"), now)).await.unwrap());
    // A second pause keeps the first one's moment and author.
    let later = after(now, Duration::from_secs(60));
    assert!(!store.pause_queue(&pause(None, later)).await.unwrap());
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec![pause(Some("ops"), now)]
    );

    let both = [("email", 9), ("import", 0)];
    let claimed = store
        .claim(&claim("w", Uuid::new_v4(), &both, 10, now))
        .await
        .unwrap();
    let ids: Vec<TaskId> = claimed
        .tasks
        .iter()
        .map(|lease| lease.token.task_id)
        .collect();
    assert_eq!(
        ids,
        vec![import.id],
        "only the queue that is not paused is served"
    );
    assert_eq!(state(&store, email.id).await, TaskState::Pending);

    assert!(store.resume_queue(&queue("email")).await.unwrap());
    assert!(!store.resume_queue(&queue("email")).await.unwrap());
    assert!(store.paused_queues().await.unwrap().is_empty());
    let claimed = store
        .claim(&claim("w", Uuid::new_v4(), &both, 10, later))
        .await
        .unwrap();
    let ids: Vec<TaskId> = claimed
        .tasks
        .iter()
        .map(|lease| lease.token.task_id)
        .collect();
    assert_eq!(ids, vec![email.id]);
}

async fn rate_limited_tasks_are_leased_as_their_buckets_allow(store: Arc<dyn Store>) {
    let now = t0();
    let limits = Arc::new(
        celeritas::domain::RateLimits::parse("rate_limits", [("domain:slow.test", "10/s")])
            .unwrap(),
    );
    let limited = |n: i64| {
        let mut task = task(
            "noop",
            "email",
            0,
            after(now, Duration::from_millis(n as u64)),
        );
        task.rate_keys = celeritas::domain::RateKeys::parse(
            "rate_keys",
            &[
                ("domain:slow.test".to_owned(), 5),
                ("relay:any".to_owned(), 1),
            ]
            .into(),
        )
        .unwrap();
        task.governed = true;
        task
    };
    let batches: Vec<NewTask> = (0..5).map(limited).collect();
    let plain = vec![task("noop", "email", 0, now), task("noop", "email", 0, now)];
    store.insert_tasks(&batches).await.unwrap();
    store.insert_tasks(&plain).await.unwrap();
    let claim_at = |at: DateTime<Utc>, limits: &Arc<celeritas::domain::RateLimits>| Claim {
        rate_limits: limits.clone(),
        ..claim("w", Uuid::new_v4(), &[("email", 0)], 10, at)
    };
    let ids = |claimed: &celeritas::store::Claimed| -> Vec<TaskId> {
        claimed
            .tasks
            .iter()
            .map(|lease| lease.token.task_id)
            .collect()
    };

    let plain_first = store
        .claim(&claim("w", Uuid::new_v4(), &[("email", 0)], 2, now))
        .await
        .unwrap();
    assert_eq!(ids(&plain_first).len(), 2, "the plain claim goes first");
    // A new bucket holds one token: the first batch goes (taking it to -4), the rest wait
    // until it is back at one, 0.5 s later at 10/s.
    let first = store.claim(&claim_at(now, &limits)).await.unwrap();
    assert_eq!(ids(&first), vec![batches[0].id]);
    let wait = first
        .limited_until
        .expect("the claim says when to look again")
        - now;
    assert!(
        (500_000..=500_100).contains(&wait.num_microseconds().unwrap()),
        "{wait:?}"
    );
    let early = store
        .claim(&claim_at(after(now, Duration::from_millis(400)), &limits))
        .await
        .unwrap();
    assert!(early.tasks.is_empty());
    let due = store
        .claim(&claim_at(after(now, Duration::from_millis(501)), &limits))
        .await
        .unwrap();
    assert_eq!(ids(&due), vec![batches[1].id], "in service order");
    // Idle for a minute, the bucket refills to a second's worth (10), not more: two batches.
    let refilled = store
        .claim(&claim_at(after(now, Duration::from_secs(60)), &limits))
        .await
        .unwrap();
    assert_eq!(ids(&refilled), vec![batches[2].id, batches[3].id]);

    // A paused queue's rate-limited tasks wait too.
    let pause = celeritas::store::PausedQueue {
        queue: queue("email"),
        paused_at: now,
        paused_by: None,
    };
    store.pause_queue(&pause).await.unwrap();
    let later = after(now, Duration::from_secs(120));
    assert!(
        store
            .claim(&claim_at(later, &limits))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    store.resume_queue(&queue("email")).await.unwrap();
    let resumed = store.claim(&claim_at(later, &limits)).await.unwrap();
    assert_eq!(ids(&resumed), vec![batches[4].id]);
}
