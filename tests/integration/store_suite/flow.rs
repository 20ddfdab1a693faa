//! Flow control in the store: groups served in turn, concurrency keys, paused trees.

use super::*;
use celeritas::domain::GroupKey;
use celeritas::store::{TreePause, TreeResume};

on_both_stores!(
    groups_take_turns_in_the_fair_order,
    a_concurrency_key_leases_no_more_than_its_limit,
    a_paused_tree_is_parked_children_included_until_resumed,
    pushback_halves_a_keys_rate_at_most_once_a_second_and_time_restores_it,
    a_limit_set_through_the_api_is_kept_and_governs_the_waiting_tasks_it_covers,
);

fn grouped(group: &str, now: DateTime<Utc>) -> NewTask {
    let mut task = task("batch", "email", 0, now);
    task.governed = true;
    task.group_key = Some(GroupKey::parse("group_key", group).unwrap());
    task
}

fn leased(claimed: &celeritas::store::Claimed) -> Vec<TaskId> {
    claimed
        .tasks
        .iter()
        .map(|lease| lease.token.task_id)
        .collect()
}

async fn groups_take_turns_in_the_fair_order(store: Arc<dyn Store>) {
    let now = t0();
    let big: Vec<NewTask> = (0..6).map(|_| grouped("big", now)).collect();
    store.insert_tasks(&big).await.unwrap();
    let session = Uuid::new_v4();
    let one = || claim("w", session, &[("email", 0)], 1, now);
    // The big group alone: FIFO.
    assert_eq!(leased(&store.claim(&one()).await.unwrap()), vec![big[0].id]);
    assert_eq!(leased(&store.claim(&one()).await.unwrap()), vec![big[1].id]);
    // A small group arriving now starts where service has reached, not behind the big one's
    // remaining four: they alternate.
    let small: Vec<NewTask> = (0..2).map(|_| grouped("small", now)).collect();
    store.insert_tasks(&small).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.extend(leased(&store.claim(&one()).await.unwrap()));
    }
    // The clock stood at place 1 (big[1]): small[0] shares place 1 with nothing left, then the
    // groups alternate.
    assert_eq!(
        order,
        vec![
            small[0].id,
            big[2].id,
            small[1].id,
            big[3].id,
            big[4].id,
            big[5].id
        ]
    );
    let record = store.task(small[0].id).await.unwrap().unwrap();
    assert_eq!(record.group_key.unwrap().as_str(), "small");

    // A governed task without a group starts at the clock; higher priority still goes first.
    let late_big: Vec<NewTask> = (0..3).map(|_| grouped("big", now)).collect();
    store.insert_tasks(&late_big).await.unwrap();
    let mut urgent = grouped("small", now);
    urgent.priority = Priority::parse("priority", 9).unwrap();
    store
        .insert_tasks(std::slice::from_ref(&urgent))
        .await
        .unwrap();
    let claimed = store
        .claim(&claim("w", session, &[("email", 0)], 2, now))
        .await
        .unwrap();
    assert_eq!(leased(&claimed), vec![urgent.id, late_big[0].id]);
}

async fn a_concurrency_key_leases_no_more_than_its_limit(store: Arc<dyn Store>) {
    let now = t0();
    let import = |group: &str| {
        let mut task = grouped(group, now);
        task.max_concurrency = Some(2);
        task
    };
    let customer: Vec<NewTask> = (0..4).map(|_| import("customer:1")).collect();
    let other = import("customer:2");
    store.insert_tasks(&customer).await.unwrap();
    store
        .insert_tasks(std::slice::from_ref(&other))
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let claimed = store
        .claim(&claim("w", session, &[("email", 0)], 10, now))
        .await
        .unwrap();
    let mut ids = leased(&claimed);
    ids.sort();
    let mut expected = vec![customer[0].id, customer[1].id, other.id];
    expected.sort();
    assert_eq!(ids, expected, "two of customer 1, and customer 2's one");
    assert!(
        store
            .claim(&claim("w", session, &[("email", 0)], 10, now))
            .await
            .unwrap()
            .tasks
            .is_empty(),
        "customer 1 is at its limit"
    );
    // One of its tasks finishing frees a place.
    let token = claimed
        .tasks
        .iter()
        .find(|lease| lease.token.task_id == customer[0].id)
        .unwrap()
        .token;
    let done = Resolution::Succeeded(JsonText::parse("result", "{}", 16).unwrap());
    store
        .record_parts(&[], &[completion(token, "w", done, now)])
        .await
        .unwrap();
    let next = store
        .claim(&claim("w", session, &[("email", 0)], 10, now))
        .await
        .unwrap();
    assert_eq!(leased(&next), vec![customer[2].id]);
}

