//! `[dns]` and `[validation]`: how workers check contacts, read by the workers that run the
//! `import` queue's tasks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[dns]`: the resolver contact validation asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// Name servers as `IP` or `IP:port`; none means the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<String>,
    /// How long one query may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many times a query is sent before it counts as unanswered.
    pub attempts: u32,
    /// How many answers the resolver's cache keeps (each for its TTL).
    pub cache_size: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 32_768,
        }
    }
}

/// `[validation]`: what contact validation checks and how it probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Local parts that name a role rather than a person; such addresses are `risky`.
    pub role_accounts: Vec<String>,
    /// A file of further disposable domains, one a line (`#` starts a comment), besides the
    /// built-in list.
    pub disposable_domains_file: Option<PathBuf>,
    /// The name the SMTP probe gives in EHLO.
    pub helo_name: String,
    /// The sender the probe gives in MAIL FROM (empty for the null sender).
    pub mail_from: String,
    /// The port mail exchangers are probed on.
    pub smtp_port: u16,
    /// The longest one probe session may take.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Probe sessions at once per mail exchanger.
    pub max_probes_per_mx: u32,
    /// How long a batch waits before asking once more about the contacts it could not decide
    /// (a greylisting exchanger takes a second try after a few minutes; a failing DNS server
    /// may recover).
    #[serde(with = "humantime_serde")]
    pub retry_unknown_after: Duration,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        let roles = [
            "abuse",
            "admin",
            "administrator",
            "billing",
            "contact",
            "help",
            "hostmaster",
            "info",
            "mail",
            "mailer-daemon",
            "marketing",
            "no-reply",
            "noc",
            "noreply",
            "office",
            "postmaster",
            "root",
            "sales",
            "security",
            "support",
            "webmaster",
        ];
        Self {
            role_accounts: roles.iter().map(|role| (*role).to_owned()).collect(),
            disposable_domains_file: None,
            helo_name: "localhost".to_owned(),
            mail_from: String::new(),
            smtp_port: 25,
            probe_timeout: Duration::from_secs(20),
            max_probes_per_mx: 2,
            retry_unknown_after: Duration::from_secs(5 * 60),
        }
    }
}
