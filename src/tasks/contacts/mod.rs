//! The `import` queue's tasks: contact validation. `validate_contact_batch` gives every contact
//! of its batch one `contact` record: keyed by the normalised address, its status the verdict
//! (`valid`, `risky`, `invalid`, `unknown`, or `duplicate` for a repeat), its data the contact's
//! fields, a machine-readable reason and every check with its outcome.
//!
//! The checks run cheapest first and stop at the first that decides: syntax, disposable
//! domains, DNS (MX, null MX, the A/AAAA fallback). A role account is `risky` once the rest
//! passed. DNS failures that may pass (SERVFAIL, timeouts) make `unknown`, never `invalid`.

pub mod address;
pub mod dns;
pub mod lists;
pub mod sheet;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::dns::{MailDns, MailRoute};
use self::lists::Lists;
use crate::config::Config;
use crate::domain::{JsonText, RecordEntry, ValidationError};
use crate::worker::{Registry, TaskContext, TaskError};

/// The most contacts one batch takes.
pub const MAX_BATCH: usize = 10_000;
/// Records sent to the coordinator per message while a batch runs.
const RECORDS_PER_WRITE: usize = 500;

/// How far validation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// The address's syntax and the lists only.
    Syntax,
    /// And where the domain's mail goes.
    #[default]
    Dns,
}

/// What a contact is judged to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Mail can be delivered as far as the checks can tell.
    Valid,
    /// Deliverable, but unwise to send to (a role account, a disposable provider).
    Risky,
    /// Mail cannot be delivered.
    Invalid,
    /// The checks could not decide (DNS did not answer).
    Unknown,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Risky => "risky",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One check and how it came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `syntax`, `disposable`, `role`, `dns`.
    pub name: &'static str,
    /// `pass`, `fail`, `warn`, `unknown`.
    pub outcome: &'static str,
    /// For people.
    pub detail: String,
}

/// A contact's verdict, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// The deciding check's machine-readable reason (`ok` for a valid address).
    pub reason: String,
    /// The normalised address, when it parsed.
    pub address: Option<address::Address>,
    /// Every check that ran.
    pub checks: Vec<Check>,
}

/// What validation needs on a worker: the lists and the resolver, shared by every batch.
#[derive(Debug, Clone)]
pub struct Validator {
    lists: Lists,
    dns: MailDns,
}

impl Validator {
    /// A validator as `config` says.
    pub fn new(config: &Config) -> Result<Self, ValidationError> {
        Ok(Self {
            lists: Lists::load(&config.validation)?,
            dns: MailDns::new(&config.dns)?,
        })
    }

    /// Judges one address, asking DNS once per domain through `routes`.
    pub async fn judge(
        &self,
        text: &str,
        depth: Depth,
        routes: &mut HashMap<String, MailRoute>,
    ) -> Report {
        let mut checks = Vec::new();
        let address = match address::parse(text) {
            Ok(address) => address,
            Err(error) => {
                checks.push(check("syntax", "fail", error.detail));
                return report(Verdict::Invalid, error.reason, None, checks);
            }
        };
        checks.push(check("syntax", "pass", address.ascii()));
        if self.lists.is_disposable(&address.ascii_domain) {
            checks.push(check(
                "disposable",
                "fail",
                format!("{} is a disposable mail provider", address.domain),
            ));
            return report(Verdict::Risky, "disposable", Some(address), checks);
        }
        checks.push(check("disposable", "pass", String::new()));
        if depth == Depth::Dns {
            let route = match routes.get(&address.ascii_domain) {
                Some(route) => route.clone(),
                None => {
                    let route = self.dns.mail_route(&address.ascii_domain).await;
                    routes.insert(address.ascii_domain.clone(), route.clone());
                    route
                }
            };
            let (outcome, reason, detail) = match &route {
                MailRoute::Exchangers(hosts) => ("pass", None, format!("MX {}", hosts.join(", "))),
                MailRoute::Implicit(host) => ("pass", None, format!("no MX; mail goes to {host}")),
                MailRoute::NullMx => (
                    "fail",
                    Some((Verdict::Invalid, "null_mx")),
                    "the domain takes no mail (null MX)".to_owned(),
                ),
                MailRoute::NoSuchDomain => (
                    "fail",
                    Some((Verdict::Invalid, "no_such_domain")),
                    "the domain does not exist".to_owned(),
                ),
                MailRoute::NoMailHost => (
                    "fail",
                    Some((Verdict::Invalid, "no_mail_host")),
                    "the domain has no MX and no address".to_owned(),
                ),
                MailRoute::Unknown(why) => (
                    "unknown",
                    Some((Verdict::Unknown, "dns_unavailable")),
                    why.clone(),
                ),
            };
            checks.push(check("dns", outcome, detail));
            if let Some((verdict, reason)) = reason {
                return report(verdict, reason, Some(address), checks);
            }
        }
        if self.lists.is_role(&address.local) {
            checks.push(check(
                "role",
                "warn",
                format!("{} is a role account", address.local),
            ));
            return report(Verdict::Risky, "role_account", Some(address), checks);
        }
        checks.push(check("role", "pass", String::new()));
        report(Verdict::Valid, "ok", Some(address), checks)
    }
}

