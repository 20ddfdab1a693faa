//! Rate limits at run time: pushback reported by tasks slows a key down cluster-wide (its share
//! is kept in the key's bucket, which every claim reads), and what each limited key runs at, for
//! inspection.

use super::{Coordinator, CoordinatorError};
use crate::domain::{KeyRate, Rate, parse_rate_key, recovered_factor};

impl Coordinator {
    /// A running task met pushback on `key`: a key without a configured limit (or a malformed
    /// one, from a worker that should know better) changes nothing.
    pub(super) async fn slow_down(&self, key: &str) {
        let Ok(key) = parse_rate_key("slow_down.key", key) else {
            tracing::debug!(key, "a worker reported pushback on a malformed rate key");
            return;
        };
        let Some(configured) = self.rate_limits.rate_for(&key) else {
            return;
        };
        metrics::counter!("celeritas_rate_pushbacks_total").increment(1);
        match self
            .store
            .slow_down(
                &key,
                configured,
                self.rate_limits.recovery(),
                self.clock.now(),
            )
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
        let recovery = self.rate_limits.recovery();
        let mut rates = Vec::new();
        for bucket in self.store.rate_buckets().await? {
            let Some(configured) = self.rate_limits.rate_for(&bucket.key) else {
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
