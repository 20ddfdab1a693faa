//! Workers: registered with their task names.

use super::*;

on_both_stores!(
    workers_are_registered_with_their_task_names,
    workers_read_back_with_what_they_last_reported,
);

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

async fn workers_read_back_with_what_they_last_reported(store: Arc<dyn Store>) {
    use celeritas::domain::WorkerStats;
    let registration = |name: &str, pid: u32| WorkerRegistration {
        id: worker(name),
        hostname: format!("{name}.host"),
        pid,
        queues: vec![queue("campaigns"), queue("email")],
        task_names: vec![TaskName::parse("name", "send_campaign").unwrap()],
        concurrency: 4,
        prefetch_multiplier: 2,
        version: "1.2.3".to_owned(),
        coordinator_id: "c1".to_owned(),
        connected_at: t0(),
    };
    assert!(store.workers().await.unwrap().is_empty());
    store
        .register_worker(&registration("w2", 20))
        .await
        .unwrap();
    store
        .register_worker(&registration("w1", 10))
        .await
        .unwrap();
    let workers = store.workers().await.unwrap();
    let ids: Vec<&str> = workers.iter().map(|worker| worker.id.as_str()).collect();
    assert_eq!(ids, vec!["w1", "w2"], "by id");
    let first = &workers[0];
    assert_eq!(first.hostname, "w1.host");
    assert_eq!(first.pid, 10);
    assert_eq!(
        first.queues,
        vec![(queue("campaigns"), 0), (queue("email"), 0)]
    );
    assert_eq!(first.task_names, vec!["send_campaign".to_owned()]);
    assert_eq!((first.concurrency, first.prefetch_multiplier), (4, 2));
    assert_eq!(first.version, "1.2.3");
    assert_eq!(first.coordinator_id, "c1");
    assert_eq!(first.connected_at, t0());
    assert_eq!(first.last_seen_at, None);
    assert_eq!(first.stats, None);
    assert!(!first.connected);

    let stats = WorkerStats {
        processed: [("send_campaign".to_owned(), 7)].into_iter().collect(),
        failed: [("send_campaign".to_owned(), 1)].into_iter().collect(),
        memory_rss_bytes: 1 << 20,
        started_at: Some(t0()),
    };
    let seen = after(t0(), Duration::from_secs(5));
    store
        .worker_seen(&worker("w1"), Some(&stats), seen)
        .await
        .unwrap();
    let first = store.workers().await.unwrap().remove(0);
    assert_eq!(first.last_seen_at, Some(seen));
    assert_eq!(first.stats.as_ref(), Some(&stats));
    // A heartbeat without counters keeps the last ones.
    let later = after(t0(), Duration::from_secs(9));
    store.worker_seen(&worker("w1"), None, later).await.unwrap();
    let workers = store.workers().await.unwrap();
    assert_eq!(workers[0].last_seen_at, Some(later));
    assert_eq!(workers[0].stats.as_ref(), Some(&stats));
    assert_eq!(workers[1].last_seen_at, None, "only w1 was heard from");

    // A worker saying hello again replaces what it said before.
    let mut again = registration("w1", 11);
    again.queues = vec![queue("default")];
    store.register_worker(&again).await.unwrap();
    let first = store.workers().await.unwrap().remove(0);
    assert_eq!(first.pid, 11);
    assert_eq!(first.queues, vec![(queue("default"), 0)]);
}
