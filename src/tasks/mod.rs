//! The tasks celeritas ships. Every worker runs them; the coordinator knows their names, so they
//! may be submitted without a route.

mod basic;
mod canvas;
pub mod email;

use std::sync::Arc;

use crate::config::SmtpSettings;
use crate::domain::ValidationError;
use crate::worker::Registry;

/// The names of the built-in tasks.
pub const BUILTIN_TASK_NAMES: &[&str] = &[
    "emit_records",
    "fail",
    "fan_out",
    "noop",
    "send_campaign",
    "send_email_batch",
    "send_single_email",
    "sleep",
    "test_celery",
];

/// A registry of every built-in task; the email tasks send through `smtp`'s relays.
pub fn builtin_registry(smtp: &SmtpSettings) -> Result<Registry, ValidationError> {
    let mut registry = Registry::new();
    basic::register(&mut registry);
    canvas::register(&mut registry);
    email::register(&mut registry, Arc::new(email::EmailTasks::new(smtp)?));
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_exactly_the_builtin_names() {
        let names: Vec<String> = builtin_registry(&SmtpSettings::default())
            .unwrap()
            .names()
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut expected: Vec<String> = BUILTIN_TASK_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}
