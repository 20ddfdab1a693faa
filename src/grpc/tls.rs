//! TLS on the coordinator's port: a rustls configuration read from `[coordinator.tls]`'s files
//! and read again whenever one of them changes, and the accept loop that handshakes each
//! connection on a task of its own (a client that stalls its handshake holds up no one).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsSettings;

/// How often the files are looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("coordinator.tls.{field}: {path}: {reason}")]
pub struct TlsError {
    field: &'static str,
    path: String,
    reason: String,
}

impl TlsError {
    fn new(field: &'static str, path: &Path, reason: impl ToString) -> Self {
        Self {
            field,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The server's TLS configuration, replaced when its files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    current: RwLock<(Arc<ServerConfig>, Vec<Stamp>)>,
}

/// What a file looked like when it was read: a change of either means read it again.
type Stamp = Option<(SystemTime, u64)>;

impl ReloadingTls {
    /// Reads the files once; a coordinator whose files do not load does not start.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(settings);
        let config = server_config(settings)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new((config, stamps)),
        }))
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
            .clone()
    }

    /// The current configuration, offering `protocol` by ALPN (gRPC's is `h2`).
    fn config_for(&self, protocol: &[u8]) -> Arc<ServerConfig> {
        let config = self.config();
        if config
            .alpn_protocols
            .iter()
            .any(|offered| offered == protocol)
        {
            return config;
        }
        let mut other = (*config).clone();
        other.alpn_protocols = vec![protocol.to_vec()];
        Arc::new(other)
    }

    /// Reads the files again if they changed since the last read. A set that does not load
    /// (a certificate written before its key) is reported and the previous one kept.
    fn reload_if_changed(&self) {
        let now = stamps(&self.settings);
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .1
            == now;
        if unchanged {
            return;
        }
        match server_config(&self.settings) {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = (config, now);
                tracing::info!(
                    cert_file = %self.settings.cert_file.display(),
                    "TLS files changed; new connections use them"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but do not load; keeping the previous ones");
            }
        }
    }
}

fn stamps(settings: &TlsSettings) -> Vec<Stamp> {
    let mut files: Vec<&PathBuf> = vec![&settings.cert_file, &settings.key_file];
    files.extend(settings.client_ca_file.as_ref());
    files
        .into_iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

fn read_certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| TlsError::new(field, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(field, path, error))?;
    if certificates.is_empty() {
        return Err(TlsError::new(field, path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let chain = read_certificates("cert_file", &settings.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|error| TlsError::new("key_file", &settings.key_file, error))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new("cert_file", &settings.cert_file, error))?;
    let builder = match &settings.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates("client_ca_file", path)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::new("client_ca_file", path, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|error| TlsError::new("client_ca_file", path, error))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::new("key_file", &settings.key_file, error))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` and handshakes each with the current configuration;
/// the stream yields the ones that finished. Files are looked at for changes until `stop`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    incoming_for(listener, tls, b"h2", stop)
}

/// `incoming`, offering `protocol` by ALPN: `http/1.1` for the metrics endpoint.
pub fn incoming_for(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    protocol: &'static [u8],
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
    let watched = tls.clone();
    let watch_stop = stop.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RELOAD_CHECK);
        loop {
            tokio::select! {
                _ = watch_stop.cancelled() => return,
                _ = ticks.tick() => watched.reload_if_changed(),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (socket, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config_for(protocol));
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => refused(&peer, &error.to_string()),
                    Err(_) => refused(&peer, "no TLS handshake within 10 s"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// A connection whose handshake failed: logged and counted, by a reason of few values.
fn refused(peer: &std::net::SocketAddr, reason: &str) {
    let kind = handshake_failure_kind(reason);
    metrics::counter!("celeritas_refused_connections_total", "reason" => kind).increment(1);
    tracing::info!(%peer, reason, "refused a connection: its TLS handshake failed");
}

/// A handshake failure's reason as a metrics label.
fn handshake_failure_kind(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("corrupt message") || reason.contains("invalid content type") {
        "not_tls"
    } else if reason.contains("expired") || reason.contains("notvalidyet") {
        "certificate_expired"
    } else if reason.contains("unknownissuer") || reason.contains("unknown ca") {
        "certificate_unknown_issuer"
    } else if reason.contains("no certificates") || reason.contains("peer sent no certificates") {
        "certificate_required"
    } else if reason.contains("within") {
        "timeout"
    } else {
        "handshake"
    }
}
