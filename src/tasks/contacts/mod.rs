//! The `import` queue's tasks: contact validation. `validate_contact_batch` gives every contact
//! of its batch one `contact` record: keyed by the normalised address, its status the verdict
//! (`valid`, `risky`, `invalid`, `unknown`, or `duplicate` for a repeat), its data the contact's
//! fields, a machine-readable reason and every check with its outcome.
//!
//! The checks run cheapest first and stop at the first that decides: syntax, disposable
//! domains, DNS (MX, null MX, the A/AAAA fallback). A role account is `risky` once the rest
//! passed. DNS failures that may pass (SERVFAIL, timeouts) make `unknown`, never `invalid`;
//! a batch that left contacts `unknown` records them so and asks to be retried once after
//! `[validation] retry_unknown_after`, when it judges only what is not yet settled.

pub mod address;
pub mod dns;
mod import;
pub mod lists;
pub use import::{Importer, check_import_args};
pub mod probe;
pub mod reading;
pub mod rows;
pub mod sheet;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::dns::{MailDns, MailRoute};
use self::lists::Lists;
use self::probe::{Answer, Prober};
use crate::config::Config;
use crate::domain::{JsonText, RecordEntry, ValidationError};
use crate::worker::{Registry, TaskContext, TaskError};

/// The most contacts one batch takes.
pub const MAX_BATCH: usize = 10_000;
/// Records sent to the coordinator per message while a batch runs.
const RECORDS_PER_WRITE: usize = 500;
/// Domains a batch asks DNS about at once, and probes at once (the probes at once per mail
/// exchanger are limited apart from this, by `max_probes_per_mx`).
const DOMAINS_AT_ONCE: usize = 32;

/// How far validation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// The address's syntax and the lists only.
    Syntax,
    /// And where the domain's mail goes.
    #[default]
    Dns,
    /// And whether its mail exchanger takes mail for the address.
    Smtp,
}

impl Depth {
    /// The name args use.
    pub fn as_str(self) -> &'static str {
        match self {
            Depth::Syntax => "syntax",
            Depth::Dns => "dns",
            Depth::Smtp => "smtp",
        }
    }
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
    /// Where the domain's mail goes, when DNS was asked and said.
    pub route: Option<MailRoute>,
}

/// What validation needs on a worker: the lists and the resolver, shared by every batch.
#[derive(Debug, Clone)]
pub struct Validator {
    lists: Lists,
    dns: MailDns,
    prober: Arc<Prober>,
    retry_unknown_after: std::time::Duration,
}