fn check(name: &'static str, outcome: &'static str, detail: String) -> Check {
    Check {
        name,
        outcome,
        detail,
    }
}

fn report(
    verdict: Verdict,
    reason: &str,
    address: Option<address::Address>,
    checks: Vec<Check>,
) -> Report {
    Report {
        verdict,
        reason: reason.to_owned(),
        address,
        checks,
    }
}

/// Registers `validate_contact_batch`.
pub fn register(registry: &mut Registry, validator: Arc<Validator>) {
    let registered = registry.register_fn("validate_contact_batch", move |context, args| {
        validate_contact_batch(validator.clone(), context, args)
    });
    debug_assert!(registered.is_ok(), "built-in task names are valid");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchArgs {
    /// The list the contacts are imported into (kept with each record).
    #[serde(default)]
    list_id: Option<Value>,
    #[serde(default)]
    validation: Depth,
    contacts: Vec<Contact>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contact {
    email: String,
    /// The row it came from, for reasons and duplicate keys.
    #[serde(default)]
    row: Option<u64>,
    #[serde(default)]
    fields: Map<String, Value>,
}

/// Judges each contact of the batch and records it; answers the counts by verdict.
async fn validate_contact_batch(
    validator: Arc<Validator>,
    context: TaskContext,
    args: Value,
) -> Result<Value, TaskError> {
    let args: BatchArgs = serde_json::from_value(args).map_err(TaskError::invalid_args)?;
    if args.contacts.len() > MAX_BATCH {
        return Err(TaskError::invalid_args(format!(
            "contacts: {} contacts, more than the {MAX_BATCH} one batch takes",
            args.contacts.len()
        )));
    }
    let total = args.contacts.len() as u64;
    let mut routes = HashMap::new();
    let mut seen = HashSet::new();
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    let mut pending = Vec::new();
    for (index, contact) in args.contacts.iter().enumerate() {
        let report = validator
            .judge(&contact.email, args.validation, &mut routes)
            .await;
        let row = contact.row.unwrap_or(index as u64 + 1);
        let (key, status) = match &report.address {
            Some(address) if !seen.insert(address.normalized().to_lowercase()) => {
                (format!("{} (row {row})", address.normalized()), "duplicate")
            }
            Some(address) => (address.normalized(), report.verdict.as_str()),
            None => (
                format!("row {row}: {}", contact.email.trim()),
                report.verdict.as_str(),
            ),
        };
        *counts.entry(status).or_default() += 1;
        let data = json!({
            "email": contact.email,
            "row": row,
            "list_id": args.list_id,
            "fields": contact.fields,
            "verdict": report.verdict.as_str(),
            "reason": report.reason,
            "checks": report.checks.iter().map(|check| json!({
                "check": check.name, "outcome": check.outcome, "detail": check.detail,
            })).collect::<Vec<_>>(),
        });
        pending.push(RecordEntry {
            kind: "contact".to_owned(),
            key: crate::domain::sanitize(&key, crate::domain::MAX_RECORD_KEY_BYTES).into_owned(),
            status: status.to_owned(),
            data: Some(
                JsonText::checked_from_value("data", &data).map_err(|error| {
                    TaskError::permanent("invalid_contact", format!("row {row}: {error}"))
                })?,
            ),
        });
        if pending.len() >= RECORDS_PER_WRITE {
            context.record(std::mem::take(&mut pending)).await?;
            context.progress(index as u64 + 1, total, "validated");
        }
    }
    context.record(pending).await?;
    context.progress(total, total, "validated");
    Ok(json!({ "total": total, "by_status": counts }))
}
