//! Rate limits at run time: the limits in force (the configuration's, with those set through
//! the API over them), pushback reported by tasks slowing a key down cluster-wide (its share is
//! kept in the key's bucket, which every claim reads), and what each limited key runs at, for
//! inspection.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Coordinator, CoordinatorError};
use crate::domain::{
    Caller, KeyRate, Rate, RateLimitSetting, RateLimits, RateRule, parse_rate_key,
    parse_rate_pattern, recovered_factor,
};
use crate::store::{RateLimitSet, Store, StoreError};

/// How often a coordinator reads the limits set through the API again, so that one set
/// through another coordinator holds here within that long.
const RATE_LIMIT_REFRESH: Duration = Duration::from_secs(1);

/// The rate limits in force.
pub struct RateLimitBook {
    configured: RateLimits,
    current: RwLock<Limits>,
}

/// The limits in force and the settings of the API they were made with.
#[derive(Clone)]
struct Limits {
    merged: Arc<RateLimits>,
    settings: Vec<RateLimitSetting>,
}

impl RateLimitBook {
    /// The configuration's limits, before any setting of the API is read.
    pub fn new(configured: RateLimits) -> Self {
        Self {
            current: RwLock::new(Limits {
                merged: Arc::new(configured.clone()),
                settings: Vec::new(),
            }),
            configured,
        }
    }

    /// The limits in force now (every submit and claim asks: a lock and a reference count,
    /// nothing copied).
    pub fn current(&self) -> Arc<RateLimits> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .merged
            .clone()
    }

    fn limits(&self) -> Limits {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every limit in force, the first match first.
    pub fn rules(&self) -> Vec<RateRule> {
        let limits = self.limits();
        limits
            .merged
            .rules()
            .map(|(pattern, rate)| {
                let set = limits
                    .settings
                    .iter()
                    .find(|setting| setting.pattern == pattern);
                RateRule {
                    pattern: pattern.to_owned(),
                    per_second: rate.value(),
                    set_through_api: set.is_some(),
                    set_at: set.map(|setting| setting.set_at),
                    set_by: set.and_then(|setting| setting.set_by.clone()),
                }
            })
            .collect()
    }

    /// Reads the settings of the API again; a malformed one (written by hand) is skipped.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let settings = store.rate_limit_settings().await?;
        let mut merged = self.configured.clone();
        for setting in &settings {
            match Rate::parse("rate", &setting.rate) {
                Ok(rate) => merged = merged.with(setting.pattern.clone(), rate),
                Err(error) => {
                    tracing::warn!(pattern = setting.pattern, %error, "skipping a stored rate limit");
                }
            }
        }
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Limits {
            merged: Arc::new(merged),
            settings,
        };
        Ok(())
    }

    /// Refreshes every `RATE_LIMIT_REFRESH` until `stop`; a store that does not answer keeps
    /// the limits last read.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) {
        let book = self.clone();
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(RATE_LIMIT_REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {
                        if let Err(error) = book.refresh(store.as_ref()).await {
                            tracing::debug!(%error, "cannot read the rate limits; keeping the last ones read");
                        }
                    }
                }
            }
        });
    }
}

/// What setting or clearing a limit did.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitChange {
    /// The rate the pattern had through the API before, if any.
    pub previous: Option<String>,
    /// Unfinished tasks that became governed by it (none for a clear).
    pub governed: u64,
}

impl Coordinator {
    /// Sets the limit of `pattern` to `rate` for every coordinator (within a second) and
    /// across restarts; it replaces a configured limit of the same pattern.
    pub async fn set_rate_limit(
        &self,
        caller: &Caller,
        pattern: &str,
        rate: &str,
    ) -> Result<RateLimitChange, CoordinatorError> {
        let pattern = parse_rate_pattern("key", pattern).map_err(CoordinatorError::Invalid)?;
        Rate::parse("rate", rate).map_err(CoordinatorError::Invalid)?;
        let setting = RateLimitSetting {
            pattern,
            rate: rate.trim().to_owned(),
            set_at: self.clock.now(),
            set_by: caller.identity().map(str::to_owned),
        };
        let RateLimitSet { previous, governed } = self.store.set_rate_limit(&setting).await?;
        self.rate_limits.refresh(self.store.as_ref()).await?;
        tracing::info!(
            pattern = setting.pattern,
            rate = setting.rate,
            by = ?setting.set_by,
            governed,
            "set a rate limit"
        );
        // Tasks it governs now wait for the governed claim: look at once.
        self.signal.wake();
        Ok(RateLimitChange { previous, governed })
    }

