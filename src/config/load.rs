//! Loading: defaults, then the file, then the environment; and the checks serde cannot make.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::{Config, ConfigError, DEFAULT_CONFIG_FILE, RelaySettings};
use crate::domain::ValidationError;

impl Config {
    /// Loads the defaults, then `path` (or `celeritas.toml` in the working directory, when it
    /// exists), then the environment, and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file: Option<PathBuf> = match path {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ValidationError::new(
                    "--config",
                    format!("{} does not exist", file.display()),
                )
                .into());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed("CELERITAS_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Ok(url) = std::env::var("CELERITAS_SMTP_URL") {
            let relay = RelaySettings::from_url(&url)?;
            config
                .smtp
                .relays
                .insert(config.smtp.default_relay.clone(), relay);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration from TOML text over the defaults, ignoring the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, references between sections, limits.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.routing().map(|_| ())?;
        self.schedules().map(|_| ())?;
        self.rate_limits().map(|_| ())?;
        self.auth.validate()?;
        if self.dns.timeout.is_zero() {
            return Err(ValidationError::new("dns.timeout", "must be positive"));
        }
        if self.validation.probe_timeout.is_zero() {
            return Err(ValidationError::new(
                "validation.probe_timeout",
                "must be positive",
            ));
        }
        if self.dns.attempts == 0 {
            return Err(ValidationError::new("dns.attempts", "must be at least 1"));
        }
        if self.campaigns.stall_after.is_zero() {
            return Err(ValidationError::new(
                "campaigns.stall_after",
                "must be positive",
            ));
        }
        if self.worker.concurrency == 0 {
            return Err(ValidationError::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if self.worker.prefetch_multiplier == 0 {
            return Err(ValidationError::new(
                "worker.prefetch_multiplier",
                "must be at least 1",
            ));
        }
        if self.coordinator.max_worker_capacity == 0 {
            return Err(ValidationError::new(
                "coordinator.max_worker_capacity",
                "must be at least 1",
            ));
        }
        if self.coordinator.max_stream_buffer_bytes == 0 {
            return Err(ValidationError::new(
                "coordinator.max_stream_buffer_bytes",
                "must be at least 1",
            ));
        }
        if self.coordinator.database_pool_size < 2 {
            return Err(ValidationError::new(
                "coordinator.database_pool_size",
                "must be at least 2",
            ));
        }
        let coordinator = &self.coordinator;
        for (field, value) in [
            (
                "coordinator.heartbeat_interval",
                coordinator.heartbeat_interval,
            ),
            ("coordinator.poll_interval", coordinator.poll_interval),
            ("coordinator.reap_interval", coordinator.reap_interval),
        ] {
            if value.is_zero() {
                return Err(ValidationError::new(field, "must be positive"));
            }
        }
        // Renewals run every third of the TTL; a lease must outlive a missed renewal, and a
        // worker is taken for dead after three missed heartbeats.
        if coordinator.lease_ttl < coordinator.heartbeat_interval * 3 {
            return Err(ValidationError::new(
                "coordinator.lease_ttl",
                "must be at least three heartbeat intervals",
            ));
        }
        Ok(())
    }
}
