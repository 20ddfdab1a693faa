//! Records: fenced by lease, unique by key, paged in order; and the database's settings.

use super::*;

on_both_stores!(records_are_fenced_unique_and_paged_in_order,);

async fn records_are_fenced_unique_and_paged_in_order(store: Arc<dyn Store>) {
    use celeritas::domain::RecordEntry;
    use celeritas::store::{RecordQuery, RecordWrite};
    let now = t0();
    let root = task("emit_records", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&root))
        .await
        .unwrap();
    let lease = run(&store, "default", 1, now).await[0];
    store.open_tree(root.id, now).await.unwrap();
    let entry =
        |key: &str, status: &str| RecordEntry::parse("r", "delivery", key, status, "").unwrap();
    let write = |token: LeaseToken, records: Vec<RecordEntry>| RecordWrite {
        token,
        worker: worker("w"),
        records,
        at: now,
    };
    let stale = LeaseToken {
        task_id: lease.task_id,
        attempt: lease.attempt + 1,
    };
    store
        .record_attempts(&AttemptBatch {
            records: vec![
                write(
                    lease,
                    vec![
                        entry("c@x", "deferred"),
                        entry("a@x", "delivered"),
                        entry("b@x", "failed"),
                    ],
                ),
                write(stale, vec![entry("z@x", "delivered")]),
                write(lease, vec![entry("c@x", "delivered")]),
            ],
            ..AttemptBatch::default()
        })
        .await
        .unwrap();
    let query = |after: i64, limit: u32, status: Option<&str>| RecordQuery {
        task: root.id,
        whole_tree: true,
        kind: Some("delivery".to_owned()),
        status: status.map(str::to_owned),
        after,
        limit,
    };
    let first = store.records(&query(0, 2, None)).await.unwrap();
    let rest = store
        .records(&query(first.last().unwrap().0, 10, None))
        .await
        .unwrap();
    let keys: Vec<(&str, &str)> = first
        .iter()
        .chain(&rest)
        .map(|(_, record)| (record.entry.key.as_str(), record.entry.status.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("c@x", "delivered"),
            ("a@x", "delivered"),
            ("b@x", "failed")
        ]
    );
    assert_eq!(
        store
            .records(&query(0, 10, Some("failed")))
            .await
            .unwrap()
            .len(),
        1
    );
    let mut delivered = store
        .recorded_keys(root.id, "delivery", Some("delivered"))
        .await
        .unwrap();
    delivered.sort();
    assert_eq!(delivered, vec!["a@x".to_owned(), "c@x".to_owned()]);
    assert!(
        store
            .setting("page_token_secret")
            .await
            .unwrap()
            .is_some_and(|secret| secret.len() >= 32)
    );
}
