//! Small tasks for checking the pipeline, tests and benchmarks.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::RecordEntry;
use crate::worker::{Registry, TaskContext, TaskError};

/// Registers `noop`, `sleep`, `fail`, `emit_records` and `test_celery`.
pub fn register(registry: &mut Registry) {
    let names_are_valid = registry
        .register_fn("noop", noop)
        .and_then(|registry| registry.register_fn("sleep", sleep))
        .and_then(|registry| registry.register_fn("fail", fail))
        .and_then(|registry| registry.register_fn("emit_records", emit_records))
        .and_then(|registry| registry.register_fn("test_celery", test_celery));
    debug_assert!(names_are_valid.is_ok(), "built-in task names are valid");
}

/// Returns its arguments.
async fn noop(_context: TaskContext, args: Value) -> Result<Value, TaskError> {
    Ok(args)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
    #[serde(default)]
    ignore_stop: bool,
}

/// Sleeps `{"ms": N}` milliseconds, or less if asked to stop: a task that honours its soft time
/// limit and cancellation. With `"ignore_stop": true` it does not, and only the hard time limit
/// ends it early.
async fn sleep(context: TaskContext, args: Value) -> Result<Value, TaskError> {
    let SleepArgs { ms, ignore_stop } = crate::tasks::parse_args(args)?;
    let started = tokio::time::Instant::now();
    let nap = tokio::time::sleep(Duration::from_millis(ms));
    let interrupted = if ignore_stop {
        nap.await;
        false
    } else {
        tokio::select! {
            _ = nap => false,
            _ = context.stop_requested() => true,
        }
    };
    Ok(json!({
        "slept_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "interrupted": interrupted,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default = "default_fail_kind")]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default = "default_true")]
    retryable: bool,
    times: Option<u32>,
    retry_after_ms: Option<u64>,
}

fn default_fail_kind() -> String {
    "requested_failure".to_owned()
}

fn default_true() -> bool {
    true
}

/// Fails as asked: `{"kind", "message", "retryable" (default true), "retry_after_ms"}`. With
/// `"times": N` only the first N attempts fail and the next succeeds, which shows retries
/// working.
async fn fail(context: TaskContext, args: Value) -> Result<Value, TaskError> {
    let args: FailArgs = crate::tasks::parse_args(args)?;
    if args.times.is_some_and(|times| context.retries >= times) {
        return Ok(json!({"succeeded_after_retries": context.retries}));
    }
    let message = if args.message.is_empty() {
        format!("failed on request (retry {})", context.retries)
    } else {
        args.message
    };
    Err(match (args.retryable, args.retry_after_ms) {
        (false, _) => TaskError::permanent(args.kind, message),
        (true, Some(ms)) => TaskError::retry_after(args.kind, message, Duration::from_millis(ms)),
        (true, None) => TaskError::retryable(args.kind, message),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRecordsArgs {
    #[serde(default = "default_record_kind")]
    kind: String,
    count: usize,
    #[serde(default = "default_record_status")]
    status: String,
    #[serde(default)]
    skip_recorded: bool,
}

fn default_record_kind() -> String {
    "item".to_owned()
}

fn default_record_status() -> String {
    "ok".to_owned()
}

/// Emits `count` records `{kind}-{i}` with `status`, reporting progress; with
/// `"skip_recorded": true` it first asks which keys the tree already has and skips them, as a
/// retried batch does.
async fn emit_records(context: TaskContext, args: Value) -> Result<Value, TaskError> {
    let args: EmitRecordsArgs = crate::tasks::parse_args(args)?;
    let done = if args.skip_recorded {
        context.recorded_keys(&args.kind, None).await?
    } else {
        Default::default()
    };
    let mut emitted = 0;
    let mut batch = Vec::new();
    for index in 0..args.count {
        let key = format!("{}-{index}", args.kind);
        if done.contains(&key) {
            continue;
        }
        batch.push(RecordEntry::parse(
            "record",
            &args.kind,
            &key,
            &args.status,
            &json!({ "index": index }).to_string(),
        )?);
        if batch.len() == 1_000 {
            emitted += batch.len();
            context.record(std::mem::take(&mut batch)).await?;
            context.progress(emitted as u64, args.count as u64, "records emitted");
        }
    }
    emitted += batch.len();
    context.record(batch).await?;
    context.progress(emitted as u64, args.count as u64, "records emitted");
    Ok(json!({"emitted": emitted, "skipped": done.len()}))
}

/// The seed's check that the pipeline works end to end.
async fn test_celery(context: TaskContext, _args: Value) -> Result<Value, TaskError> {
    tracing::info!(task = %context.task_id, "test_celery ran");
    Ok(json!({"message": "celeritas is working", "task_id": context.task_id.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskName;

    fn context() -> TaskContext {
        TaskContext::detached(TaskName::parse("name", "sleep").unwrap())
    }

    #[tokio::test]
    async fn sleep_refuses_arguments_it_does_not_know() {
        let error = sleep(context(), json!({"seconds": 1})).await.unwrap_err();
        assert_eq!(error.kind, "invalid_args");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_sleeps_for_the_time_asked() {
        let result = sleep(context(), json!({"ms": 1500})).await.unwrap();
        assert_eq!(result["slept_ms"], 1500);
        assert_eq!(result["interrupted"], false);
    }
}
