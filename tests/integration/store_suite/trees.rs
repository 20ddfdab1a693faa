//! Trees: their events, their end, and callbacks released once.

use super::*;

on_both_stores!(
    trees_tell_their_children_and_finish_after_the_last,
    callbacks_wait_for_the_parent_and_every_child,
);

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
