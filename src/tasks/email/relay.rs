//! SMTP relays: one pooled lettre transport per configured relay, with the limits lettre does not
//! give: how many messages travel at once (its pool bounds idle connections, not concurrent
//! ones), a timeout on every send (its own covers connecting), and rates per relay and per
//! recipient domain.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

use crate::config::{RelaySettings, SmtpSettings};
use crate::domain::ValidationError;

/// How long a pooled connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The relay took it (2xx).
    Accepted(String),
    /// Not now (4xx, a timeout, a dropped connection): try again later.
    Deferred(String),
    /// Never (5xx).
    Rejected(String),
}

/// One relay.
pub struct Relay {
    name: String,
    settings: RelaySettings,
    password: Option<String>,
    transport: RwLock<AsyncSmtpTransport<Tokio1Executor>>,
    slots: Semaphore,
    rate: Option<DefaultDirectRateLimiter>,
    domain_rate: Option<DefaultKeyedRateLimiter<String>>,
    send_timeout: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Relay")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn per_second(rate: u32) -> Option<Quota> {
    NonZeroU32::new(rate).map(Quota::per_second)
}

impl Relay {
    fn new(
        name: &str,
        settings: &RelaySettings,
        send_timeout: Duration,
    ) -> Result<Self, ValidationError> {
        let password = settings
            .password()
            .map_err(|error| error.within(&format!("smtp.relays.{name}")))?;
        let transport = build_transport(name, settings, password.as_deref(), send_timeout)?;
        Ok(Self {
            name: name.to_owned(),
            settings: settings.clone(),
            password,
            transport: RwLock::new(transport),
            slots: Semaphore::new(settings.max_connections.max(1) as usize),
            rate: per_second(settings.rate).map(RateLimiter::direct),
            domain_rate: per_second(settings.domain_rate).map(RateLimiter::keyed),
            send_timeout,
        })
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message to `recipient`, within the relay's limits and timeout.
    pub async fn send(&self, recipient: &Address, message: Message) -> Delivery {
        let Ok(_slot) = self.slots.acquire().await else {
            return Delivery::Deferred("the relay is closing".to_owned());
        };
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        if let Some(domain_rate) = &self.domain_rate {
            domain_rate
                .until_key_ready(&recipient.domain().to_ascii_lowercase())
                .await;
        }
        let transport = self
            .transport
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        // A send that does not finish (timed out, or its task aborted) leaves its connection
        // mid-conversation, and lettre would park it for the next send: the pool is renewed
        // instead, and the old one closes its connections once its sends in flight are done.
        let mut unfinished = RenewPoolUnlessFinished {
            relay: self,
            finished: false,
        };
        let sent = tokio::time::timeout(self.send_timeout, transport.send(message)).await;
        unfinished.finished = sent.is_ok();
        match sent {
            Err(_) => Delivery::Deferred(format!(
                "no answer from {} within {}",
                self.settings.host,
                humantime::format_duration(self.send_timeout)
            )),
            Ok(Ok(response)) => Delivery::Accepted(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(error)) if error.is_permanent() => Delivery::Rejected(error.to_string()),
            Ok(Err(error)) => Delivery::Deferred(error.to_string()),
        }
    }

    /// Closes the pooled connections: the next send opens a fresh one. Sends in flight keep
    /// theirs.
    pub fn close_idle(&self) -> Result<(), ValidationError> {
        let fresh = build_transport(
            &self.name,
            &self.settings,
            self.password.as_deref(),
            self.send_timeout,
        )?;
        *self
            .transport
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }
}

/// Renews its relay's pool when dropped before the send it guards finished.
struct RenewPoolUnlessFinished<'a> {
    relay: &'a Relay,
    finished: bool,
}

impl Drop for RenewPoolUnlessFinished<'_> {
    fn drop(&mut self) {
        if !self.finished
            && let Err(error) = self.relay.close_idle()
        {
            tracing::warn!(relay = self.relay.name(), %error, "cannot renew the relay's pool");
        }
    }
}

fn build_transport(
    name: &str,
    settings: &RelaySettings,
    password: Option<&str>,
    send_timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, ValidationError> {
    let field = format!("smtp.relays.{name}");
    let tls_error = |error: lettre::transport::smtp::Error| {
        ValidationError::new(format!("{field}.host"), error.to_string())
    };
    let mut builder = match settings.tls.as_str() {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port.unwrap_or(25)),
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
            .map_err(tls_error)?
            .port(settings.port.unwrap_or(587)),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
            .map_err(tls_error)?
            .port(settings.port.unwrap_or(465)),
        other => {
            return Err(ValidationError::new(
                format!("{field}.tls"),
                format!("{other:?} is not none, starttls or tls"),
            ));
        }
    };
    if let Some(username) = &settings.username {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.unwrap_or_default().to_owned(),
        ));
    }
    Ok(builder
        .timeout(Some(send_timeout))
        .pool_config(
            PoolConfig::new()
                .max_size(settings.max_connections.max(1))
                .idle_timeout(IDLE_TIMEOUT),
        )
        .build())
}

/// Every configured relay.
#[derive(Debug, Default)]
pub struct Relays {
    by_name: HashMap<String, Arc<Relay>>,
    default: String,
}

impl Relays {
    /// The relays of the `[smtp]` settings. A relay that cannot be built (a password variable
    /// that is not set, say) is left out and logged; campaigns naming it are refused.
    pub fn from_settings(settings: &SmtpSettings) -> Self {
        let mut by_name = HashMap::new();
        for (name, relay) in &settings.relays {
            match Relay::new(name, relay, settings.send_timeout) {
                Ok(relay) => {
                    by_name.insert(name.clone(), Arc::new(relay));
                }
                Err(error) => tracing::warn!(relay = %name, %error, "cannot use this relay"),
            }
        }
        Self {
            by_name,
            default: settings.default_relay.clone(),
        }
    }

    /// The relay `name` names, or the default one.
    pub fn get(&self, field: &str, name: Option<&str>) -> Result<Arc<Relay>, ValidationError> {
        let name = name.unwrap_or(&self.default);
        self.by_name.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            known.sort();
            ValidationError::new(
                field,
                if known.is_empty() {
                    format!(
                        "unknown relay {name:?}: this worker has none; configure [smtp.relays] or CELERITAS_SMTP_URL"
                    )
                } else {
                    format!("unknown relay {name:?}; this worker has {}", known.join(", "))
                },
            )
        })
    }

    /// Closes every relay's idle pooled connections; returns how many relays.
    pub fn close_idle(&self) -> usize {
        self.by_name
            .values()
            .filter(|relay| match relay.close_idle() {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(relay = relay.name(), %error, "cannot renew the relay's pool");
                    false
                }
            })
            .count()
    }
}
