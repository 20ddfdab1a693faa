//! Tasks: inserted, read back, promoted when due, listed, counted, cancelled, purged and
//! retried.

use super::*;

on_both_stores!(
    inserts_read_back_and_idempotency_keys_return_the_first_task,
    scheduled_tasks_become_pending_when_due,
    cancel_and_purge_stop_waiting_and_running_tasks,
    quiet_tasks_are_listed_and_interrupted_by_attempt,
    tasks_in_a_state_come_oldest_first_and_queues_are_counted,
    failed_tasks_are_selected_counted_and_retried_reopening_their_trees,
);

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
    assert_eq!(roots[&plain.id].root_id, plain.id);
    assert_eq!(roots[&plain.id].group_key, None);
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
        ..TaskFilter::default()
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

async fn tasks_in_a_state_come_oldest_first_and_queues_are_counted(store: Arc<dyn Store>) {
    let now = t0();
    let running = task("noop", "default", 0, now);
    // Inserted before `pending_first`, but due later: run time decides, not insertion.
    let pending_later = task("noop", "email", 0, after(now, Duration::from_secs(2)));
    let pending_first = task("noop", "default", 0, after(now, Duration::from_secs(1)));
    let mut scheduled = task("noop", "default", 0, now);
    scheduled.run_at = after(now, Duration::from_secs(60));
    store
        .insert_tasks(&[
            running.clone(),
            pending_later.clone(),
            pending_first.clone(),
            scheduled.clone(),
        ])
        .await
        .unwrap();
    let leased = run(&store, "default", 1, after(now, Duration::from_secs(10))).await;
    assert_eq!(leased[0].task_id, running.id, "the oldest default task");

    let ids = |tasks: Vec<celeritas::domain::TaskRecord>| -> Vec<TaskId> {
        tasks.into_iter().map(|task| task.id).collect()
    };
    assert_eq!(
        ids(store.tasks_in_state(TaskState::Pending, 10).await.unwrap()),
        vec![pending_first.id, pending_later.id]
    );
    assert_eq!(
        ids(store.tasks_in_state(TaskState::Pending, 1).await.unwrap()),
        vec![pending_first.id],
        "the limit keeps the oldest"
    );
    let running_now = store.tasks_in_state(TaskState::Running, 10).await.unwrap();
    assert_eq!(ids(running_now.clone()), vec![running.id]);
    assert_eq!(
        running_now[0].started_at,
        Some(after(now, Duration::from_secs(10)))
    );
    assert_eq!(
        ids(store
            .tasks_in_state(TaskState::Scheduled, 10)
            .await
            .unwrap()),
        vec![scheduled.id]
    );
    assert!(
        store
            .tasks_in_state(TaskState::Succeeded, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let counts = |counts: celeritas::store::QueueCounts| {
        let mut by_state = counts.by_state;
        by_state.sort();
        let mut pending = counts.pending_by_name;
        pending.sort();
        (by_state, pending)
    };
    let entry = |queue: &str, state: &str, count: u64| (queue.to_owned(), state.to_owned(), count);
    let queue_counts = store.queue_counts().await.unwrap();
    assert_eq!(
        queue_counts.oldest_pending("default"),
        Some(pending_first.created_at)
    );
    assert_eq!(queue_counts.oldest_pending("import"), None);
    let (by_state, pending) = counts(queue_counts);
    assert_eq!(
        by_state,
        vec![
            entry("default", "pending", 1),
            entry("default", "running", 1),
            entry("default", "scheduled", 1),
            entry("email", "pending", 1),
        ]
    );
    assert_eq!(
        pending,
        vec![
            (
                "default".to_owned(),
                "noop".to_owned(),
                1,
                pending_first.created_at
            ),
            (
                "email".to_owned(),
                "noop".to_owned(),
                1,
                pending_later.created_at
            ),
        ]
    );
    // A finished task is no longer counted.
    store
        .record_parts(&[], &[succeeded(leased[0], now)])
        .await
        .unwrap();
    let (by_state, _) = counts(store.queue_counts().await.unwrap());
    assert!(
        by_state.iter().all(|(_, state, _)| state != "running"),
        "{by_state:?}"
    );
    assert_eq!(by_state.len(), 3);
}

async fn failed_tasks_are_selected_counted_and_retried_reopening_their_trees(
    store: Arc<dyn Store>,
) {
    let now = t0();
    let later = after(now, Duration::from_secs(10));
    let relay = task("noop", "email", 0, now);
    let address = task("noop", "import", 0, later);
    let root = task("batch", "default", 0, later);
    let untouched = task("noop", "email", 0, later);
    store
        .insert_tasks(&[
            relay.clone(),
            address.clone(),
            root.clone(),
            untouched.clone(),
        ])
        .await
        .unwrap();
    store.open_tree(root.id, now).await.unwrap();
    let everything = [("email", 0), ("import", 0), ("default", 0)];
    let leases = store
        .claim(&claim("w", Uuid::new_v4(), &everything, 3, later))
        .await
        .unwrap()
        .tasks;
    assert_eq!(leases.len(), 3);
    let kind_of = |id: TaskId| {
        if id == address.id {
            "bad_address"
        } else {
            "relay_down"
        }
    };
    let ends: Vec<_> = leases
        .iter()
        .map(|lease| {
            let failed = Resolution::Failed {
                kind: kind_of(lease.token.task_id).into(),
                message: "no".into(),
            };
            completion(lease.token, "w", failed, later)
        })
        .collect();
    store.record_parts(&[], &ends).await.unwrap();
    store.update_tree(root.id, later).await.unwrap();
    assert!(store.unfinished_trees(10).await.unwrap().is_empty());

    let failed = |filter: TaskFilter| TaskFilter {
        states: vec![TaskState::Failed],
        limit: 10,
        ..filter
    };
    let count = |filter| {
        let store = store.clone();
        async move { store.count_tasks(&failed(filter)).await.unwrap() }
    };
    assert_eq!(count(TaskFilter::default()).await, 3);
    let relay_down = TaskFilter {
        error_kinds: vec!["relay_down".into()],
        ..TaskFilter::default()
    };
    assert_eq!(count(relay_down.clone()).await, 2);
    let on_email = TaskFilter {
        queues: vec![queue("email")],
        ..TaskFilter::default()
    };
    assert_eq!(count(on_email).await, 1);
    let submitted_first = TaskFilter {
        created: TimeRange {
            after: None,
            before: Some(later),
        },
        ..TaskFilter::default()
    };
    assert_eq!(
        count(submitted_first).await,
        1,
        "the range's end is excluded"
    );
    let finished_late = TaskFilter {
        finished: TimeRange {
            after: Some(later),
            before: None,
        },
        ..TaskFilter::default()
    };
    assert_eq!(
        count(finished_late).await,
        3,
        "the range's start is included"
    );
    let listed = store.list_tasks(&failed(relay_down)).await.unwrap();
    let mut ids: Vec<TaskId> = listed.iter().map(|task| task.id).collect();
    ids.sort_unstable();
    let mut expected = vec![relay.id, root.id];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Only failed tasks are retried; the untouched pending one and a repeat change nothing.
    let retry_at = after(later, Duration::from_secs(5));
    let roots = store
        .retry_failed(&[root.id, relay.id, untouched.id, relay.id], retry_at)
        .await
        .unwrap();
    assert_eq!(roots.len(), 2);
    let retried = store.task(relay.id).await.unwrap().unwrap();
    assert_eq!(retried.state, TaskState::Pending);
    assert_eq!(retried.retries, 1, "a bulk retry counts as a retry");
    assert_eq!(retried.error, None);
    assert_eq!(retried.finished_at, None);
    assert_eq!(
        retried.failures.len(),
        1,
        "the failed attempt stays in the history"
    );
    assert_eq!(store.unfinished_trees(10).await.unwrap(), vec![root.id]);
    assert_eq!(state(&store, address.id).await, TaskState::Failed);
    assert!(
        store
            .retry_failed(&[relay.id], retry_at)
            .await
            .unwrap()
            .is_empty()
    );
    // A retried task is leased again on a new attempt, so its old lease stays fenced out.
    let again = store
        .claim(&claim("w", Uuid::new_v4(), &[("email", 0)], 10, retry_at))
        .await
        .unwrap()
        .tasks;
    let relay_lease = again
        .iter()
        .find(|lease| lease.token.task_id == relay.id)
        .expect("the retried task is leased again");
    assert_eq!(relay_lease.token.attempt, 2);
}
