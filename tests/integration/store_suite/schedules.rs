//! Schedules: put, listed, paused and removed; each tick fired once.

use super::*;
use celeritas::domain::{Schedule, ScheduleSource, TaskSpec, Timing};

on_both_stores!(
    schedules_are_put_listed_paused_and_removed,
    a_schedule_ticks_once_however_many_coordinators_try,
);

fn schedule(name: &str, timing: Timing, next_run_at: DateTime<Utc>) -> Schedule {
    let mut task = TaskSpec::new(
        TaskName::parse("name", "cleanup").unwrap(),
        JsonText::parse("args", r#"{"older_than": 3600}"#, 1024).unwrap(),
    );
    task.queue = Some(queue("upkeep"));
    task.priority = Priority::parse("priority", 4).unwrap();
    task.max_retries = Some(1);
    task.hard_time_limit = Some(Duration::from_secs(90));
    Schedule {
        name: name.to_owned(),
        task,
        timing,
        paused: false,
        next_run_at: Some(next_run_at),
        last_run_at: None,
        last_task_id: None,
        source: ScheduleSource::Api,
    }
}

fn every(seconds: u64) -> Timing {
    Timing::every("every", Duration::from_secs(seconds)).unwrap()
}

async fn schedules_are_put_listed_paused_and_removed(store: Arc<dyn Store>) {
    let now = t0();
    let hourly = Timing::cron("cron", "0 * * * *", "timezone", "Europe/Paris").unwrap();
    store
        .put_schedule(&schedule("nightly", hourly.clone(), now))
        .await
        .unwrap();
    let mut config = schedule("cleanup", every(60), now);
    config.source = ScheduleSource::Config;
    store.put_schedule(&config).await.unwrap();

    let listed = store.schedules().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|each| each.name.as_str()).collect();
    assert_eq!(names, vec!["cleanup", "nightly"], "by name");
    let (cleanup, nightly) = (&listed[0], &listed[1]);
    assert_eq!(cleanup.timing, every(60));
    assert_eq!(cleanup.source, ScheduleSource::Config);
    assert_eq!(nightly.timing, hourly);
    assert_eq!(nightly.timing.timezone_name(), "Europe/Paris");
    assert_eq!(nightly.source, ScheduleSource::Api);
    assert_eq!(nightly.next_run_at, Some(now));
    assert!(!nightly.paused);
    assert_eq!(nightly.task.name.as_str(), "cleanup");
    assert_eq!(nightly.task.args.to_value()["older_than"], 3600);
    assert_eq!(nightly.task.queue, Some(queue("upkeep")));
    assert_eq!(nightly.task.priority.value(), 4);
    assert_eq!(nightly.task.max_retries, Some(1));
    assert_eq!(nightly.task.hard_time_limit, Some(Duration::from_secs(90)));
    assert_eq!(nightly.task.soft_time_limit, None);

    // Pausing keeps the next tick; resuming sets it.
    let resume_at = after(now, Duration::from_secs(600));
    assert!(
        store
            .pause_schedule("nightly", true, resume_at)
            .await
            .unwrap()
    );
    let nightly = store.schedules().await.unwrap().remove(1);
    assert!(nightly.paused);
    assert_eq!(nightly.next_run_at, Some(now));
    assert!(
        store
            .pause_schedule("nightly", false, resume_at)
            .await
            .unwrap()
    );
    let nightly = store.schedules().await.unwrap().remove(1);
    assert!(!nightly.paused);
    assert_eq!(nightly.next_run_at, Some(resume_at));
    assert!(!store.pause_schedule("missing", true, now).await.unwrap());

    // Putting again replaces the timing.
    store
        .put_schedule(&schedule("nightly", every(30), resume_at))
        .await
        .unwrap();
    assert_eq!(store.schedules().await.unwrap()[1].timing, every(30));

    assert!(store.delete_schedule("cleanup").await.unwrap());
    assert!(!store.delete_schedule("cleanup").await.unwrap(), "gone");
    let names: Vec<String> = store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|each| each.name)
        .collect();
    assert_eq!(names, vec!["nightly".to_owned()]);
}

async fn a_schedule_ticks_once_however_many_coordinators_try(store: Arc<dyn Store>) {
    let now = t0();
    let next = after(now, Duration::from_secs(60));
    store
        .put_schedule(&schedule("cleanup", every(60), now))
        .await
        .unwrap();
    let first = task("cleanup", "upkeep", 0, now);
    let second = task("cleanup", "upkeep", 0, now);
    assert!(
        store
            .fire_schedule("cleanup", now, next, Some(&first), now)
            .await
            .unwrap()
    );
    // Another coordinator saw the same tick: the compare-and-set refuses it, and its task is
    // not submitted.
    assert!(
        !store
            .fire_schedule("cleanup", now, next, Some(&second), now)
            .await
            .unwrap()
    );
    assert_eq!(state(&store, first.id).await, TaskState::Pending);
    assert!(store.task(second.id).await.unwrap().is_none());
    let ticked = store.schedules().await.unwrap().remove(0);
    assert_eq!(ticked.next_run_at, Some(next));
    assert_eq!(ticked.last_run_at, Some(now));
    assert_eq!(ticked.last_task_id, Some(first.id));

    // Putting the schedule again keeps when it last ticked.
    store
        .put_schedule(&schedule("cleanup", every(60), next))
        .await
        .unwrap();
    let kept = store.schedules().await.unwrap().remove(0);
    assert_eq!(kept.last_run_at, Some(now));
    assert_eq!(kept.last_task_id, Some(first.id));

    // A tick without a task (nothing to submit) still moves on, keeping the last task.
    let after_next = after(next, Duration::from_secs(60));
    assert!(
        store
            .fire_schedule("cleanup", next, after_next, None, next)
            .await
            .unwrap()
    );
    let moved = store.schedules().await.unwrap().remove(0);
    assert_eq!(moved.next_run_at, Some(after_next));
    assert_eq!(moved.last_run_at, Some(next));
    assert_eq!(moved.last_task_id, Some(first.id));

    // A paused schedule does not tick, nor does one that is gone.
    assert!(
        store
            .pause_schedule("cleanup", true, after_next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .fire_schedule("cleanup", after_next, next, Some(&second), after_next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .fire_schedule("missing", now, next, Some(&second), now)
            .await
            .unwrap()
    );
    assert!(store.task(second.id).await.unwrap().is_none());
}
