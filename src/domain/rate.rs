//! Rate limits: how fast work of a key may be leased, across every worker and coordinator.
//!
//! A task carries rate keys (`domain:gmail.com`, `relay:mx1`, `task:send_email_batch`), each
//! with a cost (a batch of 40 gmail.com recipients costs `domain:gmail.com` 40). A limit applies
//! to the keys its pattern matches; a task is leased only while every limited key it carries has
//! tokens left, and its lease takes its costs from them. Written by hand: the matching is a few
//! lines of glob (`*` only) and the syntax Celery's (`100/s`, `10/m`, `3600/h`).

use std::collections::BTreeMap;

use super::ValidationError;

/// The most rate keys one task may carry.
pub const MAX_RATE_KEYS: usize = 64;
/// The longest rate key, in bytes.
pub const MAX_RATE_KEY_BYTES: usize = 200;
/// The largest cost one key of one task may have.
pub const MAX_RATE_COST: u32 = 1_000_000;

/// Checks a rate key: 1 to 200 bytes, no control characters, no `*`.
pub fn parse_rate_key(field: &str, key: &str) -> Result<String, ValidationError> {
    if key.is_empty() || key.len() > MAX_RATE_KEY_BYTES {
        return Err(ValidationError::new(
            field,
            format!("a key must be 1 to {MAX_RATE_KEY_BYTES} bytes"),
        ));
    }
    if key.chars().any(|c| c.is_control() || c == '*') {
        return Err(ValidationError::new(
            field,
            "a key holds no control characters and no `*`",
        ));
    }
    Ok(key.to_owned())
}

/// Checks a limit's pattern: 1 to 200 bytes, no control characters; `*` stands for any text.
pub fn parse_rate_pattern(field: &str, pattern: &str) -> Result<String, ValidationError> {
    if pattern.is_empty() || pattern.len() > MAX_RATE_KEY_BYTES {
        return Err(ValidationError::new(
            field,
            format!("a pattern must be 1 to {MAX_RATE_KEY_BYTES} bytes"),
        ));
    }
    if pattern.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "a pattern holds no control characters",
        ));
    }
    Ok(pattern.to_owned())
}

/// A limit set through the API (`SetRateLimit`), kept in the store beside those of the
/// configuration; it replaces a configured limit of the same pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSetting {
    /// The pattern, checked by `parse_rate_pattern`.
    pub pattern: String,
    /// The rate as given (`"20/s"`), checked by `Rate::parse`.
    pub rate: String,
    /// When it was set.
    pub set_at: chrono::DateTime<chrono::Utc>,
    /// Who set it (a token's or certificate's name), when the caller had one.
    pub set_by: Option<String>,
}

/// A rate: so many per second (given as Celery writes it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl Rate {
    /// Parses `N/s`, `N/m`, `N/h` or a bare `N` (per second); N positive and finite.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let malformed = || {
            ValidationError::new(
                field,
                format!("{text:?} is not a rate such as \"100/s\", \"20/m\" or \"3600/h\""),
            )
        };
        let (count, unit) = match text.trim().split_once('/') {
            Some((count, unit)) => (count.trim(), unit.trim()),
            None => (text.trim(), "s"),
        };
        let seconds = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(malformed()),
        };
        let count: f64 = count.parse().map_err(|_| malformed())?;
        if !count.is_finite() {
            return Err(malformed());
        }
        if count <= 0.0 {
            return Err(ValidationError::new(
                field,
                format!("{text:?} must be more than zero (pause the queue to stop it)"),
            ));
        }
        Ok(Self {
            per_second: count / seconds,
        })
    }

    /// A rate of `per_second` (positive, finite: callers scale a parsed rate).
    pub fn per_second(per_second: f64) -> Self {
        Self { per_second }
    }

    /// Tokens per second.
    pub fn value(&self) -> f64 {
        self.per_second
    }

    /// How many tokens a bucket of this rate holds at most: a second's worth, at least one.
    pub fn burst(&self) -> f64 {
        self.per_second.max(1.0)
    }
}

/// The keys a task is limited by, each with its cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateKeys(BTreeMap<String, u32>);

