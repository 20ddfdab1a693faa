//! `fan_out`: Celery's group and chord as a task. It submits children (in batches, each with an
//! idempotency key derived from the parent, so a retried attempt submits nothing twice) and,
//! optionally, a callback that runs once every child has finished.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::{JsonText, QueueName, TaskName, TaskSpec};
use crate::worker::{Registry, TaskContext, TaskError};

/// Children submitted per message.
const BATCH: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Child {
    task: String,
    #[serde(default)]
    args: Option<Value>,
    queue: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutArgs {
    /// The children's task.
    task: String,
    /// One argument object per child; or, with `count`, every child gets `{"index": i}`.
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    count: Option<usize>,
    queue: Option<String>,
    callback: Option<Child>,
}

fn spec(field: &str, task: &str, args: &Value, queue: Option<&str>) -> Result<TaskSpec, TaskError> {
    let name = TaskName::parse(&format!("{field}.task"), task)?;
    let args = JsonText::parse(&format!("{field}.args"), &args.to_string(), usize::MAX)?;
    let mut spec = TaskSpec::new(name, args);
    spec.queue = queue
        .map(|queue| QueueName::parse(&format!("{field}.queue"), queue))
        .transpose()?;
    Ok(spec)
}

/// Submits the children, then the callback, reporting progress as it goes.
async fn fan_out(context: TaskContext, args: Value) -> Result<Value, TaskError> {
    let args: FanOutArgs = crate::tasks::parse_args(args)?;
    let each: Vec<Value> = match (args.args, args.count) {
        (Some(each), None) => each,
        (None, Some(count)) => (0..count).map(|index| json!({ "index": index })).collect(),
        _ => {
            return Err(TaskError::invalid_args(
                "give either `args` (one object per child) or `count`",
            ));
        }
    };
    let total = each.len();
    let mut specs = Vec::with_capacity(total);
    for (index, child_args) in each.iter().enumerate() {
        let mut child = spec(
            &format!("args[{index}]"),
            &args.task,
            child_args,
            args.queue.as_deref(),
        )?;
        child.idempotency_key = Some(format!("{}:child:{index}", context.task_id));
        specs.push(child);
    }
    let callback = args
        .callback
        .map(|callback| {
            spec(
                "callback",
                &callback.task,
                callback.args.as_ref().unwrap_or(&json!({})),
                callback.queue.as_deref(),
            )
        })
        .transpose()?;
    let mut submitted = 0;
    let mut callback_id = None;
    let mut batches = specs.chunks(BATCH).peekable();
    while let Some(batch) = batches.next() {
        let last = batches.peek().is_none();
        match (&callback, last) {
            (Some(callback), true) => {
                let (_, id) = context
                    .submit_children_then(batch.to_vec(), callback.clone())
                    .await?;
                callback_id = Some(id);
            }
            _ => {
                context.submit_children(batch.to_vec()).await?;
            }
        }
        submitted += batch.len();
        context.progress(submitted as u64, total as u64, "children submitted");
    }
    if total == 0
        && let Some(callback) = callback
    {
        let (_, id) = context.submit_children_then(Vec::new(), callback).await?;
        callback_id = Some(id);
    }
    Ok(json!({
        "children": submitted,
        "callback": callback_id.map(|id| id.to_string()),
    }))
}

/// Registers `fan_out`.
pub fn register(registry: &mut Registry) {
    let valid = registry.register_fn("fan_out", fan_out);
    debug_assert!(valid.is_ok(), "built-in task names are valid");
}
