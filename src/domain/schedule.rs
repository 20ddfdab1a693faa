//! Periodic schedules: when they tick, and what each tick submits.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{TaskId, TaskName, TaskSpec, ValidationError};

/// The shortest interval a schedule may tick at.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub enum Timing {
    /// Every this long.
    Every(Duration),
    /// On a cron expression, read in a time zone.
    Cron {
        /// The expression as given.
        expression: String,
        /// The parsed expression.
        parsed: Box<croner::Cron>,
        /// The zone it is read in.
        timezone: chrono_tz::Tz,
    },
}

impl PartialEq for Timing {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Timing::Every(a), Timing::Every(b)) => a == b,
            (
                Timing::Cron {
                    expression: a,
                    timezone: zone_a,
                    ..
                },
                Timing::Cron {
                    expression: b,
                    timezone: zone_b,
                    ..
                },
            ) => a == b && zone_a == zone_b,
            _ => false,
        }
    }
}

impl Timing {
    /// An interval of at least a second; `field` names it in errors.
    pub fn every(field: &str, interval: Duration) -> Result<Self, ValidationError> {
        if interval < MIN_INTERVAL {
            return Err(ValidationError::new(field, "must be at least one second"));
        }
        Ok(Timing::Every(interval))
    }

    /// A cron expression (five fields, or six with seconds first) in an IANA time zone (empty
    /// means UTC); `field` names the expression in errors, `zone_field` the zone.
    pub fn cron(
        field: &str,
        expression: &str,
        zone_field: &str,
        timezone: &str,
    ) -> Result<Self, ValidationError> {
        let parsed = croner::Cron::from_str(expression).map_err(|error| {
            ValidationError::new(
                field,
                format!("{} does not parse: {error}", super::quoted(expression)),
            )
        })?;
        let timezone = if timezone.is_empty() {
            chrono_tz::UTC
        } else {
            timezone.parse::<chrono_tz::Tz>().map_err(|_| {
                ValidationError::new(
                    zone_field,
                    format!("unknown time zone {}", super::quoted(timezone)),
                )
            })?
        };
        let timing = Timing::Cron {
            expression: expression.to_owned(),
            parsed: Box::new(parsed),
            timezone,
        };
        // A day that never comes (`0 0 30 2 *`) parses; a schedule on it would never fire.
        if timing.next_after(Utc::now()).is_none() {
            return Err(ValidationError::new(
                field,
                format!("{} never fires", super::quoted(expression)),
            ));
        }
        Ok(timing)
    }

    /// The first tick strictly after `after`, if there is one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timing::Every(interval) => Some(crate::clock::after(after, *interval)),
            Timing::Cron {
                parsed, timezone, ..
            } => parsed
                .find_next_occurrence(&after.with_timezone(timezone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
        }
    }

    /// The zone's name, for a cron schedule.
    pub fn timezone_name(&self) -> &str {
        match self {
            Timing::Every(_) => "UTC",
            Timing::Cron { timezone, .. } => timezone.name(),
        }
    }
}

/// Where a schedule was defined: the configuration file (synced at start) or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleSource {
    /// `celeritas.toml`.
    Config,
    /// `PutSchedule`.
    Api,
}

impl ScheduleSource {
    /// The name stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleSource::Config => "config",
            ScheduleSource::Api => "api",
        }
    }
}

/// A periodic schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its unique name.
    pub name: String,
    /// What each tick submits.
    pub task: TaskSpec,
    /// When it ticks.
    pub timing: Timing,
    /// Whether it is paused.
    pub paused: bool,
    /// When it ticks next.
    pub next_run_at: Option<DateTime<Utc>>,
    /// When it last ticked.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task its last tick submitted.
    pub last_task_id: Option<TaskId>,
    /// Where it was defined.
    pub source: ScheduleSource,
}

/// Parses a schedule name: the same alphabet as task names.
pub fn parse_schedule_name(field: &str, name: &str) -> Result<String, ValidationError> {
    TaskName::parse(field, name).map(|name| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        let error =
            Timing::cron("schedule.cron", "0 0 30 2 *", "schedule.timezone", "").unwrap_err();
        assert_eq!(error.field, "schedule.cron");
        assert!(error.message.contains("never fires"), "{error}");
    }

    #[test]
    fn cron_ticks_in_its_time_zone() {
        let timing = Timing::cron("cron", "0 9 * * *", "timezone", "Europe/Moscow").unwrap();
        let now: DateTime<Utc> = "2026-11-24T07:00:00Z".parse().unwrap();
        // 09:00 in Moscow is 06:00 UTC: the next is tomorrow's.
        assert_eq!(
            timing.next_after(now).unwrap(),
            "2026-11-25T06:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let error =
            Timing::cron("schedule.cron", "every tuesday", "schedule.timezone", "").unwrap_err();
        assert_eq!(error.field, "schedule.cron");
        let error = Timing::cron(
            "schedule.cron",
            "*/5 * * * *",
            "schedule.timezone",
            "Mars/Olympus",
        )
        .unwrap_err();
        assert_eq!(error.field, "schedule.timezone");
        assert!(Timing::every("every", Duration::from_millis(10)).is_err());
    }

    #[test]
    fn intervals_tick_after_the_moment_given() {
        let timing = Timing::every("every", Duration::from_secs(300)).unwrap();
        let now: DateTime<Utc> = "2026-11-24T07:00:00Z".parse().unwrap();
        assert_eq!(
            timing.next_after(now).unwrap(),
            now + chrono::Duration::seconds(300)
        );
    }
}
