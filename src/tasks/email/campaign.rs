//! `send_campaign`, `send_email_batch`, `send_single_email`.
//!
//! A campaign fans out batches on the `email` queue. A batch sends to each of its recipients and
//! records the outcome (a `delivery` record keyed by the address: delivered, failed or deferred,
//! with the SMTP reply). A 5xx fails that recipient for good; a 4xx defers it, and the batch is
//! retried later for its deferred recipients only: a retried batch skips everyone already
//! delivered or failed, so nobody is mailed twice.
//!
//! How the batches are cut and keyed is `fan_out.rs`. A server that pushes back (421, 450,
//! 451, 452) has its domain's rate key slowed down, cluster-wide.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::EmailTasks;
use super::audience::{Audience, RecipientsFrom};
use super::content::{Content, ContentArgs, Recipient};
use super::fan_out::FanOut;
use super::relay::{Delivery, Relay};
use crate::domain::{RecordEntry, ValidationError};
use crate::worker::{TaskContext, TaskError};
use lettre::message::dkim::DkimConfig;

/// The record kind of a delivery.
pub const DELIVERY: &str = "delivery";
/// Recipients per batch unless the campaign says otherwise, and the most.
const DEFAULT_BATCH_SIZE: usize = 100;
const MAX_BATCH_SIZE: usize = 1_000;
/// A batch reports its progress at most this often (and always at its end); the tree's
/// stream is throttled anyway, and a report per recipient cost a stream message each.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignArgs {
    campaign_id: String,
    from: String,
    #[serde(default)]
    reply_to: Option<String>,
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    unsubscribe_url: Option<String>,
    #[serde(default)]
    relay: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<u64>,
    #[serde(default)]
    recipients: Option<Vec<Recipient>>,
    /// Or an import's contacts.
    #[serde(default)]
    recipients_from: Option<RecipientsFrom>,
    #[serde(default)]
    batch_size: Option<usize>,
    /// Messages per second for the whole campaign.
    #[serde(default)]
    rate: Option<f64>,
}

impl CampaignArgs {
    fn content(&self) -> ContentArgs {
        ContentArgs {
            campaign_id: self.campaign_id.clone(),
            from: self.from.clone(),
            reply_to: self.reply_to.clone(),
            subject: self.subject.clone(),
            text: self.text.clone(),
            html: self.html.clone(),
            headers: self.headers.clone(),
            unsubscribe_url: self.unsubscribe_url.clone(),
            relay: self.relay.clone(),
            retry_after_seconds: self.retry_after_seconds,
        }
    }
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchArgs {
    pub(super) content: ContentArgs,
    pub(super) recipients: Vec<Recipient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleArgs {
    campaign_id: String,
    from: String,
    #[serde(default)]
    reply_to: Option<String>,
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    unsubscribe_url: Option<String>,
    #[serde(default)]
    relay: Option<String>,
    to: String,
    #[serde(default)]
    vars: serde_json::Map<String, Value>,
}

fn invalid(error: ValidationError) -> TaskError {
    TaskError::invalid_args(error)
}

/// Checks a campaign and fans out its batches: from its inline recipients, or page by page
/// from an import's records.
pub async fn send_campaign(
    email: Arc<EmailTasks>,
    context: TaskContext,
    args: Value,
) -> Result<Value, TaskError> {
    let args: CampaignArgs = crate::tasks::parse_args(args)?;
    let content_args = args.content();
    let content = Content::parse(&content_args).map_err(invalid)?;
    email
        .relays
        .get("relay", content.relay.as_deref())
        .map_err(invalid)?;
    let batch_size = args.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(invalid(ValidationError::new(
            "batch_size",
            format!("{batch_size} is out of range 1 to {MAX_BATCH_SIZE}"),
        )));
    }
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        return Err(invalid(ValidationError::new(
            "rate",
            "must be a positive number",
        )));
    }
    let mut fan_out = FanOut::new(
        &context,
        &content_args,
        batch_size,
        args.rate,
        &email.rate_limits,
        format!("relay:{}", content.relay.as_deref().unwrap_or("default")),
    )?;
    match (args.recipients, args.recipients_from) {
        (Some(_), Some(_)) => {
            return Err(invalid(ValidationError::new(
                "recipients",
                "give recipients or recipients_from, not both",
            )));
        }
        (None, None) => {
            return Err(invalid(ValidationError::new(
                "recipients",
                "is required (or recipients_from, an import's contacts)",
            )));
        }
        (Some(recipients), None) => {
            if recipients.is_empty() {
                return Err(invalid(ValidationError::new("recipients", "is empty")));
            }
            // Every recipient once; a template variable a recipient lacks is refused before
            // anything is sent. A bad address fails that recipient only, in its batch.
            let mut seen = HashSet::new();
            let mut unique = Vec::with_capacity(recipients.len());
            for (index, recipient) in recipients.into_iter().enumerate() {
                check_variables(&content, &recipient, &format!("recipients[{index}].vars"))?;
                if seen.insert(recipient.key()) {
                    unique.push(recipient);
                }
            }
            fan_out.add(unique).await?;
        }
        (None, Some(from)) => {
            let mut audience = Audience::open(&email.api, &from).await?;
            let mut first = true;
            while let Some(page) = audience.next_page().await? {
                // An import's contacts all have its mapped fields: the first page tells
                // whether the templates fit them, before anything is sent.
                if first {
                    for recipient in &page {
                        check_variables(
                            &content,
                            recipient,
                            "recipients_from (the contacts' fields)",
                        )?;
                    }
                    first = false;
                }
                fan_out.add(page).await?;
            }
            if fan_out.is_empty() {
                return Err(invalid(ValidationError::new(
                    "recipients_from",
                    format!(
                        "the import has no contacts with the statuses {:?}",
                        from.statuses()
                    ),
                )));
            }
        }
    }
    let (recipients, batches) = fan_out.finish().await?;
    Ok(json!({
        "campaign_id": content.campaign_id,
        "recipients": recipients,
        "batches": batches,
    }))
}

