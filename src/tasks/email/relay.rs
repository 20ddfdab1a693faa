//! SMTP relays: one connection pool per configured relay (`smtp_pool.rs`), with the limits a
//! relay needs: how many messages travel at once, a timeout on every send, and rates per relay
//! and per recipient domain.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::{Address, Message};
use tokio::sync::Semaphore;

use super::smtp_pool::{Security, SmtpPool};
use crate::config::{RelaySettings, SmtpSettings};
use crate::domain::ValidationError;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The relay took it (2xx).
    Accepted(String),
    /// Not now (4xx, a timeout, a dropped connection): try again later.
    Deferred(String),
    /// Not now, because the receiving side is overloaded or limiting us (421, 450, 451, 452):
    /// try again later, and send to its domain more slowly.
    PushedBack(String),
    /// Never (5xx).
    Rejected(String),
}

/// The longest SMTP reply kept in a delivery's outcome.
const MAX_REPLY_BYTES: usize = 2048;

impl Delivery {
    /// The same outcome with its text made storable: a remote server's reply is foreign text
    /// (a NUL in it would make the delivery record unstorable, and the record must be written
    /// before the batch's result).
    fn storable(self) -> Self {
        let clean = |text: String| match crate::domain::sanitize(&text, MAX_REPLY_BYTES) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(clean) => clean,
        };
        match self {
            Delivery::Accepted(reply) => Delivery::Accepted(clean(reply)),
            Delivery::Deferred(reply) => Delivery::Deferred(clean(reply)),
            Delivery::PushedBack(reply) => Delivery::PushedBack(clean(reply)),
            Delivery::Rejected(reply) => Delivery::Rejected(clean(reply)),
        }
    }
}

/// One relay.
pub struct Relay {
    name: String,
    host: String,
    pool: SmtpPool,
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
            .field("pool", &self.pool)
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
        let field = format!("smtp.relays.{name}");
        let password = settings.password().map_err(|error| error.within(&field))?;
        let ca_pem = settings
            .ca_file
            .as_ref()
            .map(|file| {
                std::fs::read(file).map_err(|error| {
                    ValidationError::new(
                        format!("{field}.ca_file"),
                        format!("{}: {error}", file.display()),
                    )
                })
            })
            .transpose()?;
        let tls_error = |(named, error): (&str, String)| {
            ValidationError::new(format!("{field}.{named}"), error)
        };
        let starttls = || {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &ca_pem {
                let certificate = Certificate::from_pem(pem)
                    .map_err(|error| tls_error(("ca_file", error.to_string())))?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build_rustls()
                .map_err(|error| tls_error(("host", error.to_string())))
        };
        let (security, default_port) = match settings.tls.as_str() {
            "none" => (Security::None, 25),
            "starttls" => (Security::StartTls(starttls()?), 587),
            "tls" => (
                Security::implicit(&settings.host, ca_pem.as_deref()).map_err(tls_error)?,
                465,
            ),
            other => {
                return Err(ValidationError::new(
                    format!("{field}.tls"),
                    format!("{other:?} is not none, starttls or tls"),
                ));
            }
        };
        if settings.username.is_some()
            && matches!(security, Security::None)
            && !settings.allow_plaintext_auth
        {
            return Err(ValidationError::new(
                format!("{field}.username"),
                "logging in without TLS would send the password in clear: use tls = \"starttls\" \
                 or \"tls\" (smtps://, or ?tls=starttls), or say allow_plaintext_auth = true for a \
                 relay on a network you trust",
            ));
        }
        let credentials = settings
            .username
            .as_ref()
            .map(|username| Credentials::new(username.clone(), password.unwrap_or_default()));
        Ok(Self {
            name: name.to_owned(),
            host: settings.host.clone(),
            pool: SmtpPool::new(
                &settings.host,
                settings.port.unwrap_or(default_port),
                security,
                credentials,
                settings.max_connections.max(1) as usize,
            ),
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
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let delivery = match tokio::time::timeout(
            self.send_timeout,
            self.pool.send(&envelope, &bytes),
        )
        .await
        {
            Err(_) => Delivery::Deferred(format!(
                "no answer from {} within {}",
                self.host,
                humantime::format_duration(self.send_timeout)
            )),
            Ok(Ok(response)) => Delivery::Accepted(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(error)) if error.is_permanent() => Delivery::Rejected(error.to_string()),
            Ok(Err(error)) if error.is_pushback() => Delivery::PushedBack(error.to_string()),
            Ok(Err(error)) => Delivery::Deferred(error.to_string()),
        };
        delivery.storable()
    }

    /// Closes the relay's idle connections; sends in flight keep theirs. Answers how many.
    pub fn close_idle(&self) -> usize {
        self.pool.close_idle()
    }
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

    /// Closes every relay's idle connections; answers how many relays and connections.
    pub fn close_idle(&self) -> (usize, usize) {
        let closed = self.by_name.values().map(|relay| relay.close_idle()).sum();
        (self.by_name.len(), closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(url: &str) -> Result<Relay, ValidationError> {
        let settings = RelaySettings::from_url(url).unwrap();
        Relay::new("default", &settings, Duration::from_secs(5))
    }

    #[test]
    fn a_password_never_travels_in_clear_unless_the_relay_says_so() {
        let refused = relay("smtp://news:secret@relay.example.com:25").unwrap_err();
        assert_eq!(refused.field, "smtp.relays.default.username");
        assert!(refused.message.contains("in clear"), "{refused}");
        assert!(!refused.to_string().contains("secret"));
        assert!(relay("smtp://news:secret@relay.example.com:25?allow_plaintext_auth=true").is_ok());
        assert!(relay("smtp://news:secret@relay.example.com:587?tls=starttls").is_ok());
        assert!(relay("smtps://news:secret@relay.example.com").is_ok());
        // Without a login there is nothing to protect.
        assert!(relay("smtp://relay.example.com:25").is_ok());
    }
}