async fn a_paused_tree_is_parked_children_included_until_resumed(store: Arc<dyn Store>) {
    let now = t0();
    let root = task("batch", "default", 0, now);
    store
        .insert_tasks(std::slice::from_ref(&root))
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let campaign = store
        .claim(&claim("w", session, &[("default", 0)], 1, now))
        .await
        .unwrap();
    assert_eq!(leased(&campaign), vec![root.id]);
    let children: Vec<NewTask> = (0..3).map(|_| child_of(&root, "email", now)).collect();
    store.insert_tasks(&children).await.unwrap();

    // Bad requests change nothing.
    assert_eq!(
        store.pause_tree(TaskId::generate(), now).await.unwrap(),
        TreePause::NotFound
    );
    assert_eq!(
        store.pause_tree(children[0].id, now).await.unwrap(),
        TreePause::NotRoot(root.id)
    );

    let TreePause::Paused {
        changed, running, ..
    } = store.pause_tree(root.id, now).await.unwrap()
    else {
        panic!("the tree is paused");
    };
    assert!(changed);
    assert_eq!(running, vec![campaign.tasks[0].token], "the running root");
    let again = store.pause_tree(root.id, now).await.unwrap();
    assert!(matches!(again, TreePause::Paused { changed: false, .. }));

    // Nothing of the tree is leased, however late; a child added meanwhile waits too, and the
    // tasks show their own run times and the pause.
    let late_child = child_of(&root, "email", now);
    store
        .insert_tasks(std::slice::from_ref(&late_child))
        .await
        .unwrap();
    let later = after(now, Duration::from_secs(3600));
    store.promote_due(later, 100).await.unwrap();
    let email = |at| claim("w", session, &[("email", 0)], 10, at);
    assert!(store.claim(&email(later)).await.unwrap().tasks.is_empty());
    let parked = store.task(late_child.id).await.unwrap().unwrap();
    assert_eq!(parked.state, TaskState::Scheduled);
    assert_eq!(parked.run_at, now);
    assert_eq!(parked.tree_paused_at, Some(now));

    // The running root stops for the pause: it waits again, no retry counted, no failure kept.
    let stopped = Resolution::Requeued { run_at: later };
    store
        .record_parts(
            &[],
            &[completion(campaign.tasks[0].token, "w", stopped, later)],
        )
        .await
        .unwrap();
    store.promote_due(later, 100).await.unwrap();
    let root_row = store.task(root.id).await.unwrap().unwrap();
    assert_eq!(root_row.state, TaskState::Scheduled);
    assert_eq!(root_row.retries, 0);
    assert!(root_row.failures.is_empty());

    assert_eq!(
        store.resume_tree(root.id, later).await.unwrap(),
        TreeResume::Resumed { changed: true }
    );
    assert_eq!(
        store.resume_tree(root.id, later).await.unwrap(),
        TreeResume::Resumed { changed: false }
    );
    store.promote_due(later, 100).await.unwrap();
    let mut resumed = leased(&store.claim(&email(later)).await.unwrap());
    resumed.sort();
    let mut expected: Vec<TaskId> = children
        .iter()
        .chain([&late_child])
        .map(|child| child.id)
        .collect();
    expected.sort();
    assert_eq!(resumed, expected);
    let root_again = store
        .claim(&claim("w", session, &[("default", 0)], 1, later))
        .await
        .unwrap();
    assert_eq!(leased(&root_again), vec![root.id]);
    assert_eq!(root_again.tasks[0].token.attempt, 2);
    assert!(
        store
            .task(root.id)
            .await
            .unwrap()
            .unwrap()
            .tree_paused_at
            .is_none()
    );
}

async fn pushback_halves_a_keys_rate_at_most_once_a_second_and_time_restores_it(
    store: Arc<dyn Store>,
) {
    let now = t0();
    let rate = celeritas::domain::Rate::per_second(100.0);
    let minute = Duration::from_secs(60);
    let slowed = store
        .slow_down("domain:busy.test", rate, minute, now)
        .await
        .unwrap();
    assert_eq!(slowed.value(), 50.0);
    // Replies to messages sent together tell of one overload: within a second nothing more is
    // taken, and it has climbed back what half a second gives (0.5/60 of the way).
    let again = store
        .slow_down(
            "domain:busy.test",
            rate,
            minute,
            after(now, Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(again.value(), 50.8);
    // Six seconds on it has climbed back a tenth of the way (to 60/s), and halves from there.
    let later = store
        .slow_down(
            "domain:busy.test",
            rate,
            minute,
            after(now, Duration::from_secs(6)),
        )
        .await
        .unwrap();
    assert_eq!(later.value(), 30.0);
    let buckets = store.rate_buckets().await.unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].key, "domain:busy.test");
    assert_eq!(buckets[0].factor, 300);
    assert_eq!(
        buckets[0].slowed_at,
        Some(after(now, Duration::from_secs(6)))
    );

    // The claim leases at the lowered rate: its bucket refills at 30/s, not 100/s.
    let limits = Arc::new(
        celeritas::domain::RateLimits::parse("rate_limits", [("domain:busy.test", "100/s")])
            .unwrap()
            .recovering_over(minute),
    );
    let at = after(now, Duration::from_secs(6));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut task = task("batch", "email", 0, now);
        task.governed = true;
        task.rate_keys = celeritas::domain::RateKeys::parse(
            "rate_keys",
            &[("domain:busy.test".to_owned(), 1)].into(),
        )
        .unwrap();
        tasks.push(task);
    }
    store.insert_tasks(&tasks).await.unwrap();
    let claim_at = |moment| Claim {
        rate_limits: limits.clone(),
        ..claim("w", Uuid::new_v4(), &[("email", 0)], 100, moment)
    };
    let first = store.claim(&claim_at(at)).await.unwrap();
    let second = store
        .claim(&claim_at(after(at, Duration::from_millis(500))))
        .await
        .unwrap();
    let leased = first.tasks.len() + second.tasks.len();
    // At most a second's worth at 30/s first, then half a second's.
    assert_eq!(first.tasks.len(), 30);
    assert!(
        (15..=25).contains(&second.tasks.len()),
        "{} leased in half a second ({leased} in all)",
        second.tasks.len()
    );
}

