//! Where a domain's mail goes, through hickory-resolver: one resolver per worker, whose cache
//! honours the records' TTLs, shared by every batch.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::DnsSettings;
use crate::domain::ValidationError;

/// What DNS says of a domain's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailRoute {
    /// Its mail exchangers, best first.
    Exchangers(Vec<String>),
    /// No MX, but an address: mail goes to the domain itself (RFC 5321 §5.1).
    Implicit(String),
    /// A null MX (RFC 7505): the domain takes no mail.
    NullMx,
    /// The domain does not exist.
    NoSuchDomain,
    /// It exists and has neither MX nor address records.
    NoMailHost,
    /// No answer could be had (SERVFAIL, a timeout, a refusal): try again later.
    Unknown(String),
}

/// A resolver for mail routes.
#[derive(Debug, Clone)]
pub struct MailDns {
    /// `Err` when the system has no resolver configuration and none was configured: every
    /// route is then unknown, saying why, and the worker's other tasks still run.
    resolver: Result<TokioResolver, String>,
}

impl MailDns {
    /// A resolver of `settings.nameservers` (`host:port`; the system's when there are none).
    pub fn new(settings: &DnsSettings) -> Result<Self, ValidationError> {
        let mut builder = if settings.nameservers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(error) => {
                    let why = format!(
                        "the system has no resolver configuration ({error}); set [dns] nameservers"
                    );
                    tracing::warn!(%why, "contact validation cannot ask DNS");
                    return Ok(Self { resolver: Err(why) });
                }
            }
        } else {
            let mut servers = Vec::new();
            for (index, server) in settings.nameservers.iter().enumerate() {
                let field = format!("dns.nameservers[{index}]");
                let address: SocketAddr = server
                    .parse()
                    .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        ValidationError::new(
                            field,
                            format!("{server:?} is not an IP address with an optional :port"),
                        )
                    })?;
                let mut config = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut config.connections {
                    connection.port = address.port();
                }
                servers.push(config);
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts as usize;
        options.cache_size = settings.cache_size;
        options.ndots = 0;
        let resolver = builder.build().map_err(|error| {
            ValidationError::new("dns", format!("cannot build a resolver: {error}"))
        })?;
        Ok(Self {
            resolver: Ok(resolver),
        })
    }

    /// Where mail for `ascii_domain` goes.
    pub async fn mail_route(&self, ascii_domain: &str) -> MailRoute {
        let resolver = match &self.resolver {
            Ok(resolver) => resolver,
            Err(why) => return MailRoute::Unknown(why.clone()),
        };
        let name = format!("{ascii_domain}.");
        match resolver.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut exchangers: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if exchangers.len() == 1 && matches!(exchangers[0].1.as_str(), "." | "") {
                    return MailRoute::NullMx;
                }
                exchangers.retain(|(_, host)| !matches!(host.as_str(), "." | ""));
                exchangers.sort();
                if exchangers.is_empty() {
                    return implicit_route(resolver, &name).await;
                }
                MailRoute::Exchangers(
                    exchangers
                        .into_iter()
                        .map(|(_, host)| host.trim_end_matches('.').to_owned())
                        .collect(),
                )
            }
            Err(error) if error.is_nx_domain() => MailRoute::NoSuchDomain,
            Err(error) if error.is_no_records_found() => implicit_route(resolver, &name).await,
            Err(error) => MailRoute::Unknown(describe(&error)),
        }
    }
}

impl MailDns {
    /// An address of a mail exchanger, if it has one.
    pub async fn address_of(&self, host: &str) -> Option<IpAddr> {
        let resolver = self.resolver.as_ref().ok()?;
        let name = format!("{}.", host.trim_end_matches('.'));
        resolver.lookup_ip(name.as_str()).await.ok()?.iter().next()
    }
}

/// A domain without MX takes mail at its own address, if it has one.
async fn implicit_route(resolver: &TokioResolver, name: &str) -> MailRoute {
    match resolver.lookup_ip(name).await {
        Ok(addresses) if addresses.iter().next().is_some() => {
            MailRoute::Implicit(name.trim_end_matches('.').to_owned())
        }
        Ok(_) => MailRoute::NoMailHost,
        Err(error) if error.is_nx_domain() => MailRoute::NoSuchDomain,
        Err(error) if error.is_no_records_found() => MailRoute::NoMailHost,
        Err(error) => MailRoute::Unknown(describe(&error)),
    }
}

fn describe(error: &NetError) -> String {
    match error {
        NetError::Timeout => "the DNS query timed out".to_owned(),
        other => format!("DNS failed: {other}"),
    }
}
