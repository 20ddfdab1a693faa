//! The email tasks: `send_campaign`, `send_email_batch`, `send_single_email`, and the seed's
//! periodic `monitor_campaign_progress`, `cleanup_stuck_campaigns`, `cleanup_smtp_connections`.
//!
//! They run on workers, sending through the relays of the worker's `[smtp]` configuration (or
//! `CELERITAS_SMTP_URL`).

mod audience;
mod campaign;
mod content;
mod fan_out;
mod relay;
mod smtp_pool;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;

use crate::config::SmtpSettings;
use crate::domain::ValidationError;
use crate::worker::Registry;

pub use campaign::DELIVERY;
pub use relay::Relays;
pub use upkeep::{CAMPAIGN_STATUS, STUCK_BATCH, Upkeep};

/// The headers a DKIM signature covers. RFC 8058 wants List-Unsubscribe and
/// List-Unsubscribe-Post covered; naming a header a message lacks also stops anyone adding it.
/// Not Content-Type: lettre writes a multipart's with the body, after signing.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Campaign-ID",
];

/// What the email tasks share in one worker.
pub struct EmailTasks {
    relays: Relays,
    dkim: Option<Arc<DkimConfig>>,
    retry_deferred_after: Duration,
    /// The coordinator's API, where a campaign reads an import's contacts.
    api: crate::tasks::api::CoordinatorApi,
    /// The configured rate limits: a campaign puts the recipients of a limited domain in
    /// batches of their own, small enough to keep the limit smooth.
    rate_limits: crate::domain::RateLimits,
}

impl EmailTasks {
    /// The email tasks of a worker configured with `settings`, reaching its coordinator
    /// through `api`.
    pub fn new(
        settings: &SmtpSettings,
        rate_limits: crate::domain::RateLimits,
        api: crate::tasks::api::CoordinatorApi,
    ) -> Result<Self, ValidationError> {
        let dkim = settings
            .dkim
            .as_ref()
            .map(|dkim| -> Result<Arc<DkimConfig>, ValidationError> {
                let pem = std::fs::read_to_string(&dkim.key_file).map_err(|error| {
                    ValidationError::new(
                        "smtp.dkim.key_file",
                        format!("{}: {error}", dkim.key_file.display()),
                    )
                })?;
                let key =
                    DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|error| {
                        ValidationError::new(
                            "smtp.dkim.key_file",
                            format!("not a PKCS#1 PEM RSA key: {error:?}"),
                        )
                    })?;
                Ok(Arc::new(DkimConfig::new(
                    dkim.selector.clone(),
                    dkim.domain.clone(),
                    key,
                    SIGNED_HEADERS
                        .iter()
                        .map(|name| HeaderName::new_from_ascii_str(name))
                        .collect(),
                    // Relaxed survives relays that refold headers; lettre's simple header
                    // canonicalization does not match the folded signature it writes.
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                )))
            })
            .transpose()?;
        Ok(Self {
            relays: Relays::from_settings(settings),
            dkim,
            retry_deferred_after: settings.retry_deferred_after,
            api,
            rate_limits,
        })
    }

    /// Closes every relay's idle pooled connections (sends in flight keep theirs); says how
    /// many.
    pub fn close_idle_connections(&self) -> String {
        let (relays, closed) = self.relays.close_idle();
        format!("closed {closed} idle SMTP connection(s) of {relays} relay(s)")
    }
}

/// Registers the email tasks and the campaign upkeep.
pub fn register(registry: &mut Registry, email: Arc<EmailTasks>, upkeep: Arc<Upkeep>) {
    let campaign = email.clone();
    let batch = email.clone();
    let single = email.clone();
    registry.on_close_idle_connections(Arc::new(move || email.close_idle_connections()));
    let registered = registry
        .register_fn("send_campaign", move |context, args| {
            campaign::send_campaign(campaign.clone(), context, args)
        })
        .and_then(|registry| {
            registry.register_fn("send_email_batch", move |context, args| {
                campaign::send_email_batch(batch.clone(), context, args)
            })
        })
        .and_then(|registry| {
            registry.register_fn("send_single_email", move |context, args| {
                campaign::send_single_email(single.clone(), context, args)
            })
        })
        .and_then(|registry| register_upkeep(registry, upkeep));
    debug_assert!(registered.is_ok(), "built-in task names are valid");
}

fn register_upkeep(
    registry: &mut Registry,
    upkeep: Arc<Upkeep>,
) -> Result<&mut Registry, crate::domain::ValidationError> {
    let monitor = upkeep.clone();
    let stuck = upkeep.clone();
    let connections = upkeep;
    registry
        .register_fn("monitor_campaign_progress", move |context, args| {
            upkeep::monitor_campaign_progress(monitor.clone(), context, args)
        })?
        .register_fn("cleanup_stuck_campaigns", move |context, args| {
            upkeep::cleanup_stuck_campaigns(stuck.clone(), context, args)
        })?
        .register_fn("cleanup_smtp_connections", move |context, args| {
            upkeep::cleanup_smtp_connections(connections.clone(), context, args)
        })
}