impl RateKeys {
    /// Parses keys and costs; a cost of 0 means 1.
    pub fn parse(field: &str, keys: &BTreeMap<String, u32>) -> Result<Self, ValidationError> {
        if keys.len() > MAX_RATE_KEYS {
            return Err(ValidationError::new(
                field,
                format!("has {} keys; at most {MAX_RATE_KEYS}", keys.len()),
            ));
        }
        let mut parsed = BTreeMap::new();
        for (key, cost) in keys {
            let at = format!("{field}[{key:?}]");
            parse_rate_key(&at, key)?;
            if *cost > MAX_RATE_COST {
                return Err(ValidationError::new(
                    at,
                    format!("cost {cost} is more than {MAX_RATE_COST}"),
                ));
            }
            parsed.insert(key.clone(), (*cost).max(1));
        }
        Ok(Self(parsed))
    }

    /// Adds `key` at `cost` (keeping the larger cost when it is there already).
    pub fn add(&mut self, key: String, cost: u32) {
        let cost = cost.clamp(1, MAX_RATE_COST);
        let entry = self.0.entry(key).or_insert(cost);
        *entry = (*entry).max(cost);
    }

    /// The keys and their costs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(key, cost)| (key.as_str(), *cost))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys and costs, as a map.
    pub fn as_map(&self) -> &BTreeMap<String, u32> {
        &self.0
    }
}

/// The configured limits: patterns (exact keys, or with `*` standing for any text) and their
/// rates. A key takes the limit of its exact pattern, else of the longest pattern it matches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    limits: Vec<(String, Rate)>,
    /// How long a key slowed to its floor takes to climb back to its full rate.
    recovery: Option<std::time::Duration>,
}

/// How long a key slowed down takes to recover, unless configured.
pub const DEFAULT_RATE_RECOVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The lowest share of its rate a slowed-down key keeps, in thousandths (1/64).
pub const SLOWEST_FACTOR: i64 = 16;

/// The share of its rate, in thousandths, a key runs at `elapsed` after it was slowed to
/// `factor`: climbing linearly back to the whole of it over `recovery`.
pub fn recovered_factor(
    factor: i64,
    elapsed: std::time::Duration,
    recovery: std::time::Duration,
) -> i64 {
    let climbed = (elapsed.as_secs_f64() / recovery.as_secs_f64().max(1e-3) * 1000.0) as i64;
    factor.saturating_add(climbed).clamp(SLOWEST_FACTOR, 1000)
}

/// The share a key keeps after pushback at `current`: half of it, no lower than the floor.
pub fn slowed_factor(current: i64) -> i64 {
    (current / 2).max(SLOWEST_FACTOR)
}

impl RateLimits {
    /// Parses `pattern = "rate"` pairs; `field` is the section they come from.
    pub fn parse<'a>(
        field: &str,
        limits: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationError> {
        let mut parsed = Vec::new();
        for (pattern, rate) in limits {
            let at = format!("{field}.{pattern:?}");
            parsed.push((parse_rate_pattern(&at, pattern)?, Rate::parse(&at, rate)?));
        }
        let mut limits = Self {
            limits: parsed,
            recovery: None,
        };
        limits.order();
        Ok(limits)
    }

    /// The same limits, recovering from pushback over `recovery`.
    pub fn recovering_over(mut self, recovery: std::time::Duration) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// How long a key slowed to its floor takes to climb back.
    pub fn recovery(&self) -> std::time::Duration {
        self.recovery.unwrap_or(DEFAULT_RATE_RECOVERY)
    }

    /// Adds a limit (a `[tasks.<name>] rate_limit` as `task:<name>`); it replaces one of the
    /// same pattern.
    pub fn with(mut self, pattern: String, rate: Rate) -> Self {
        self.limits.retain(|(existing, _)| *existing != pattern);
        self.limits.push((pattern, rate));
        self.order();
        self
    }

    /// Exact patterns first, then the longer (more specific) ones: the first match wins.
    fn order(&mut self) {
        self.limits.sort_by(|(a, _), (b, _)| {
            let rank = |pattern: &String| (pattern.contains('*'), std::cmp::Reverse(pattern.len()));
            rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
        });
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The patterns and their rates, the first match first.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Rate)> {
        self.limits
            .iter()
            .map(|(pattern, rate)| (pattern.as_str(), *rate))
    }

