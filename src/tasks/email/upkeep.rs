//! The seed's periodic campaign upkeep: `monitor_campaign_progress`, `cleanup_stuck_campaigns`
//! and `cleanup_smtp_connections`. They run on a worker like any task and act through the
//! coordinator's public API (`ListTasks`, `RequeueTask`, `FailTask`, `CloseIdleConnections`),
//! so an operator can do by hand exactly what they do.
//!
//! A campaign is running while its tree has unfinished `send_email_batch` tasks; a batch has
//! stopped moving when it has been running without a progress report for
//! `[campaigns] stall_after` (a batch reports as its recipients are sent, at most every 100 ms).
//! The lists leave the tasks' args out (`with_payloads: false`): batches carry recipients.
//! Controls reach the workers connected to the coordinator this worker dials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{CampaignSettings, StuckPolicy};
use crate::domain::{
    ErrorKind, QueueName, RecordEntry, TaskId, TaskName, TaskQuery, TaskRecord, TaskState,
};
use crate::grpc::client::{ClientError, CoordinatorClient};
use crate::tasks::api::{CoordinatorApi, api_error};
use crate::worker::{TaskContext, TaskError};

/// The record kind `monitor_campaign_progress` writes, one per running campaign.
pub const CAMPAIGN_STATUS: &str = "campaign_status";
/// The record kind `cleanup_stuck_campaigns` writes, one per batch attempt it ended.
pub const STUCK_BATCH: &str = "stuck_batch";

/// The most batches one pass looks at.
const MAX_BATCHES: u32 = 10_000;
/// How long workers get to answer `CloseIdleConnections`.
const CONTROL_WAIT: Duration = Duration::from_secs(5);

/// What the upkeep tasks share: where the coordinator is and the `[campaigns]` policy.
pub struct Upkeep {
    api: CoordinatorApi,
    settings: CampaignSettings,
}

impl Upkeep {
    /// Upkeep through `api`.
    pub fn new(api: CoordinatorApi, settings: &CampaignSettings) -> Self {
        Self {
            api,
            settings: settings.clone(),
        }
    }

    async fn client(&self) -> Result<CoordinatorClient, TaskError> {
        self.api.client().await
    }
}

/// Publishes each running campaign's progress as a `campaign_status` record (and in the
/// result), flagging the campaigns with batches that stopped moving.
pub async fn monitor_campaign_progress(
    upkeep: Arc<Upkeep>,
    context: TaskContext,
    _args: Value,
) -> Result<Value, TaskError> {
    let mut client = upkeep.client().await?;
    let batch = batch_name()?;
    let unfinished = client
        .list_tasks(&TaskQuery {
            names: vec![batch.clone()],
            limit: MAX_BATCHES,
            ..TaskQuery::default()
        })
        .await
        .map_err(api_error)?;
    let stalled = stalled_batches(&mut client, &upkeep.settings).await?;
    let roots: std::collections::BTreeSet<TaskId> =
        unfinished.iter().map(|task| task.root_id).collect();
    let mut campaigns = Vec::new();
    let mut records = Vec::new();
    for root in roots {
        let batches = client
            .list_tasks(&TaskQuery {
                root: Some(root),
                names: vec![batch.clone()],
                states: TaskState::ALL.to_vec(),
                limit: MAX_BATCHES,
                ..TaskQuery::default()
            })
            .await
            .map_err(api_error)?;
        let campaign = client.task(root).await.map_err(api_error)?;
        let stalled_here: Vec<String> = stalled
            .iter()
            .filter(|task| task.root_id == root)
            .map(|task| task.id.to_string())
            .collect();
        let status = campaign_status(&campaign, &batches, stalled_here);
        if status["stalled"] == json!(true) {
            tracing::warn!(campaign = %root, stalled = %status["stalled_batches"], "a campaign stopped moving");
        }
        records.push(entry(
            CAMPAIGN_STATUS,
            &root.to_string(),
            if status["stalled"] == json!(true) {
                "stalled"
            } else {
                "moving"
            },
            &status,
        )?);
        campaigns.push(status);
    }
    context.record(records).await?;
    Ok(json!({
        "campaigns": campaigns,
        "stall_after_seconds": upkeep.settings.stall_after.as_secs(),
    }))
}