async fn a_limit_set_through_the_api_is_kept_and_governs_the_waiting_tasks_it_covers(
    store: Arc<dyn Store>,
) {
    use celeritas::domain::{RateKeys, RateLimitSetting, RateLimits};
    let now = t0();
    let keyed = |key: &str| {
        let mut task = task("batch", "email", 0, now);
        task.rate_keys = RateKeys::parse("rate_keys", &[(key.to_owned(), 3)].into()).unwrap();
        task
    };
    // Submitted while nothing limited them: not governed, so the plain claim would take them.
    let covered = [
        keyed("domain:a.ru"),
        keyed("domain:b.ru"),
        keyed("domain:a.ru"),
    ];
    let uncovered = keyed("domain:a.com");
    let literal = keyed("domain:x_y.ru");
    let unkeyed = task("noop", "email", 0, now);
    let all = [
        covered[0].clone(),
        covered[1].clone(),
        covered[2].clone(),
        uncovered.clone(),
        literal.clone(),
        unkeyed.clone(),
    ];
    store.insert_tasks(&all).await.unwrap();
    let setting = |pattern: &str, rate: &str| RateLimitSetting {
        pattern: pattern.to_owned(),
        rate: rate.to_owned(),
        set_at: now,
        set_by: Some("ops".to_owned()),
    };
    let set = store
        .set_rate_limit(&setting("domain:*.ru", "2/s"))
        .await
        .unwrap();
    assert_eq!(
        (set.previous, set.governed),
        (None, 4),
        "a.ru twice, b.ru and x_y.ru"
    );
    // `_` is no wildcard: a pattern naming `x_y` exactly covers that key alone.
    let exact = store
        .set_rate_limit(&setting("domain:x_y.ru", "5/s"))
        .await
        .unwrap();
    assert_eq!(exact.governed, 0, "x_y.ru is governed already");
    // A limit on a name covers tasks of that name, keys or none.
    let by_name = store
        .set_rate_limit(&setting("task:noop", "1/s"))
        .await
        .unwrap();
    assert_eq!(by_name.governed, 1);
    let replaced = store
        .set_rate_limit(&setting("domain:*.ru", "3/s"))
        .await
        .unwrap();
    assert_eq!(
        (replaced.previous.as_deref(), replaced.governed),
        (Some("2/s"), 0)
    );
    let settings = store.rate_limit_settings().await.unwrap();
    let listed: Vec<(&str, &str)> = settings
        .iter()
        .map(|setting| (setting.pattern.as_str(), setting.rate.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("domain:*.ru", "3/s"),
            ("domain:x_y.ru", "5/s"),
            ("task:noop", "1/s")
        ]
    );
    assert!(
        settings
            .iter()
            .all(|setting| setting.set_at == now && setting.set_by.as_deref() == Some("ops"))
    );

    // The claim meters them now: a bucket of 3 tokens a second for each `*.ru` key takes one
    // task of cost 3 (the second of a.ru waits), the noop goes by its name's, and the `.com`
    // task freely.
    let limits = Arc::new(
        RateLimits::parse(
            "rate_limits",
            [
                ("domain:*.ru", "3/s"),
                ("domain:x_y.ru", "5/s"),
                ("task:noop", "1/s"),
            ],
        )
        .unwrap(),
    );
    let claimed = store
        .claim(&Claim {
            rate_limits: limits,
            ..claim("w", Uuid::new_v4(), &[("email", 0)], 10, now)
        })
        .await
        .unwrap();
    let mut got = leased(&claimed);
    got.sort();
    let mut expected: Vec<TaskId> = all
        .iter()
        .map(|task| task.id)
        .filter(|id| *id != covered[2].id)
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        claimed.limited_until.is_some(),
        "a.ru's second waits for tokens"
    );

    assert_eq!(
        store
            .clear_rate_limit("task:noop")
            .await
            .unwrap()
            .as_deref(),
        Some("1/s")
    );
    assert_eq!(store.clear_rate_limit("task:noop").await.unwrap(), None);
    assert_eq!(store.rate_limit_settings().await.unwrap().len(), 2);
}