    /// Removes the limit of `pattern` set through the API (a configured one of the same
    /// pattern holds again). NOT_FOUND when there is none.
    pub async fn clear_rate_limit(
        &self,
        caller: &Caller,
        pattern: &str,
    ) -> Result<RateLimitChange, CoordinatorError> {
        let pattern = parse_rate_pattern("key", pattern).map_err(CoordinatorError::Invalid)?;
        let Some(previous) = self.store.clear_rate_limit(&pattern).await? else {
            return Err(CoordinatorError::NotFound(
                crate::domain::ValidationError::new(
                    "key",
                    format!("no rate limit of {pattern:?} was set through the API"),
                ),
            ));
        };
        self.rate_limits.refresh(self.store.as_ref()).await?;
        self.signal.wake();
        tracing::info!(pattern, previous, by = ?caller.identity(), "cleared a rate limit");
        Ok(RateLimitChange {
            previous: Some(previous),
            governed: 0,
        })
    }

    /// Every limit in force, the first match first.
    pub fn rate_rules(&self) -> Vec<RateRule> {
        self.rate_limits.rules()
    }

    /// A running task met pushback on `key`: a key without a configured limit (or a malformed
    /// one, from a worker that should know better) changes nothing.
    pub(super) async fn slow_down(&self, key: &str) {
        let Ok(key) = parse_rate_key("slow_down.key", key) else {
            tracing::debug!(key, "a worker reported pushback on a malformed rate key");
            return;
        };
        let limits = self.rate_limits.current();
        let Some(configured) = limits.rate_for(&key) else {
            return;
        };
        metrics::counter!("celeritas_rate_pushbacks_total").increment(1);
        match self
            .store
            .slow_down(&key, configured, limits.recovery(), self.clock.now())
            .await
        {
            Ok(rate) => {
                // Keys slowed down are few (domains pushing back); they share the bounded pool
                // of name labels.
                metrics::gauge!("celeritas_rate_limit_share", "key" => crate::metrics::task_name_label(&key))
                    .set(rate.value() / configured.value());
                tracing::info!(
                    key,
                    rate = rate.value(),
                    configured = configured.value(),
                    "slowed a rate key down after pushback"
                );
            }
            Err(error) => tracing::warn!(key, %error, "cannot slow a rate key down"),
        }
    }

    /// Every key with a configured limit that has a bucket, with the rate it runs at now.
    pub async fn key_rates(&self) -> Result<Vec<KeyRate>, CoordinatorError> {
        let now = self.clock.now();
        let limits = self.rate_limits.current();
        let recovery = limits.recovery();
        let mut rates = Vec::new();
        for bucket in self.store.rate_buckets().await? {
            let Some(configured) = limits.rate_for(&bucket.key) else {
                continue;
            };
            let factor = match bucket.slowed_at {
                None => bucket.factor.clamp(0, 1000),
                Some(at) => recovered_factor(
                    bucket.factor,
                    (now - at).to_std().unwrap_or_default(),
                    recovery,
                ),
            };
            let effective = Rate::per_second(configured.value() * factor as f64 / 1000.0);
            let elapsed = (now - bucket.updated_at).to_std().unwrap_or_default();
            let tokens = (bucket.tokens as f64 / 1000.0
                + elapsed.as_secs_f64() * effective.value())
            .min(effective.burst());
            rates.push(KeyRate {
                key: bucket.key,
                configured: configured.value(),
                effective: effective.value(),
                tokens,
                slowed_at: bucket.slowed_at,
            });
        }
        Ok(rates)
    }
}