/// Requeues or fails (by `[campaigns] stuck_policy`) every batch that stopped moving, and
/// records what it did with each as a `stuck_batch` record.
pub async fn cleanup_stuck_campaigns(
    upkeep: Arc<Upkeep>,
    context: TaskContext,
    _args: Value,
) -> Result<Value, TaskError> {
    let mut client = upkeep.client().await?;
    let stalled = stalled_batches(&mut client, &upkeep.settings).await?;
    let policy = upkeep.settings.stuck_policy;
    let reason = format!(
        "no progress for {} (cleanup_stuck_campaigns)",
        humantime::format_duration(upkeep.settings.stall_after)
    );
    let mut actions = Vec::new();
    for task in stalled {
        let outcome = client
            .intervene(task.id, task.attempt, policy == StuckPolicy::Fail, &reason)
            .await;
        let (status, detail) = match outcome {
            Ok(after) => (
                match (policy, after.state) {
                    (StuckPolicy::Requeue, TaskState::Failed) => "failed_no_retries_left",
                    (StuckPolicy::Requeue, _) => "requeued",
                    (StuckPolicy::Fail, _) => "failed",
                },
                String::new(),
            ),
            // The batch moved on (finished, or was requeued by someone else) since it was listed.
            Err(ClientError::Status {
                kind: ErrorKind::FailedPrecondition,
                message,
            }) => ("skipped", message),
            Err(error) => return Err(api_error(error)),
        };
        let action = json!({
            "task_id": task.id.to_string(),
            "root_id": task.root_id.to_string(),
            "attempt": task.attempt,
            "worker_id": task.worker_id.as_ref().map(ToString::to_string),
            "action": status,
            "detail": detail,
        });
        tracing::info!(batch = %task.id, attempt = task.attempt, action = status, "stuck batch");
        // Recorded at once: an error later in the loop must not lose what was already done.
        let record = entry(
            STUCK_BATCH,
            &format!("{}:{}", task.id, task.attempt),
            status,
            &action,
        )?;
        context.record(vec![record]).await?;
        actions.push(action);
    }
    Ok(json!({ "policy": policy, "batches": actions }))
}

/// Asks every worker on the `email` queue connected to this worker's coordinator to close its
/// idle pooled SMTP connections.
pub async fn cleanup_smtp_connections(
    upkeep: Arc<Upkeep>,
    _context: TaskContext,
    _args: Value,
) -> Result<Value, TaskError> {
    let mut client = upkeep.client().await?;
    let queue = QueueName::parse("queue", "email").map_err(TaskError::invalid_args)?;
    let answers = client
        .close_idle_connections(Some(&queue), CONTROL_WAIT)
        .await
        .map_err(api_error)?;
    let workers: Vec<Value> = answers
        .into_iter()
        .map(|answer| {
            json!({
                "worker_id": answer.worker_id,
                "answered": answer.round_trip.is_some(),
                "detail": answer.detail,
            })
        })
        .collect();
    Ok(json!({ "queue": "email", "workers": workers }))
}

/// Running batches quiet for at least `stall_after`.
async fn stalled_batches(
    client: &mut CoordinatorClient,
    settings: &CampaignSettings,
) -> Result<Vec<TaskRecord>, TaskError> {
    client
        .list_tasks(&TaskQuery {
            names: vec![batch_name()?],
            states: vec![TaskState::Running],
            quiet_for: Some(settings.stall_after),
            limit: MAX_BATCHES,
            ..TaskQuery::default()
        })
        .await
        .map_err(api_error)
}

/// One campaign's progress from its root and its batches.
fn campaign_status(campaign: &TaskRecord, batches: &[TaskRecord], stalled: Vec<String>) -> Value {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for batch in batches {
        *by_state.entry(batch.state.as_str()).or_default() += 1;
    }
    let done: u64 = batches
        .iter()
        .filter_map(|batch| batch.progress.as_ref())
        .map(|progress| progress.done)
        .sum();
    let recipients = campaign
        .progress
        .as_ref()
        .map_or(0, |progress| progress.total);
    let campaign_id = campaign
        .result
        .as_ref()
        .map(|result| result.to_value()["campaign_id"].clone())
        .unwrap_or(Value::Null);
    json!({
        "root_id": campaign.id.to_string(),
        "campaign_id": campaign_id,
        "recipients": recipients,
        "recipients_done": done,
        "batches": batches.len(),
        "batches_by_state": by_state,
        "stalled": !stalled.is_empty(),
        "stalled_batches": stalled,
    })
}

fn entry(kind: &str, key: &str, status: &str, data: &Value) -> Result<RecordEntry, TaskError> {
    RecordEntry::parse("record", kind, key, status, &data.to_string())
        .map_err(|error| TaskError::permanent("internal", error.to_string()))
}

fn batch_name() -> Result<TaskName, TaskError> {
    TaskName::parse("name", "send_email_batch")
        .map_err(|error| TaskError::permanent("internal", error.to_string()))
}
