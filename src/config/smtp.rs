//! `[smtp]` and `[campaigns]`: how workers send email and what the campaign upkeep tasks treat
//! as stuck.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::ValidationError;

/// `[campaigns]`: read by the workers that run `monitor_campaign_progress` and
/// `cleanup_stuck_campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSettings {
    /// A running batch that reported no progress for this long has stopped moving.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// What `cleanup_stuck_campaigns` does with a stalled batch: `requeue` (abort the attempt
    /// and run the batch again, counting a retry; recipients already delivered are skipped) or
    /// `fail`.
    pub stuck_policy: StuckPolicy,
}

/// What to do with a stalled batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StuckPolicy {
    /// Abort the attempt and run the batch again.
    Requeue,
    /// Abort the attempt and fail the batch.
    Fail,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            stall_after: Duration::from_secs(15 * 60),
            stuck_policy: StuckPolicy::Requeue,
        }
    }
}

/// `[smtp]`: the relays email tasks send through, read by workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// The relay used when a campaign names none.
    pub default_relay: String,
    /// The longest one message may take to send.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// When a campaign names no delay, deferred recipients are retried after this long.
    #[serde(with = "humantime_serde")]
    pub retry_deferred_after: Duration,
    /// The relays, by name. `CELERITAS_SMTP_URL` adds (or replaces) the default one.
    pub relays: BTreeMap<String, RelaySettings>,
    /// DKIM signing, when configured.
    pub dkim: Option<DkimSettings>,
}

/// `[smtp.relays.<name>]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The relay's host.
    pub host: String,
    /// Its port (default 25, 587 with STARTTLS, 465 with TLS).
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls` (implicit TLS).
    #[serde(default = "default_tls")]
    pub tls: String,
    /// The user to log in as, if any.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// A file holding the password.
    pub password_file: Option<std::path::PathBuf>,
    /// The password itself; only from `CELERITAS_SMTP_URL`, never from a file that may be
    /// committed.
    #[serde(skip)]
    pub password: Option<String>,
    /// The most messages sent through it at once (and pooled connections).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The most messages per second through it; 0 for no limit.
    #[serde(default)]
    pub rate: u32,
    /// The most messages per second to one recipient domain; 0 for no limit.
    #[serde(default)]
    pub domain_rate: u32,
    /// Certificates (PEM) trusted for this relay's TLS besides the public roots: a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// Log in (send the password) over a connection without TLS. Refused unless set: a relay
    /// that takes a password in clear should be one on a network you trust, said so here.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
}

fn default_tls() -> String {
    "none".to_owned()
}

fn default_max_connections() -> u32 {
    8
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never printed.
        formatter
            .debug_struct("RelaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("rate", &self.rate)
            .field("domain_rate", &self.domain_rate)
            .field("ca_file", &self.ca_file)
            .field("allow_plaintext_auth", &self.allow_plaintext_auth)
            .finish()
    }
}

/// `[smtp.dkim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// A PKCS#1 PEM RSA private key.
    pub key_file: std::path::PathBuf,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            default_relay: "default".to_owned(),
            send_timeout: Duration::from_secs(30),
            retry_deferred_after: Duration::from_secs(60),
            relays: BTreeMap::new(),
            dkim: None,
        }
    }
}

impl RelaySettings {
    /// A relay from a URL: `smtp://user:pass@host:port` (plain; `?tls=starttls` for STARTTLS)
    /// or `smtps://…` (implicit TLS). The query may also set `max_connections`, `rate`,
    /// `domain_rate` and `allow_plaintext_auth`.
    pub fn from_url(text: &str) -> Result<Self, ValidationError> {
        let field = "CELERITAS_SMTP_URL";
        let invalid = |why: String| ValidationError::new(field, why);
        let url = url::Url::parse(text)
            .map_err(|error| invalid(format!("is not a URL such as smtp://host:25: {error}")))?;
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("names no host".to_owned()))?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut relay = Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port(),
            tls: match url.scheme() {
                "smtps" => "tls".to_owned(),
                "smtp" => "none".to_owned(),
                _ => return Err(invalid("must start with smtp:// or smtps://".to_owned())),
            },
            username: Some(decode(url.username())).filter(|user| !user.is_empty()),
            password_env: None,
            password_file: None,
            password: url.password().map(decode),
            max_connections: default_max_connections(),
            rate: 0,
            domain_rate: 0,
            ca_file: None,
            allow_plaintext_auth: false,
        };
        for (key, value) in url.query_pairs() {
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| invalid(format!("?{key}={value}: not a whole number")))
            };
            match key.as_ref() {
                "tls"
                    if url.scheme() == "smtp" && matches!(value.as_ref(), "starttls" | "none") =>
                {
                    relay.tls = value.into_owned();
                }
                "max_connections" => relay.max_connections = number()?,
                "rate" => relay.rate = number()?,
                "domain_rate" => relay.domain_rate = number()?,
                "allow_plaintext_auth" if matches!(value.as_ref(), "true" | "false") => {
                    relay.allow_plaintext_auth = value == "true";
                }
                _ => {
                    return Err(invalid(format!(
                        "?{key}={value}: the query takes tls=starttls (smtp://), max_connections, \
                         rate, domain_rate and allow_plaintext_auth=true"
                    )));
                }
            }
        }
        Ok(relay)
    }

    /// The password, from wherever it is configured.
    pub fn password(&self) -> Result<Option<String>, ValidationError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        if let Some(variable) = &self.password_env {
            return std::env::var(variable).map(Some).map_err(|_| {
                ValidationError::new("password_env", format!("${variable} is not set"))
            });
        }
        if let Some(file) = &self.password_file {
            return std::fs::read_to_string(file)
                .map(|text| Some(text.trim_end().to_owned()))
                .map_err(|error| {
                    ValidationError::new("password_file", format!("{}: {error}", file.display()))
                });
        }
        Ok(None)
    }
}
