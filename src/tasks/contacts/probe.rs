//! The SMTP probe: asks a domain's best reachable mail exchanger whether it takes mail for each
//! address (EHLO, MAIL FROM, one RCPT TO per address, never DATA, QUIT), many addresses per
//! session. A random local part asked first tells a catch-all domain, whose answers say nothing
//! of its mailboxes; the verdict is remembered per domain for `CATCH_ALL_TTL` (a domain known
//! to take everything is not asked again meanwhile). Probes at once are limited per exchanger.
//!
//! A session ends with RSET rather than QUIT and waits, a few seconds at most, for the next
//! probe to the same address: one exchanger serves many domains (a hosting provider's, a mail
//! service's), and a batch of contacts over a thousand domains would otherwise open a thousand
//! connections where a few do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::Address as MailAddress;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::dns::MailDns;
use crate::config::ValidationSettings;
use crate::domain::ValidationError;

/// How long a domain's catch-all verdict is trusted.
const CATCH_ALL_TTL: Duration = Duration::from_secs(60 * 60);
/// Verdicts remembered before the expired ones are dropped.
const CATCH_ALL_ENTRIES: usize = 100_000;

/// How long a session waits for its next probe.
const IDLE_FOR: Duration = Duration::from_secs(5);
/// Idle sessions kept per exchanger address.
const IDLE_PER_ADDRESS: usize = 8;
/// Exchanger addresses with idle sessions past which the expired ones are swept from all.
const IDLE_ADDRESSES: usize = 64;
/// RCPTs one connection asks before it is closed (servers limit them per session).
const RCPTS_PER_CONNECTION: u32 = 500;

/// A session waiting for its next probe.
struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
    rcpts: u32,
}

/// What an exchanger said of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 250/251: it takes mail for the address.
    Accepted,
    /// 550/551/553: no such mailbox.
    Refused(String),
    /// The domain accepts any address: its answer proves nothing.
    CatchAll,
    /// A 4xx, another 5xx, a timeout, no exchanger reachable: ask again later.
    Unknown(String),
}

/// Probes, with a limit per exchanger and catch-all verdicts remembered per domain.
#[derive(Debug)]
pub struct Prober {
    helo: ClientId,
    mail_from: Option<MailAddress>,
    port: u16,
    timeout: Duration,
    per_exchanger: usize,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per domain: whether it takes any address, and since when that is known.
    catch_all: Mutex<HashMap<String, (bool, Instant)>>,
    /// Sessions waiting for their next probe, per exchanger address.
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Idle")
            .field("since", &self.since)
            .field("rcpts", &self.rcpts)
            .finish_non_exhaustive()
    }
}

impl Prober {
    /// A prober as `[validation]` says; an empty `mail_from` is the null sender.
    pub fn new(settings: &ValidationSettings) -> Result<Self, ValidationError> {
        let mail_from = match settings.mail_from.as_str() {
            "" => None,
            text => Some(MailAddress::from_str(text).map_err(|error| {
                ValidationError::new("validation.mail_from", format!("{text:?}: {error}"))
            })?),
        };
        Ok(Self {
            helo: ClientId::Domain(settings.helo_name.clone()),
            mail_from,
            port: settings.smtp_port,
            timeout: settings.probe_timeout,
            per_exchanger: settings.max_probes_per_mx.max(1) as usize,
            limits: Mutex::new(HashMap::new()),
            catch_all: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Asks the first exchanger that answers about every address of one domain (ASCII forms).
    pub async fn probe(
        &self,
        dns: &MailDns,
        domain: &str,
        exchangers: &[String],
        addresses: &[String],
    ) -> Vec<Answer> {
        if self.known_catch_all(domain) == Some(true) {
            return addresses.iter().map(|_| Answer::CatchAll).collect();
        }
        let mut last_failure = "no mail exchanger".to_owned();
        for host in exchangers {
            let Some(ip) = dns.address_of(host).await else {
                last_failure = format!("{host} has no address");
                continue;
            };
            let permit = self.limit(host).acquire_owned().await;
            let Ok(_permit) = permit else {
                break;
            };
            match tokio::time::timeout(
                self.timeout,
                self.session(SocketAddr::new(ip, self.port), domain, addresses),
            )
            .await
            {
                Ok(Ok(answers)) => return answers,
                Ok(Err(why)) => last_failure = format!("{host}: {why}"),
                Err(_) => last_failure = format!("{host} did not answer in time"),
            }
        }
        addresses
            .iter()
            .map(|_| Answer::Unknown(last_failure.clone()))
            .collect()
    }

    /// Whether `domain` takes any address, when that was learnt within `CATCH_ALL_TTL`.
    fn known_catch_all(&self, domain: &str) -> Option<bool> {
        let known = self
            .catch_all
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known
            .get(domain)
            .filter(|(_, since)| since.elapsed() < CATCH_ALL_TTL)
            .map(|(catch_all, _)| *catch_all)
    }

    fn remember_catch_all(&self, domain: &str, catch_all: bool) {
        let mut known = self
            .catch_all
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= CATCH_ALL_ENTRIES {
            known.retain(|_, (_, since)| since.elapsed() < CATCH_ALL_TTL);
        }
        if known.len() < CATCH_ALL_ENTRIES {
            known.insert(domain.to_owned(), (catch_all, Instant::now()));
        }
    }

    fn limit(&self, host: &str) -> Arc<Semaphore> {
        self.limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_exchanger)))
            .clone()
    }

