//! The rate-limited claim, the same way on both databases: after a claim's plain part, a
//! worker with room left is offered the rate-limited tasks of its queues and names, in service
//! order, each only while every limited key it carries has a token left in its bucket; a lease
//! takes the task's costs from those buckets. Buckets are rows of `rate_buckets`, locked in key
//! order in the claim's transaction, so every coordinator on the database shares them and the
//! limit holds cluster-wide.
//!
//! A bucket holds at most a second's worth of tokens (at least one) and starts with one. A
//! lease may take it below zero (a batch of 40 recipients against a bucket of 20), so the rate
//! over time is exact and a bucket that went negative lends nothing until it has refilled.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::backend::Database;
use super::encoding::rate_keys_from_json;
use super::row::{Columns, lease_of};
use super::statements::{Param, Statements};
use super::{Claim, Claimed, StoreError};
use crate::domain::{Lease, Rate, TaskId};

/// Thousandths of a token: buckets are kept in whole numbers.
const SCALE: f64 = 1000.0;

/// A bucket as read and refilled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: Rate,
    /// Tokens, in thousandths.
    tokens: i64,
}

impl Bucket {
    /// Whether a lease may take from it now.
    fn has_room(&self) -> bool {
        self.tokens >= SCALE as i64
    }

    /// How long until it has room again.
    fn until_room(&self) -> chrono::Duration {
        let missing = (SCALE as i64 - self.tokens).max(0) as f64 / SCALE;
        chrono::Duration::microseconds((missing / self.rate.value() * 1e6).ceil() as i64 + 1)
    }
}

/// The tokens of a bucket read at `updated_at`, refilled up to `now`.
fn refilled(rate: Rate, tokens: i64, updated_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let elapsed = (now - updated_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0) as f64
        / 1e6;
    let cap = (rate.burst() * SCALE) as i64;
    // `as` saturates: a bucket untouched for years refills to its cap, no further.
    let gained = (elapsed * rate.value() * SCALE) as i64;
    tokens.saturating_add(gained).min(cap)
}

/// A candidate: its id, its place in service order and its limited keys with their costs.
struct Candidate {
    id: TaskId,
    order: (u8, i64, std::cmp::Reverse<i64>),
    expires_at: Option<DateTime<Utc>>,
    costs: Vec<(String, Rate, u32)>,
}

