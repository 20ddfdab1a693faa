//! The governed claim, the same way on both databases: after a claim's plain part, a worker
//! with room left is offered the governed tasks of its queues and names (rate-limited, grouped
//! or under a concurrency limit) in fair order (queue priority, task priority, then the place
//! `fairness` gave each, which takes the groups in turn), each only while every limited key it
//! carries has a token left in its bucket and its concurrency key has a free place; a lease
//! takes the task's costs from those buckets. Buckets are rows of `rate_buckets`, and a
//! concurrency key is a lock the transaction holds (an advisory lock on Postgres; SQLite has one
//! writer), taken in key order, so every coordinator on the database shares them and the
//! limits hold cluster-wide. The queue's fair clock moves up to the last place leased.
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
use super::{Claim, Claimed, RateBucket, StoreError};
use crate::domain::{Lease, Rate, SLOWEST_FACTOR, TaskId, recovered_factor, slowed_factor};

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

/// Service order: higher queue priority, higher task priority, lower fair place, older.
type Order = (u8, i64, std::cmp::Reverse<i64>, std::cmp::Reverse<i64>);

/// A bucket's row: its tokens as of `updated_at`, and the rate it runs at now (the
/// configured one, less what pushback took and time has not yet given back).
fn read_bucket(
    row: &impl Columns,
    configured: Rate,
    now: DateTime<Utc>,
    recovery: std::time::Duration,
) -> Result<(i64, DateTime<Utc>, Rate), StoreError> {
    let tokens = row.integer("tokens").map_err(StoreError::Internal)?;
    let updated_at = row.moment("updated_at").map_err(StoreError::Internal)?;
    let factor = row.integer("factor").map_err(StoreError::Internal)?;
    let slowed_at = row
        .optional_moment("slowed_at")
        .map_err(StoreError::Internal)?;
    let factor = match slowed_at {
        None => factor.clamp(SLOWEST_FACTOR, 1000),
        Some(at) => recovered_factor(factor, (now - at).to_std().unwrap_or_default(), recovery),
    };
    let rate = Rate::per_second(configured.value() * factor as f64 / 1000.0);
    Ok((tokens, updated_at, rate))
}