    /// The limit of `key`, if any applies.
    pub fn rate_for(&self, key: &str) -> Option<Rate> {
        self.limits
            .iter()
            .find(|(pattern, _)| matches(pattern, key))
            .map(|(_, rate)| *rate)
    }

    /// Whether any of `keys` is limited.
    pub fn limits_any(&self, keys: &RateKeys) -> bool {
        !self.limits.is_empty() && keys.iter().any(|(key, _)| self.rate_for(key).is_some())
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any text (none included).
fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushback_halves_a_rate_down_to_a_floor_and_time_brings_it_back() {
        assert_eq!(slowed_factor(1000), 500);
        assert_eq!(slowed_factor(20), SLOWEST_FACTOR);
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(
            recovered_factor(500, std::time::Duration::ZERO, minute),
            500
        );
        assert_eq!(
            recovered_factor(500, std::time::Duration::from_secs(15), minute),
            750
        );
        assert_eq!(
            recovered_factor(16, std::time::Duration::from_secs(3600), minute),
            1000,
            "never above the whole rate"
        );
    }

    #[test]
    fn rates_read_as_celery_writes_them_and_refuse_the_rest() {
        assert_eq!(Rate::parse("r", "100/s").unwrap().value(), 100.0);
        assert_eq!(Rate::parse("r", "120/m").unwrap().value(), 2.0);
        assert_eq!(Rate::parse("r", "3600/h").unwrap().value(), 1.0);
        assert_eq!(Rate::parse("r", "2.5").unwrap().value(), 2.5);
        for bad in ["ten per second", "10/d", "", "/s", "inf/s", "NaN"] {
            let error = Rate::parse("rate_limits.x", bad).unwrap_err();
            assert_eq!(error.field, "rate_limits.x", "{bad}");
        }
        for zero in ["0/s", "-5/m"] {
            assert!(
                Rate::parse("r", zero)
                    .unwrap_err()
                    .message
                    .contains("more than zero")
            );
        }
    }

    #[test]
    fn a_key_takes_its_exact_limit_else_the_most_specific_pattern() {
        let limits = RateLimits::parse(
            "rate_limits",
            [
                ("domain:*", "100/s"),
                ("domain:*.ru", "10/s"),
                ("domain:gmail.com", "20/s"),
                ("relay:*-backup", "1/s"),
            ],
        )
        .unwrap();
        let rate = |key: &str| limits.rate_for(key).map(|rate| rate.value());
        assert_eq!(rate("domain:gmail.com"), Some(20.0));
        assert_eq!(rate("domain:mail.ru"), Some(10.0));
        assert_eq!(rate("domain:example.org"), Some(100.0));
        assert_eq!(rate("relay:mx1-backup"), Some(1.0));
        assert_eq!(rate("relay:mx1"), None);
        assert_eq!(rate("task:noop"), None);
        let limits = limits.with("task:noop".to_owned(), Rate::per_second(5.0));
        assert_eq!(limits.rate_for("task:noop").map(|r| r.value()), Some(5.0));
    }

    #[test]
    fn globs_match_any_text_for_each_star() {
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-c-b"));
        assert!(matches("*", ""));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("ab*ba", "aba"), "the ends may not overlap");
    }

    #[test]
    fn keys_are_bounded_and_costs_at_least_one() {
        let keys: BTreeMap<String, u32> = [("domain:a.com".to_owned(), 0)].into();
        let parsed = RateKeys::parse("rate_keys", &keys).unwrap();
        assert_eq!(parsed.iter().collect::<Vec<_>>(), vec![("domain:a.com", 1)]);
        let starred: BTreeMap<String, u32> = [("domain:*".to_owned(), 1)].into();
        assert!(RateKeys::parse("rate_keys", &starred).is_err());
        let many: BTreeMap<String, u32> = (0..65).map(|n| (format!("k{n}"), 1)).collect();
        assert_eq!(
            RateKeys::parse("rate_keys", &many).unwrap_err().field,
            "rate_keys"
        );
    }
}