/// Leases up to `room` rate-limited tasks to the claim's worker.
pub(super) async fn claim_limited<B: Database>(
    backend: &B,
    claim: &Claim,
    room: u32,
) -> Result<Claimed, StoreError> {
    let mut claimed = Claimed::default();
    if room == 0 || claim.rate_limits.is_empty() {
        return Ok(claimed);
    }
    let mut transaction = backend.begin().await?;
    let mut candidates = Vec::new();
    for (queue, queue_priority) in &claim.queues {
        for name in &claim.names {
            let rows = transaction
                .fetch_all(
                    B::LEASES.limited_candidates,
                    &[
                        queue.as_str().into(),
                        name.as_str().into(),
                        i64::from(room).into(),
                    ],
                )
                .await?;
            for row in rows {
                let keys =
                    rate_keys_from_json(row.optional_text("rate_keys").ok().flatten().as_deref());
                let costs = keys
                    .iter()
                    .filter_map(|(key, cost)| {
                        claim
                            .rate_limits
                            .rate_for(key)
                            .map(|rate| (key.to_owned(), rate, cost))
                    })
                    .collect();
                candidates.push(Candidate {
                    id: row.task_id("id").map_err(StoreError::Internal)?,
                    order: (
                        *queue_priority,
                        row.integer("priority").map_err(StoreError::Internal)?,
                        std::cmp::Reverse(row.integer("seq").map_err(StoreError::Internal)?),
                    ),
                    expires_at: row
                        .optional_moment("expires_at")
                        .map_err(StoreError::Internal)?,
                    costs,
                });
            }
        }
    }
    if candidates.is_empty() {
        return Ok(claimed);
    }
    candidates.sort_by_key(|candidate| std::cmp::Reverse(candidate.order));

    // Every bucket the candidates need, locked in key order (so claims cannot deadlock) and
    // refilled to the claim's moment.
    let needed: BTreeMap<&str, Rate> = candidates
        .iter()
        .flat_map(|candidate| candidate.costs.iter())
        .map(|(key, rate, _)| (key.as_str(), *rate))
        .collect();
    let mut buckets: BTreeMap<String, Bucket> = BTreeMap::new();
    for (key, rate) in needed {
        transaction
            .execute(
                "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
                &[key.into(), (SCALE as i64).into(), claim.now.into()],
            )
            .await?;
        let row = transaction
            .fetch_optional(B::LEASES.bucket_for_update, &[key.into()])
            .await?
            .ok_or_else(|| StoreError::Internal(sqlx::Error::RowNotFound))?;
        let tokens = row.integer("tokens").map_err(StoreError::Internal)?;
        let updated_at = row.moment("updated_at").map_err(StoreError::Internal)?;
        buckets.insert(
            key.to_owned(),
            Bucket {
                rate,
                tokens: refilled(rate, tokens, updated_at, claim.now),
            },
        );
    }

    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut leases: Vec<Lease> = Vec::new();
    for candidate in candidates {
        if leases.len() as u32 + claimed.expired >= room {
            break;
        }
        if candidate
            .expires_at
            .is_some_and(|expires_at| expires_at <= claim.now)
        {
            transaction
                .execute(
                    "UPDATE tasks SET state = 'expired', finished_at = $2 \
                     WHERE id = $1 AND state = 'pending'",
                    &[candidate.id.into(), claim.now.into()],
                )
                .await?;
            claimed.expired += 1;
            continue;
        }
        let blocked: Vec<&Bucket> = candidate
            .costs
            .iter()
            .filter_map(|(key, _, _)| buckets.get(key))
            .filter(|bucket| !bucket.has_room())
            .collect();
        if let Some(wait) = blocked.iter().map(|bucket| bucket.until_room()).max() {
            let at = claim.now + wait;
            claimed.limited_until = Some(claimed.limited_until.map_or(at, |soon| soon.min(at)));
            continue;
        }
        for (key, _, cost) in &candidate.costs {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.tokens -= i64::from(*cost) * SCALE as i64;
                taken.insert(key.clone());
            }
        }
        let row = transaction
            .fetch_optional(
                B::LEASES.lease_one,
                &[
                    candidate.id.into(),
                    claim.worker.as_str().into(),
                    Param::Session(claim.session),
                    claim.now.into(),
                    claim.lease_expires_at.into(),
                ],
            )
            .await?;
        if let Some(row) = row {
            leases.push(lease_of(&row).map_err(StoreError::Internal)?);
        }
    }
    // A bucket nothing was taken from is left as it was: its refill is a function of time.
    for (key, bucket) in &buckets {
        if taken.contains(key) {
            transaction
                .execute(
                    "UPDATE rate_buckets SET tokens = $2, updated_at = $3 WHERE key = $1",
                    &[key.as_str().into(), bucket.tokens.into(), claim.now.into()],
                )
                .await?;
        }
    }
    B::commit(transaction).await?;
    claimed.tasks = leases;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_their_rate_up_to_a_second_of_it() {
        let now = Utc::now();
        let rate = Rate::per_second(50.0);
        let later = |ms| now + chrono::Duration::milliseconds(ms);
        assert_eq!(refilled(rate, 0, now, later(100)), 5_000);
        assert_eq!(
            refilled(rate, 0, now, later(10_000)),
            50_000,
            "capped at a second"
        );
        assert_eq!(
            refilled(rate, -20_000, now, later(200)),
            -10_000,
            "debt is repaid"
        );
        assert_eq!(refilled(rate, 10_000, now, now), 10_000);
        let slow = Rate::per_second(0.5);
        assert_eq!(
            refilled(slow, 0, now, later(10_000)),
            1_000,
            "at least one token"
        );
    }

    #[test]
    fn an_empty_bucket_says_when_it_has_room() {
        let bucket = Bucket {
            rate: Rate::per_second(10.0),
            tokens: -1_000,
        };
        assert!(!bucket.has_room());
        let wait = bucket.until_room().num_microseconds().unwrap();
        assert!((200_000..=200_010).contains(&wait), "{wait}");
    }
}