/// Refuses a recipient the templates need a variable for that it lacks.
fn check_variables(content: &Content, recipient: &Recipient, field: &str) -> Result<(), TaskError> {
    let missing = content.missing_variables(recipient);
    if missing.is_empty() {
        return Ok(());
    }
    Err(invalid(ValidationError::new(
        field,
        format!(
            "the templates use undefined variables: {}",
            missing.join(", ")
        ),
    )))
}

/// How a batch's recipients fared.
#[derive(Debug, Default)]
struct Tally {
    delivered: usize,
    failed: usize,
    deferred: Vec<Recipient>,
    skipped: usize,
    /// The rate key of the domain whose server pushed back on the last message, if it did.
    pushed_back: Option<String>,
}

fn record(recipient: &Recipient, status: &str, data: Value) -> Result<RecordEntry, TaskError> {
    RecordEntry::parse(
        "record",
        DELIVERY,
        &recipient.key(),
        status,
        &data.to_string(),
    )
    .map_err(|error| TaskError::permanent("internal", error.to_string()))
}

/// Sends to one recipient and says how it went, as its record.
async fn deliver(
    relay: &Relay,
    content: &Content,
    dkim: Option<&DkimConfig>,
    recipient: &Recipient,
    attempt: u32,
    tally: &mut Tally,
) -> Result<RecordEntry, TaskError> {
    let (address, message) = match content.message(recipient, dkim) {
        Ok(message) => message,
        Err(why) => {
            tally.failed += 1;
            return record(
                recipient,
                "failed",
                json!({"error": why, "attempt": attempt}),
            );
        }
    };
    let message_id = message
        .headers()
        .get_raw("Message-ID")
        .unwrap_or_default()
        .to_owned();
    let delivery = relay.send(&address, message).await;
    if matches!(delivery, Delivery::PushedBack(_)) {
        tally.pushed_back = recipient.domain_key();
    }
    match delivery {
        Delivery::Accepted(reply) => {
            tally.delivered += 1;
            record(
                recipient,
                "delivered",
                json!({"smtp": reply, "message_id": message_id, "attempt": attempt}),
            )
        }
        Delivery::Rejected(reply) => {
            tally.failed += 1;
            record(
                recipient,
                "failed",
                json!({"smtp": reply, "attempt": attempt}),
            )
        }
        Delivery::Deferred(reply) | Delivery::PushedBack(reply) => {
            tally.deferred.push(recipient.clone());
            record(
                recipient,
                "deferred",
                json!({"smtp": reply, "attempt": attempt}),
            )
        }
    }
}