    /// A session to `at` that has said MAIL FROM: an idle one when one is waiting and still
    /// answers, else a new one.
    async fn open(&self, at: SocketAddr) -> Result<(AsyncSmtpConnection, u32), String> {
        while let Some(mut idle) = self.take_idle(at) {
            if idle
                .connection
                .command(Mail::new(self.mail_from.clone(), vec![]))
                .await
                .is_ok()
            {
                return Ok((idle.connection, idle.rcpts));
            }
        }
        let stream = TcpStream::connect(at)
            .await
            .map_err(|error| format!("cannot connect to {at}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.helo)
                .await
                .map_err(|error| format!("no greeting: {error}"))?;
        connection
            .command(Mail::new(self.mail_from.clone(), vec![]))
            .await
            .map_err(|error| format!("MAIL FROM refused: {error}"))?;
        Ok((connection, 0))
    }

    fn take_idle(&self, at: SocketAddr) -> Option<Idle> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let waiting = idle.get_mut(&at)?;
        // Sessions idle too long may have been closed by the server: they are closed.
        quit_all(waiting.extract_if(.., |session| session.since.elapsed() >= IDLE_FOR));
        waiting.pop()
    }

    /// Ends a session's transaction and keeps it for the next probe, or closes it.
    async fn release(&self, at: SocketAddr, mut connection: AsyncSmtpConnection, rcpts: u32) {
        let reusable = !connection.has_broken()
            && rcpts < RCPTS_PER_CONNECTION
            && connection.command(Rset).await.is_ok();
        if reusable {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() >= IDLE_ADDRESSES {
                // A worker probes many exchangers once: their sessions are not kept waiting.
                idle.retain(|_, waiting| {
                    quit_all(waiting.extract_if(.., |session| session.since.elapsed() >= IDLE_FOR));
                    !waiting.is_empty()
                });
            }
            let waiting = idle.entry(at).or_default();
            quit_all(waiting.extract_if(.., |session| session.since.elapsed() >= IDLE_FOR));
            if waiting.len() < IDLE_PER_ADDRESS {
                waiting.push(Idle {
                    connection,
                    since: Instant::now(),
                    rcpts,
                });
                return;
            }
        }
        let _ = connection.quit().await;
    }

    /// One session: the catch-all question (unless known), then each address.
    async fn session(
        &self,
        at: SocketAddr,
        domain: &str,
        addresses: &[String],
    ) -> Result<Vec<Answer>, String> {
        let (mut connection, mut rcpts) = self.open(at).await?;
        let catch_all = match self.known_catch_all(domain) {
            Some(known) => known,
            None => {
                let random = format!("celeritas-probe-{:016x}@{domain}", rand::random::<u64>());
                let answer = rcpt(&mut connection, &random).await;
                rcpts += 1;
                let catch_all = answer == Answer::Accepted;
                if matches!(answer, Answer::Accepted | Answer::Refused(_)) {
                    self.remember_catch_all(domain, catch_all);
                }
                catch_all
            }
        };
        let mut answers = Vec::with_capacity(addresses.len());
        for address in addresses {
            answers.push(if catch_all {
                Answer::CatchAll
            } else {
                rcpts += 1;
                rcpt(&mut connection, address).await
            });
            if connection.has_broken() {
                break;
            }
        }
        while answers.len() < addresses.len() {
            answers.push(Answer::Unknown(
                "the exchanger closed the session".to_owned(),
            ));
        }
        self.release(at, connection, rcpts).await;
        Ok(answers)
    }
}

/// Says QUIT to sessions that waited too long, in the background (where a runtime runs).
fn quit_all(sessions: impl Iterator<Item = Idle>) {
    let sessions: Vec<Idle> = sessions.collect();
    if sessions.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            for mut session in sessions {
                let _ = session.connection.quit().await;
            }
        });
    }
}

/// One RCPT TO and what its reply means.
async fn rcpt(connection: &mut AsyncSmtpConnection, address: &str) -> Answer {
    let Ok(recipient) = MailAddress::from_str(address) else {
        return Answer::Unknown(format!("{address} cannot be put to an SMTP server"));
    };
    match connection.command(Rcpt::new(recipient, vec![])).await {
        Ok(_) => Answer::Accepted,
        Err(error) => match error.status().map(|code| code.to_string()).as_deref() {
            Some(code @ ("550" | "551" | "553")) => Answer::Refused(format!("{code}: {error}")),
            Some(code) => Answer::Unknown(format!("{code}: {error}")),
            None => Answer::Unknown(error.to_string()),
        },
    }
}
