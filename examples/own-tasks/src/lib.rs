//! VashSender's own tasks, written against celeritas' worker API.
//!
//! `register` is what the binary hands to `celeritas::cli::main_with_tasks`; a name already
//! taken (by a built-in, or twice) stops the worker at start.

use celeritas::domain::ValidationError;
use celeritas::tasks::parse_args;
use celeritas::worker::{Registry, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{Value, json};

/// Adds the tasks of this crate.
pub fn register(registry: &mut Registry) -> Result<(), ValidationError> {
    registry.register_fn("vashsender.campaign_report", campaign_report)?;
    Ok(())
}

/// `vashsender.campaign_report`'s arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportArgs {
    /// The campaign reported on.
    campaign_id: String,
    /// Each recipient's delivery status, as the campaign's records say.
    deliveries: Vec<Delivery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    email: String,
    status: String,
}

/// Counts a campaign's deliveries by status, reporting progress as it goes and recording one
/// `report_line` per status. Arguments that do not parse fail the attempt for good, naming the
/// field (retrying cannot fix them).
async fn campaign_report(context: TaskContext, args: Value) -> Result<Value, TaskError> {
    let args: ReportArgs = parse_args(args)?;
    let total = args.deliveries.len() as u64;
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for (done, delivery) in args.deliveries.iter().enumerate() {
        if context.is_stop_requested() {
            return Err(TaskError::retryable(
                "stopped",
                "asked to stop; the report starts over",
            ));
        }
        if !delivery.email.contains('@') {
            return Err(TaskError::permanent(
                "invalid_args",
                format!(
                    "deliveries[{done}].email: {:?} is not an address",
                    delivery.email
                ),
            ));
        }
        *by_status.entry(delivery.status.clone()).or_default() += 1;
        context.progress(done as u64 + 1, total, "counting deliveries");
    }
    let records = by_status
        .iter()
        .map(|(status, count)| celeritas::domain::RecordEntry {
            kind: "report_line".to_owned(),
            key: format!("{}:{status}", args.campaign_id),
            status: status.clone(),
            data: Some(celeritas::domain::JsonText::from_value(
                &json!({ "count": count }),
            )),
        })
        .collect();
    context.record(records).await?;
    Ok(json!({ "campaign_id": args.campaign_id, "by_status": by_status }))
}
