//! Attempts: starts and ends fenced by lease, failures retried or final.

use super::*;

on_both_stores!(
    completions_are_fenced_by_attempt_and_worker,
    failures_are_retried_or_final_and_kept_in_history,
);

async fn completions_are_fenced_by_attempt_and_worker(store: Arc<dyn Store>) {
    let now = t0();
    let new = task("noop", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&new))
        .await
        .unwrap();
    let lease = store
        .claim(&claim("w", Uuid::new_v4(), &[("default", 0)], 1, now))
        .await
        .unwrap()
        .tasks
        .remove(0);
    let token = lease.token;
    store
        .record_parts(
            &[Start {
                token,
                worker: worker("w"),
                at: now,
                lease_expires_at: after(now, Duration::from_secs(60)),
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(state(&store, new.id).await, TaskState::Running);

    let done = Resolution::Succeeded(JsonText::parse("result", r#"{"ok": true}"#, 1024).unwrap());
    let stale = LeaseToken {
        task_id: token.task_id,
        attempt: token.attempt + 1,
    };
    let applied = store
        .record_parts(
            &[],
            &[
                completion(stale, "w", done.clone(), now),
                completion(token, "intruder", done.clone(), now),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![false, false]);
    assert_eq!(state(&store, new.id).await, TaskState::Running);

    let applied = store
        .record_parts(&[], &[completion(token, "w", done.clone(), now)])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.result.unwrap().to_value()["ok"], true);
    assert_eq!(record.started_at, Some(now));
    assert_eq!(record.finished_at, Some(now));

    let again = store
        .record_parts(&[], &[completion(token, "w", done, now)])
        .await
        .unwrap();
    assert_eq!(again, vec![false], "a finished task takes no second result");
}

async fn failures_are_retried_or_final_and_kept_in_history(store: Arc<dyn Store>) {
    let now = t0();
    let new = task("fail", "default", 0, now);
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
    let retry_at = after(now, Duration::from_secs(5));
    let retry = Resolution::Retry {
        kind: "smtp_transient".into(),
        message: "451".into(),
        run_at: retry_at,
    };
    assert_eq!(
        store
            .record_parts(&[], &[completion(token, "w", retry, now)])
            .await
            .unwrap(),
        vec![true]
    );
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Scheduled);
    assert_eq!(record.retries, 1);
    assert_eq!(record.run_at, retry_at);
    assert_eq!(record.finished_at, None);

    store.promote_due(retry_at, 10).await.unwrap();
    let token = store
        .claim(&claim("w", session, &[("default", 0)], 1, retry_at))
        .await
        .unwrap()
        .tasks[0]
        .token;
    assert_eq!(token.attempt, 2);
    let final_failure = Resolution::Failed {
        kind: "smtp_permanent".into(),
        message: "550".into(),
    };
    store
        .record_parts(&[], &[completion(token, "w", final_failure, retry_at)])
        .await
        .unwrap();
    let record = store.task(new.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.error, Some(("smtp_permanent".into(), "550".into())));
    let kinds: Vec<(u32, &str)> = record
        .failures
        .iter()
        .map(|failure| (failure.attempt, failure.kind.as_str()))
        .collect();
    assert_eq!(kinds, vec![(1, "smtp_transient"), (2, "smtp_permanent")]);
    assert!(
        record
            .failures
            .iter()
            .all(|failure| failure.worker_id.as_deref() == Some("w"))
    );
    assert_eq!(record.failures[0].at, now);
}
