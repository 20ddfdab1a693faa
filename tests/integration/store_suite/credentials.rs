//! API tokens (kept as digests, revoked for good) and the credential each worker id is bound to.

use celeritas::domain::{Roles, TokenName, TokenSecret};
use celeritas::store::StoredToken;

use super::*;

on_both_stores!(
    tokens_are_kept_as_digests_and_revoked_once,
    a_worker_id_keeps_the_first_credential_it_came_with,
    a_task_remembers_who_submitted_it,
);

fn stored(name: &str, roles: &[&str], secret: &TokenSecret) -> StoredToken {
    StoredToken {
        name: TokenName::parse("name", name).unwrap(),
        roles: Roles::parse_all("roles", roles).unwrap(),
        digest: secret.digest(),
        created_at: t0(),
        revoked_at: None,
    }
}

async fn tokens_are_kept_as_digests_and_revoked_once(store: Arc<dyn Store>) {
    let (first, second) = (TokenSecret::generate(), TokenSecret::generate());
    let django = stored("django", &["submit", "read"], &first);
    assert!(store.create_token(&django).await.unwrap());
    // A name, or a digest, is taken once.
    assert!(
        !store
            .create_token(&stored("django", &["admin"], &second))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_token(&stored("other", &["admin"], &first))
            .await
            .unwrap()
    );
    let ops = stored("ops", &["admin"], &second);
    assert!(store.create_token(&ops).await.unwrap());
    assert_eq!(store.tokens().await.unwrap(), vec![django.clone(), ops]);

    let later = after(t0(), Duration::from_secs(60));
    assert!(store.revoke_token(&django.name, later).await.unwrap());
    assert!(!store.revoke_token(&django.name, later).await.unwrap());
    let missing = TokenName::parse("name", "missing").unwrap();
    assert!(!store.revoke_token(&missing, later).await.unwrap());
    let tokens = store.tokens().await.unwrap();
    assert_eq!(tokens[0].revoked_at, Some(later));
    assert_eq!(tokens[0].roles, django.roles);
    assert_eq!(tokens[1].revoked_at, None);
}

async fn a_worker_id_keeps_the_first_credential_it_came_with(store: Arc<dyn Store>) {
    let id = worker("mailer-1");
    // A worker without credentials binds nothing.
    assert_eq!(
        store.bind_worker_credential(&id, None, t0()).await.unwrap(),
        None
    );
    let bound = store
        .bind_worker_credential(&id, Some("certificate:mailer"), t0())
        .await
        .unwrap();
    assert_eq!(bound.as_deref(), Some("certificate:mailer"));
    // Another credential gets the first one back, and does not replace it.
    let other = store
        .bind_worker_credential(&id, Some("token:intruder"), t0())
        .await
        .unwrap();
    assert_eq!(other.as_deref(), Some("certificate:mailer"));
    assert_eq!(
        store
            .bind_worker_credential(&id, None, t0())
            .await
            .unwrap()
            .as_deref(),
        Some("certificate:mailer")
    );
    assert_eq!(
        store
            .bind_worker_credential(&worker("mailer-2"), Some("token:intruder"), t0())
            .await
            .unwrap()
            .as_deref(),
        Some("token:intruder")
    );
}

async fn a_task_remembers_who_submitted_it(store: Arc<dyn Store>) {
    let mut submitted = task("noop", "default", 0, t0());
    submitted.submitted_by = Some("token:django".to_owned());
    let anonymous = task("noop", "default", 0, t0());
    store
        .insert_tasks(&[submitted.clone(), anonymous.clone()])
        .await
        .unwrap();
    let read = |id| {
        let store = store.clone();
        async move { store.task(id).await.unwrap().unwrap().submitted_by }
    };
    assert_eq!(read(submitted.id).await.as_deref(), Some("token:django"));
    assert_eq!(read(anonymous.id).await, None);
}