/// Sends to each recipient not yet delivered or failed, recording each outcome.
async fn send_to(
    email: &EmailTasks,
    context: &TaskContext,
    content: &Content,
    recipients: &[Recipient],
) -> Result<Tally, TaskError> {
    let relay = email
        .relays
        .get("relay", content.relay.as_deref())
        .map_err(invalid)?;
    // A first attempt has nothing recorded yet (a campaign lists each address once); a later
    // one skips whoever an earlier attempt delivered or failed.
    let mut settled = HashSet::new();
    if context.lease.attempt > 1 {
        settled = context.recorded_keys(DELIVERY, Some("delivered")).await?;
        settled.extend(context.recorded_keys(DELIVERY, Some("failed")).await?);
    }
    let mut tally = Tally::default();
    // Inside a campaign the campaign reports the total; a batch reports what it has done.
    let total = if context.root_id == context.task_id {
        recipients.len() as u64
    } else {
        0
    };
    let mut last_report = Instant::now();
    for (index, recipient) in recipients.iter().enumerate() {
        if context.is_stop_requested() {
            // The time limit or a cancellation: what is recorded stays; a retry sends the rest.
            return Err(TaskError::retryable(
                "stopped",
                format!("stopped after {index} of {} recipients", recipients.len()),
            ));
        }
        if settled.contains(&recipient.key()) {
            tally.skipped += 1;
        } else {
            let entry = deliver(
                &relay,
                content,
                email.dkim.as_deref(),
                recipient,
                context.lease.attempt,
                &mut tally,
            )
            .await?;
            // One record per recipient as soon as its outcome is known: after a crash, a
            // recipient recorded as delivered is never mailed again.
            context.record(vec![entry]).await?;
            // A domain that pushes back is sent to more slowly by every worker.
            if let Some(key) = tally.pushed_back.take() {
                context.slow_down(key);
            }
        }
        let done = index as u64 + 1;
        if index + 1 == recipients.len() {
            // The last count must arrive; the others may be dropped under load.
            let message = format!("{done} of {} recipients", recipients.len());
            context.report_progress(done, total, message).await?;
        } else if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let message = format!("{done} of {} recipients", recipients.len());
            context.progress(done, total, message);
        }
    }
    Ok(tally)
}

/// Sends one batch of a campaign.
pub async fn send_email_batch(
    email: Arc<EmailTasks>,
    context: TaskContext,
    args: Value,
) -> Result<Value, TaskError> {
    let args: BatchArgs = crate::tasks::parse_args(args)?;
    let content = Content::parse(&args.content).map_err(invalid)?;
    let tally = send_to(&email, &context, &content, &args.recipients).await?;
    finish(&email, &context, &args.content, tally).await
}

/// Sends one message: a batch of one, with the same records and retries.
pub async fn send_single_email(
    email: Arc<EmailTasks>,
    context: TaskContext,
    args: Value,
) -> Result<Value, TaskError> {
    let args: SingleArgs = crate::tasks::parse_args(args)?;
    let content_args = ContentArgs {
        campaign_id: args.campaign_id,
        from: args.from,
        reply_to: args.reply_to,
        subject: args.subject,
        text: args.text,
        html: args.html,
        headers: args.headers,
        unsubscribe_url: args.unsubscribe_url,
        relay: args.relay,
        retry_after_seconds: None,
    };
    let content = Content::parse(&content_args).map_err(invalid)?;
    let recipient = Recipient {
        email: args.to,
        vars: args.vars,
    };
    check_variables(&content, &recipient, "vars")?;
    let tally = send_to(&email, &context, &content, std::slice::from_ref(&recipient)).await?;
    finish(&email, &context, &content_args, tally).await
}

/// Ends a batch: retried later while recipients are deferred and retries remain; on the last
/// attempt, deferred recipients are recorded as failed.
async fn finish(
    email: &EmailTasks,
    context: &TaskContext,
    content: &ContentArgs,
    tally: Tally,
) -> Result<Value, TaskError> {
    if !tally.deferred.is_empty() {
        if context.retries < context.max_retries {
            let delay = content
                .retry_after_seconds
                .map(Duration::from_secs)
                .unwrap_or(email.retry_deferred_after);
            return Err(TaskError::retry_after(
                "smtp_deferred",
                format!(
                    "{} recipients deferred; retrying them",
                    tally.deferred.len()
                ),
                delay,
            ));
        }
        let gave_up: Vec<RecordEntry> = tally
            .deferred
            .iter()
            .map(|recipient| {
                record(
                    recipient,
                    "failed",
                    json!({"error": format!("still deferred after {} attempts", context.lease.attempt)}),
                )
            })
            .collect::<Result<_, _>>()?;
        context.record(gave_up).await?;
    }
    Ok(json!({
        "delivered": tally.delivered,
        "failed": tally.failed + tally.deferred.len(),
        "skipped": tally.skipped,
    }))
}
