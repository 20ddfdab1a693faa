//! A campaign's recipients becoming `send_email_batch` children.
//!
//! Every batch carries the rate key of its relay (`relay:NAME`, `relay:default`) costing its
//! recipients, and the `domain:NAME` key of each recipient domain in it costing that domain's
//! recipients (a batch is cut early rather than hold more domains than a task has keys), so a
//! limit set through the API later covers batches already queued. The recipients of a domain
//! whose key a limit this worker knows of (its configuration's) covers go in batches of their
//! own, of at most a fifth of a second's worth of that limit: the coordinator then leases them
//! smoothly at that rate. The batches take their campaign's group (a child inherits its
//! parent's).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::campaign::BatchArgs;
use super::content::{ContentArgs, Recipient};
use crate::domain::{JsonText, MAX_RATE_KEYS, RateKeys, RateLimits, StartAt, TaskName, TaskSpec};
use crate::worker::{TaskContext, TaskError};

/// Children submitted per message, and the most recipients they may hold together.
const SUBMIT_CHUNK: usize = 500;
const SUBMIT_RECIPIENTS: usize = 20_000;
/// The most recipient domains one batch holds: a task's keys, less its relay's.
const MAX_BATCH_DOMAINS: usize = MAX_RATE_KEYS - 1;

/// A campaign's batches as its recipients arrive: cut at `batch_size`, numbered in order (the
/// idempotency keys a retried campaign submits them under again), submitted a chunk at a time.
pub(super) struct FanOut<'a> {
    context: &'a TaskContext,
    content_args: &'a ContentArgs,
    name: TaskName,
    batch_size: usize,
    rate: Option<f64>,
    rate_limits: &'a RateLimits,
    /// The rate key of the campaign's relay.
    relay_key: String,
    /// Recipients of rate-limited domains not yet in a batch, by `domain:NAME` key, with the
    /// size their batches are cut at.
    by_domain: BTreeMap<String, (usize, Vec<Recipient>)>,
    /// Other recipients not yet in a batch.
    pending: Vec<Recipient>,
    /// The domain keys of `pending`.
    pending_domains: BTreeSet<String>,
    /// Batches not yet submitted.
    specs: Vec<TaskSpec>,
    /// Recipients in batches so far.
    recipients: usize,
    /// Batches cut so far.
    batches: usize,
}

impl<'a> FanOut<'a> {
    /// A fan-out of `send_email_batch` children of `context`'s campaign.
    pub(super) fn new(
        context: &'a TaskContext,
        content_args: &'a ContentArgs,
        batch_size: usize,
        rate: Option<f64>,
        rate_limits: &'a RateLimits,
        relay_key: String,
    ) -> Result<Self, TaskError> {
        Ok(Self {
            context,
            content_args,
            name: TaskName::parse("name", "send_email_batch")
                .map_err(|error| TaskError::permanent("internal", error.to_string()))?,
            batch_size,
            rate,
            rate_limits,
            relay_key,
            by_domain: BTreeMap::new(),
            pending: Vec::new(),
            pending_domains: BTreeSet::new(),
            specs: Vec::new(),
            recipients: 0,
            batches: 0,
        })
    }

    /// Whether no recipient has been added.
    pub(super) fn is_empty(&self) -> bool {
        self.recipients == 0
            && self.pending.is_empty()
            && self.by_domain.values().all(|(_, group)| group.is_empty())
    }

    /// Adds recipients, cutting batches as they fill.
    pub(super) async fn add(&mut self, recipients: Vec<Recipient>) -> Result<(), TaskError> {
        for recipient in recipients {
            let domain_key = recipient.domain_key();
            let limit = domain_key
                .as_ref()
                .and_then(|key| Some((key, self.rate_limits.rate_for(key)?)));
            let Some((key, rate)) = limit else {
                if let Some(key) = domain_key.as_ref()
                    && !self.pending_domains.contains(key)
                    && self.pending_domains.len() >= MAX_BATCH_DOMAINS
                {
                    self.cut_pending().await?;
                }
                if let Some(key) = domain_key {
                    self.pending_domains.insert(key);
                }
                self.pending.push(recipient);
                if self.pending.len() >= self.batch_size {
                    self.cut_pending().await?;
                }
                continue;
            };
            let size = ((rate.value() / 5.0).ceil() as usize).clamp(1, self.batch_size);
            let (size, group) = self
                .by_domain
                .entry(key.clone())
                .or_insert_with(|| (size, Vec::new()));
            group.push(recipient);
            if group.len() >= *size {
                let batch = std::mem::take(group);
                self.cut(batch).await?;
            }
        }
        Ok(())
    }

    /// Makes a batch of the recipients of domains without a known limit.
    async fn cut_pending(&mut self) -> Result<(), TaskError> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_domains.clear();
        self.cut(batch).await
    }

    /// Makes a batch of `batch`.
    async fn cut(&mut self, batch: Vec<Recipient>) -> Result<(), TaskError> {
        let index = self.batches;
        let mut domains: BTreeMap<String, u32> = BTreeMap::new();
        for recipient in &batch {
            if let Some(key) = recipient.domain_key() {
                *domains.entry(key).or_default() += 1;
            }
        }
        let batch_args = BatchArgs {
            content: self.content_args.clone(),
            recipients: batch,
        };
        let count = batch_args.recipients.len();
        let batch_args = serde_json::to_value(&batch_args)
            .map_err(|error| TaskError::permanent("internal", error.to_string()))?;
        let mut spec = TaskSpec::new(self.name.clone(), JsonText::from_value(&batch_args));
        let cost = u32::try_from(count).unwrap_or(u32::MAX);
        let mut rate_keys = RateKeys::default();
        rate_keys.add(self.relay_key.clone(), cost);
        for (key, recipients) in domains {
            rate_keys.add(key, recipients);
        }
        spec.rate_keys = rate_keys;
        // A retried campaign submits each batch once.
        spec.idempotency_key = Some(format!("{}:batch:{index}", self.context.task_id));
        // A campaign rate spaces the batches out in time.
        if let Some(rate) = self.rate {
            let offset = self.recipients as f64 / rate;
            if offset > 0.0 {
                spec.start = StartAt::After(Duration::from_secs_f64(offset));
            }
        }
        self.specs.push(spec);
        self.batches += 1;
        self.recipients += count;
        if self.specs.len() >= SUBMIT_CHUNK
            || self.specs.len() * self.batch_size >= SUBMIT_RECIPIENTS
        {
            self.submit().await?;
        }
        Ok(())
    }

    async fn submit(&mut self) -> Result<(), TaskError> {
        // The campaign's progress is the tree's: its total so far, and each batch's
        // recipients done.
        self.context.progress(
            0,
            self.recipients as u64,
            format!("{} recipients in {} batches", self.recipients, self.batches),
        );
        if !self.specs.is_empty() {
            self.context
                .submit_children(std::mem::take(&mut self.specs))
                .await?;
        }
        Ok(())
    }

    /// Cuts the last batch and submits what is left; answers the recipients and batches.
    pub(super) async fn finish(mut self) -> Result<(usize, usize), TaskError> {
        for (_, group) in std::mem::take(&mut self.by_domain).into_values() {
            if !group.is_empty() {
                self.cut(group).await?;
            }
        }
        if !self.pending.is_empty() {
            self.cut_pending().await?;
        }
        self.submit().await?;
        self.context
            .report_progress(
                0,
                self.recipients as u64,
                format!("{} recipients in {} batches", self.recipients, self.batches),
            )
            .await?;
        Ok((self.recipients, self.batches))
    }
}