impl Validator {
    /// A validator as `config` says.
    pub fn new(config: &Config) -> Result<Self, ValidationError> {
        Ok(Self {
            lists: Lists::load(&config.validation)?,
            dns: MailDns::new(&config.dns)?,
            prober: Arc::new(Prober::new(&config.validation)?),
            retry_unknown_after: config.validation.retry_unknown_after,
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
        let mut known_route = None;
        if depth != Depth::Syntax {
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
            known_route = Some(route);
        }
        if self.lists.is_role(&address.local) {
            checks.push(check(
                "role",
                "warn",
                format!("{} is a role account", address.local),
            ));
            let mut risky = report(Verdict::Risky, "role_account", Some(address), checks);
            risky.route = known_route;
            return risky;
        }
        checks.push(check("role", "pass", String::new()));
        let mut valid = report(Verdict::Valid, "ok", Some(address), checks);
        valid.route = known_route;
        valid
    }

    /// Where the mail of each of these addresses' domains goes, asked for many domains at once
    /// (the resolver's cache answers the ones asked before).
    pub async fn routes(&self, emails: &[&str]) -> HashMap<String, MailRoute> {
        let domains: HashSet<String> = emails
            .iter()
            .filter_map(|email| address::parse(email).ok())
            .map(|address| address.ascii_domain)
            .collect();
        futures::stream::iter(domains)
            .map(|domain| async move {
                let route = self.dns.mail_route(&domain).await;
                (domain, route)
            })
            .buffer_unordered(DOMAINS_AT_ONCE)
            .collect()
            .await
    }

    /// Probes the mail exchangers of the reports DNS passed, one session per domain for all of
    /// its addresses, sessions for many domains at once, and settles their verdicts by the
    /// answers.
    pub async fn probe(&self, reports: &mut [Report]) {
        let mut by_domain: HashMap<String, (Vec<String>, Vec<usize>)> = HashMap::new();
        for (index, report) in reports.iter().enumerate() {
            let (Some(address), Some(route)) = (&report.address, &report.route) else {
                continue;
            };
            let hosts = match route {
                MailRoute::Exchangers(hosts) => hosts.clone(),
                MailRoute::Implicit(host) => vec![host.clone()],
                _ => continue,
            };
            by_domain
                .entry(address.ascii_domain.clone())
                .or_insert_with(|| (hosts, Vec::new()))
                .1
                .push(index);
        }
        let sessions = by_domain.into_iter().map(|(domain, (hosts, indices))| {
            let addresses: Vec<String> = indices
                .iter()
                .filter_map(|&index| reports[index].address.as_ref().map(address::Address::ascii))
                .collect();
            async move {
                let answers = self
                    .prober
                    .probe(&self.dns, &domain, &hosts, &addresses)
                    .await;
                (indices, answers)
            }
        });
        let settled: Vec<(Vec<usize>, Vec<Answer>)> = futures::stream::iter(sessions)
            .buffer_unordered(DOMAINS_AT_ONCE)
            .collect()
            .await;
        for (indices, answers) in settled {
            for (index, answer) in indices.into_iter().zip(answers) {
                settle_by_answer(&mut reports[index], answer);
            }
        }
    }
}

/// A verdict in the light of the mail exchanger's answer; a role account the exchanger takes
/// stays risky.
fn settle_by_answer(report: &mut Report, answer: Answer) {
    let (outcome, detail, settled) = match answer {
        Answer::Accepted => (
            "pass",
            "the mail exchanger takes mail for it".to_owned(),
            None,
        ),
        Answer::Refused(why) => ("fail", why, Some((Verdict::Invalid, "mailbox_unavailable"))),
        Answer::CatchAll => (
            "warn",
            "the domain accepts any address".to_owned(),
            Some((Verdict::Risky, "catch_all")),
        ),
        Answer::Unknown(why) => ("unknown", why, Some((Verdict::Unknown, "smtp_unavailable"))),
    };
    report.checks.push(check("smtp", outcome, detail));
    if let Some((verdict, reason)) = settled {
        report.verdict = verdict;
        report.reason = reason.to_owned();
    }
}

fn check(name: &'static str, outcome: &'static str, detail: String) -> Check {
    Check {
        name,
        outcome,
        // What a DNS or SMTP server said is foreign text.
        detail: crate::domain::sanitize(&detail, 1024).into_owned(),
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
        route: None,
    }
}

/// Registers `import_contacts_async` and `validate_contact_batch`.
pub fn register(registry: &mut Registry, validator: Arc<Validator>, importer: Arc<Importer>) {
    let registered = registry
        .register_fn("validate_contact_batch", move |context, args| {
            validate_contact_batch(validator.clone(), context, args)
        })
        .and_then(|registry| {
            registry.register_fn("import_contacts_async", move |context, args| {
                import::import_contacts_async(importer.clone(), context, args)
            })
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
    let args: BatchArgs = crate::tasks::parse_args(args)?;
    if args.contacts.len() > MAX_BATCH {
        return Err(TaskError::invalid_args(format!(
            "contacts: {} contacts, more than the {MAX_BATCH} one batch takes",
            args.contacts.len()
        )));
    }
    if args
        .list_id
        .as_ref()
        .is_some_and(|list_id| list_id.to_string().len() > 256)
    {
        return Err(TaskError::invalid_args(
            "list_id: longer than 256 bytes; give the list's id, not the list",
        ));
    }
    let count = args.contacts.len() as u64;
    // Inside an import the import reports the total; a batch reports what it has done.
    let total = if context.root_id == context.task_id {
        count
    } else {
        0
    };
    // A retried batch (its first attempt left contacts `unknown`, or its worker was lost)
    // judges only the contacts not yet settled.
    let mut settled: HashMap<String, &'static str> = HashMap::new();
    if context.lease.attempt > 1 {
        for status in ["valid", "risky", "invalid", "duplicate"] {
            for key in context.recorded_keys(CONTACT, Some(status)).await? {
                settled.insert(key, status);
            }
        }
    }
    let mut seen = HashSet::new();
    let keyed: Vec<(String, Option<&'static str>)> = args
        .contacts
        .iter()
        .enumerate()
        .map(|(index, contact)| {
            let row = contact.row.unwrap_or(index as u64 + 1);
            contact_key(contact, row, &mut seen)
        })
        .collect();
    let to_judge: Vec<usize> = (0..args.contacts.len())
        .filter(|&index| !settled.contains_key(&keyed[index].0))
        .collect();
    let mut routes = if args.validation == Depth::Syntax {
        HashMap::new()
    } else {
        let emails: Vec<&str> = to_judge
            .iter()
            .map(|&index| args.contacts[index].email.as_str())
            .collect();
        validator.routes(&emails).await
    };
    let mut reports = Vec::with_capacity(to_judge.len());
    for &index in &to_judge {
        let email = &args.contacts[index].email;
        reports.push(validator.judge(email, args.validation, &mut routes).await);
    }
    context.progress(0, total, "checked syntax and DNS");
    if args.validation == Depth::Smtp {
        validator.probe(&mut reports).await;
    }
    // The batch's counts by status: what earlier attempts settled, and what this one decides.
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for (key, _) in &keyed {
        if let Some(status) = settled.get(key) {
            *counts.entry(status).or_default() += 1;
        }
    }
    let mut pending = Vec::new();
    let mut unknown = 0usize;
    for (done, (&index, report)) in to_judge.iter().zip(&reports).enumerate() {
        let contact = &args.contacts[index];
        let row = contact.row.unwrap_or(index as u64 + 1);
        let (key, duplicate) = &keyed[index];
        let status = duplicate.unwrap_or(report.verdict.as_str());
        if status == "unknown" {
            unknown += 1;
        }
        *counts.entry(status).or_default() += 1;
        let data = json!({
            "email": crate::domain::sanitize(&contact.email, 1024),
            "row": row,
            "list_id": args.list_id,
            "fields": contact.fields,
            "verdict": report.verdict.as_str(),
            "reason": report.reason,
            "attempt": context.lease.attempt,
            "checks": report.checks.iter().map(|check| json!({
                "check": check.name, "outcome": check.outcome, "detail": check.detail,
            })).collect::<Vec<_>>(),
        });
        pending.push(contact_record(key, status, data));
        if pending.len() >= RECORDS_PER_WRITE {
            context.record(std::mem::take(&mut pending)).await?;
            context.progress(done as u64 + 1, total, "validated");
        }
    }
    context.record(pending).await?;
    // What could not be decided is asked once more, later: a greylisting exchanger takes the
    // second try; a DNS server may have recovered.
    if unknown > 0 && context.retries == 0 && context.max_retries > 0 {
        return Err(TaskError::retry_after(
            "validation_deferred",
            format!(
                "{unknown} contacts could not be decided; asking again in {}",
                humantime::format_duration(validator.retry_unknown_after)
            ),
            validator.retry_unknown_after,
        ));
    }
    context
        .report_progress(count, total, format!("validated {count} contacts"))
        .await?;
    Ok(json!({
        "total": count,
        "judged": to_judge.len(),
        "by_status": counts,
    }))
}

/// A contact's record key and, for a repeat of an earlier contact of the batch, the status
/// `duplicate`: the normalised address, or the row and the text for what is no address.
fn contact_key(
    contact: &Contact,
    row: u64,
    seen: &mut HashSet<String>,
) -> (String, Option<&'static str>) {
    match address::parse(&contact.email) {
        Ok(address) if !seen.insert(address.normalized().to_lowercase()) => (
            format!("{} (row {row})", address.normalized()),
            Some("duplicate"),
        ),
        Ok(address) => (address.normalized(), None),
        Err(_) => (format!("row {row}: {}", contact.email.trim()), None),
    }
}

/// The record kind of a contact.
pub const CONTACT: &str = "contact";

/// A contact's record: its key made storable, its data too (see `storable_data`).
fn contact_record(key: &str, status: &str, mut data: Value) -> RecordEntry {
    RecordEntry {
        kind: CONTACT.to_owned(),
        key: crate::domain::sanitize(key, crate::domain::MAX_RECORD_KEY_BYTES).into_owned(),
        status: status.to_owned(),
        data: Some(storable_data(&mut data)),
    }
}

/// A contact's record data as a store holds it. Fields a store cannot hold (a NUL, too deep)
/// or too many to fit a record are left out, saying so, rather than failing the whole batch
/// for one row.
fn storable_data(data: &mut Value) -> JsonText {
    if let Ok(text) = JsonText::checked_from_value("data", data)
        && text.as_str().len() <= crate::domain::MAX_RECORD_DATA_BYTES
    {
        return text;
    }
    data["fields"] = json!({});
    data["fields_left_out"] = json!(format!(
        "the row's fields cannot be stored with it (more than {} bytes, or text a store cannot hold)",
        crate::domain::MAX_RECORD_DATA_BYTES
    ));
    JsonText::from_value(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_too_large_for_a_record_are_left_out_and_the_verdict_kept() {
        let mut small = json!({"email": "a@b.ru", "fields": {"name": "Ivan"}, "verdict": "valid"});
        assert_eq!(
            storable_data(&mut small).to_value()["fields"]["name"],
            "Ivan"
        );
        let huge = "x".repeat(crate::domain::MAX_RECORD_DATA_BYTES);
        let mut large = json!({"email": "a@b.ru", "fields": {"notes": huge}, "verdict": "valid"});
        let stored = storable_data(&mut large).to_value();
        assert_eq!(stored["fields"], json!({}));
        assert_eq!(stored["verdict"], "valid");
        assert!(
            stored["fields_left_out"]
                .as_str()
                .unwrap()
                .contains("bytes")
        );
    }
}