/// Slows key `key` (limited at `configured`) down after pushback: its share halves, at most
/// once a second (replies to messages sent together tell of one overload). Answers the rate it
/// runs at afterwards.
pub(super) async fn slow_down<B: Database>(
    backend: &B,
    key: &str,
    configured: Rate,
    recovery: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Rate, StoreError> {
    let mut transaction = backend.begin().await?;
    transaction
        .execute(
            "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
            &[key.into(), (SCALE as i64).into(), now.into()],
        )
        .await?;
    let row = transaction
        .fetch_one(B::LEASES.bucket_for_update, &[key.into()])
        .await?;
    let (tokens, updated_at, current) = read_bucket(&row, configured, now, recovery)?;
    let slowed_at = row
        .optional_moment("slowed_at")
        .map_err(StoreError::Internal)?;
    if slowed_at.is_some_and(|at| now - at < chrono::TimeDelta::seconds(1)) {
        return Ok(current);
    }
    let share = (current.value() / configured.value() * 1000.0).round() as i64;
    let factor = slowed_factor(share);
    transaction
        .execute(
            "UPDATE rate_buckets SET tokens = $2, updated_at = $3, factor = $4, slowed_at = $3 \
             WHERE key = $1",
            &[
                key.into(),
                refilled(current, tokens, updated_at, now).into(),
                now.into(),
                factor.into(),
            ],
        )
        .await?;
    B::commit(transaction).await?;
    Ok(Rate::per_second(
        configured.value() * factor as f64 / 1000.0,
    ))
}

/// Every rate bucket, by key.
pub(super) async fn rate_buckets<B: Database>(backend: &B) -> Result<Vec<RateBucket>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT key, tokens, updated_at, factor, slowed_at FROM rate_buckets ORDER BY key",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RateBucket {
                key: row.text("key")?,
                tokens: row.integer("tokens")?,
                updated_at: row.moment("updated_at")?,
                factor: row.integer("factor")?,
                slowed_at: row.optional_moment("slowed_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::Internal)
}

/// A candidate: its id, its place in service order, its limited keys with their costs and its
/// concurrency key with its limit.
struct Candidate {
    id: TaskId,
    queue: String,
    order: Order,
    expires_at: Option<DateTime<Utc>>,
    costs: Vec<(String, Rate, u32)>,
    concurrency: Option<(ConcurrencyKey, u32)>,
}

/// What a concurrency limit counts: the task's name and group.
type ConcurrencyKey = (String, Option<String>);

/// Leases up to `room` governed tasks to the claim's worker.
pub(super) async fn claim_governed<B: Database>(
    backend: &B,
    claim: &Claim,
    room: u32,
    governed_waiting: Option<bool>,
) -> Result<Claimed, StoreError> {
    if room == 0 || claim.queues.is_empty() || claim.names.is_empty() {
        return Ok(Claimed::default());
    }
    // Unless the plain claim already said, one probe of an index that is empty when nothing
    // is governed, so the plain claim's cost stays what it was.
    if governed_waiting == Some(true) {
        return claim_waiting(backend, claim, room).await;
    }
    let any = backend
        .connection()
        .await?
        .fetch_optional(
            "SELECT 1 AS found FROM tasks WHERE state = 'pending' AND governed LIMIT 1",
            &[],
        )
        .await?;
    if any.is_none() {
        return Ok(Claimed::default());
    }
    claim_waiting(backend, claim, room).await
}

/// The governed claim proper, once governed tasks are known to wait somewhere.
async fn claim_waiting<B: Database>(
    backend: &B,
    claim: &Claim,
    room: u32,
) -> Result<Claimed, StoreError> {
    let mut claimed = Claimed::default();
    let mut transaction = backend.begin().await?;
    let mut candidates = Vec::new();
    for (queue, queue_priority) in &claim.queues {
        for name in &claim.names {
            let rows = transaction
                .fetch_all(
                    B::LEASES.governed_candidates,
                    &[
                        queue.as_str().into(),
                        name.as_str().into(),
                        i64::from(room).into(),
                    ],
                )
                .await?;
            for row in rows {
                let mut keys =
                    rate_keys_from_json(row.optional_text("rate_keys").ok().flatten().as_deref());
                // A limit on the name set after the task was submitted covers it too.
                keys.add(format!("task:{}", name.as_str()), 1);
                let costs = keys
                    .iter()
                    .filter_map(|(key, cost)| {
                        claim
                            .rate_limits
                            .rate_for(key)
                            .map(|rate| (key.to_owned(), rate, cost))
                    })
                    .collect();
                let group = row
                    .optional_text("group_key")
                    .map_err(StoreError::Internal)?;
                let limit = row
                    .optional_integer("max_concurrency")
                    .map_err(StoreError::Internal)?;
                let place = row
                    .optional_integer("fair_position")
                    .map_err(StoreError::Internal)?
                    .unwrap_or(0);
                candidates.push(Candidate {
                    id: row.task_id("id").map_err(StoreError::Internal)?,
                    queue: queue.to_string(),
                    order: (
                        *queue_priority,
                        row.integer("priority").map_err(StoreError::Internal)?,
                        std::cmp::Reverse(place),
                        std::cmp::Reverse(row.integer("seq").map_err(StoreError::Internal)?),
                    ),
                    expires_at: row
                        .optional_moment("expires_at")
                        .map_err(StoreError::Internal)?,
                    costs,
                    concurrency: limit.map(|limit| {
                        (
                            (name.to_string(), group),
                            u32::try_from(limit).unwrap_or(u32::MAX),
                        )
                    }),
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
        let (tokens, updated_at, rate) =
            read_bucket(&row, rate, claim.now, claim.rate_limits.recovery())?;
        buckets.insert(
            key.to_owned(),
            Bucket {
                rate,
                tokens: refilled(rate, tokens, updated_at, claim.now),
            },
        );
    }

    let mut free = concurrency_places::<B>(&mut transaction, &candidates).await?;
    let mut reached: BTreeMap<String, i64> = BTreeMap::new();
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
        // A full concurrency key waits for one of its tasks to finish, which wakes the claim.
        if let Some((key, _)) = &candidate.concurrency
            && let Some(places) = free.get_mut(key)
        {
            if *places == 0 {
                continue;
            }
            *places -= 1;
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
            let place = candidate.order.2.0;
            let clock = reached.entry(candidate.queue.clone()).or_insert(place);
            *clock = (*clock).max(place);
        }
    }
    for (queue, place) in &reached {
        let params = [queue.as_str().into(), (*place).into()];
        transaction
            .execute(
                "UPDATE fair_clocks SET position = $2 WHERE queue = $1 AND position < $2",
                &params,
            )
            .await?;
        transaction
            .execute(
                "INSERT INTO fair_clocks (queue, position) VALUES ($1, $2) \
                 ON CONFLICT (queue) DO NOTHING",
                &params,
            )
            .await?;
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

/// How many more tasks each concurrency key among the candidates may start: its limit less
/// those leased or running. Each key is locked first, in key order, so two claims cannot both
/// take its last place.
async fn concurrency_places<B: Database>(
    transaction: &mut B::Transaction,
    candidates: &[Candidate],
) -> Result<BTreeMap<ConcurrencyKey, u32>, StoreError> {
    let limits: BTreeMap<&ConcurrencyKey, u32> = candidates
        .iter()
        .filter_map(|candidate| candidate.concurrency.as_ref())
        .map(|(key, limit)| (key, *limit))
        .collect();
    let mut free = BTreeMap::new();
    for (key, limit) in limits {
        let (name, group) = key;
        let lock = format!("{name}\n{}", group.as_deref().unwrap_or(""));
        transaction
            .fetch_one(B::LEASES.concurrency_lock, &[lock.as_str().into()])
            .await?;
        let active =
            match group {
                Some(group) => transaction
                    .fetch_one(
                        "SELECT count(*) AS active FROM tasks WHERE name = $1 AND group_key = $2 \
                         AND state IN ('leased', 'running') AND max_concurrency IS NOT NULL",
                        &[name.as_str().into(), group.as_str().into()],
                    )
                    .await?,
                None => {
                    transaction
                        .fetch_one(
                            "SELECT count(*) AS active FROM tasks WHERE name = $1 \
                         AND group_key IS NULL \
                         AND state IN ('leased', 'running') AND max_concurrency IS NOT NULL",
                            &[name.as_str().into()],
                        )
                        .await?
                }
            }
            .integer("active")
            .map_err(StoreError::Internal)?;
        let active = u32::try_from(active).unwrap_or(u32::MAX);
        free.insert(key.clone(), limit.saturating_sub(active));
    }
    Ok(free)
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
