//! The tasks celeritas ships. Every worker runs them; the coordinator knows their names, so they
//! may be submitted without a route.

pub mod api;
mod basic;
mod canvas;
pub mod contacts;
pub mod email;

use std::sync::Arc;

use crate::config::Config;
use crate::domain::ValidationError;
use crate::grpc::client::Target;
use crate::worker::{Registry, TaskError};

/// A task's args as `T`; args that do not fit are `invalid_args`, naming the field
/// (`recipients[3].email: invalid type: integer, expected a string`).
pub fn parse_args<T: serde::de::DeserializeOwned>(args: serde_json::Value) -> Result<T, TaskError> {
    serde_path_to_error::deserialize(args).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        if path == "." {
            TaskError::invalid_args(error)
        } else {
            TaskError::invalid_args(format!("{path}: {error}"))
        }
    })
}

/// A registry of every built-in task for a worker of `coordinator`: the email tasks send
/// through `config.smtp`'s relays; the campaign upkeep follows `config.campaigns`.
pub fn builtin_registry(
    config: &Config,
    coordinator: &Target,
) -> Result<Registry, ValidationError> {
    let api = api::CoordinatorApi::new(coordinator.clone());
    let mut registry = Registry::new();
    basic::register(&mut registry);
    canvas::register(&mut registry);
    email::register(
        &mut registry,
        Arc::new(email::EmailTasks::new(
            &config.smtp,
            config.rate_limits()?,
            api.clone(),
        )?),
        Arc::new(email::Upkeep::new(api.clone(), &config.campaigns)),
    );
    contacts::register(
        &mut registry,
        Arc::new(contacts::Validator::new(config)?),
        Arc::new(contacts::Importer::new(api)),
    );
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_exactly_the_builtin_names() {
        let names: Vec<String> =
            builtin_registry(&Config::default(), &Target::plain("http://127.0.0.1:50051"))
                .unwrap()
                .names()
                .iter()
                .map(ToString::to_string)
                .collect();
        let mut expected: Vec<String> = crate::domain::BUILTIN_TASK_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}
