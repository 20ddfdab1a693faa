//! The database answers pings and carries announcements between coordinators (Postgres); the
//! embedded store, which one coordinator uses, has nobody to tell.

use super::*;
use celeritas::store::Announcement;

on_both_stores!(the_database_answers_and_carries_announcements);

async fn the_database_answers_and_carries_announcements(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let listener = store.listen().await.unwrap();
    let work = Announcement::Work {
        from: "coordinator-a".to_owned(),
    };
    let cancel = Announcement::Cancel {
        token: LeaseToken {
            task_id: TaskId::generate(),
            attempt: 3,
        },
        terminate: true,
    };
    store.announce(&work).await.unwrap();
    store.announce(&cancel).await.unwrap();
    let Some(mut listener) = listener else {
        // Only the embedded store has no listener; it still accepts announcements.
        return;
    };
    for expected in [work, cancel] {
        let received = tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("the announcement arrives")
            .unwrap();
        assert_eq!(received, expected);
    }
}
