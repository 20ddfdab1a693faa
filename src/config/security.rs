//! `[coordinator.tls]` and `[auth]`: who may reach a coordinator, and with what.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::{AcceptedToken, QueueName, Roles, TokenDigest, TokenName, ValidationError};

/// `[coordinator.tls]`: TLS on the gRPC port. The files are read again when they change, so a
/// certificate is rotated without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM.
    pub cert_file: PathBuf,
    /// The server's private key, PEM.
    pub key_file: PathBuf,
    /// The CA whose certificates clients (workers) may present, PEM; a client's identity is
    /// its certificate's subject common name (or, without one, its first DNS name).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse connections that present no certificate from `client_ca_file`.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// `[auth]`: tokens with roles, and which queues each worker identity may consume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Every call but health (and reflection, unless `token_for_reflection`) needs a token:
    /// one of `tokens` or one made with `celeritas tokens create`.
    pub required: bool,
    /// Reflection needs a token too (by default it stays open, as health does, for stock tools).
    pub token_for_reflection: bool,
    /// Tokens named here, by their SHA-256 (`celeritas tokens hash` prints it).
    pub tokens: BTreeMap<String, ConfiguredToken>,
    /// The queues each worker identity (a client certificate's name, or a token's name) may
    /// consume; `"*"` in a list is every queue. When any is listed, an identity that is not
    /// listed may consume none, unless the entry `"*"` says what the others may.
    pub worker_queues: BTreeMap<String, Vec<String>>,
}

/// In `[auth] worker_queues`: every identity (as a key) or every queue (in a list).
const ANY: &str = "*";

/// `[auth.tokens.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredToken {
    /// What it may do: `submit`, `read`, `operate`, `worker`, `admin`.
    pub roles: Vec<String>,
    /// The token's SHA-256, 64 hex digits; the token itself is never written down.
    pub sha256: String,
}

impl AuthSettings {
    /// The configured tokens, checked.
    pub fn known_tokens(&self) -> Result<Vec<AcceptedToken>, ValidationError> {
        self.tokens
            .iter()
            .map(|(name, token)| {
                let field = format!("auth.tokens.{name}");
                Ok(AcceptedToken {
                    name: TokenName::parse(&field, name)?,
                    roles: Roles::parse_all(&format!("{field}.roles"), &token.roles)?,
                    digest: TokenDigest::from_hex(&format!("{field}.sha256"), &token.sha256)?,
                })
            })
            .collect()
    }

    /// Checks the tokens and the queue lists.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.known_tokens()?;
        for (identity, queues) in &self.worker_queues {
            let field = format!("auth.worker_queues.{identity}");
            if identity.is_empty() {
                return Err(ValidationError::new(field, "an identity cannot be empty"));
            }
            for (index, queue) in queues.iter().enumerate() {
                if queue != ANY {
                    QueueName::parse(&format!("{field}[{index}]"), queue)?;
                }
            }
        }
        Ok(())
    }

    /// The queues `identity` may consume: `None` for any.
    pub fn queues_of(&self, identity: Option<&str>) -> Option<Vec<String>> {
        if self.worker_queues.is_empty() {
            return None;
        }
        let queues = identity
            .and_then(|identity| self.worker_queues.get(identity))
            .or_else(|| self.worker_queues.get(ANY))
            .cloned()
            .unwrap_or_default();
        (!queues.iter().any(|queue| queue == ANY)).then_some(queues)
    }
}

/// Whether a listening address is reachable only from this host.
pub fn is_loopback(address: &SocketAddr) -> bool {
    address.ip().is_loopback()
}
