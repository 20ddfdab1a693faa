//! The connections of one SMTP relay: lettre's `AsyncSmtpConnection` (the protocol, TLS,
//! authentication) over sockets opened here, pooled here.
//!
//! Not lettre's pooled transport, for two reasons. Its sockets keep Nagle's algorithm on, and
//! lettre writes a message's closing "\r\n.\r\n" as a write of its own, which then waits for the
//! server's delayed ACK of the body: about 40 ms per message (173 messages a second against
//! smtp-sink, where smtp-source managed 7,760). And its pool takes back a connection whose send
//! was cancelled or timed out, mid-conversation. Here every socket has TCP_NODELAY, and a
//! connection belongs to the send using it: one that does not finish is dropped, closing it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A connection idle for longer is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection idle for longer is checked with a NOOP before it is reused.
const CHECK_AFTER: Duration = Duration::from_secs(1);
/// The longest a TCP connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a NOOP check or a closing QUIT may wait for the server; then the socket is
/// simply dropped.
const SHORT_EXCHANGE: Duration = Duration::from_secs(5);

/// How a relay's connections are secured.
pub enum Security {
    /// Plain text.
    None,
    /// Plain text upgraded with STARTTLS (lettre's, through rustls), which the server must offer.
    StartTls(TlsParameters),
    /// TLS from the first byte (SMTPS), through rustls with the webpki roots.
    Implicit(TlsConnector, ServerName<'static>),
}

impl Security {
    /// Implicit TLS to `host`, verified against the webpki roots and the certificates of
    /// `ca_pem`. The error names what is wrong: `("host", …)` or `("ca_file", …)`.
    pub fn implicit(host: &str, ca_pem: Option<&[u8]>) -> Result<Self, (&'static str, String)> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for certificate in ca_pem
            .map(CertificateDer::pem_slice_iter)
            .into_iter()
            .flatten()
        {
            let certificate = certificate
                .map_err(|error| ("ca_file", format!("not a PEM certificate: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| ("ca_file", format!("not a usable CA certificate: {error}")))?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| ("tls", error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|error| ("host", format!("{host:?} is not a server name: {error}")))?;
        Ok(Security::Implicit(
            TlsConnector::from(Arc::new(config)),
            name,
        ))
    }
}

/// Why a message could not be handed to the relay.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The relay answered, or the conversation broke (lettre's error says which).
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// No conversation could start.
    #[error("{0}")]
    Connect(String),
}

impl SendError {
    /// Whether the relay refused for good (a 5xx).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(error) if error.is_permanent())
    }

    /// Whether the relay said it is overloaded or limiting us (421, 450, 451, 452): a reason
    /// to send to the same place more slowly.
    pub fn is_pushback(&self) -> bool {
        matches!(self, SendError::Smtp(error) if error.status().is_some_and(|code| {
            matches!(code.to_string().as_str(), "421" | "450" | "451" | "452")
        }))
    }
}

/// Where and how to connect, and the connections not in use.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl SmtpPool {
    /// A pool for `host:port` keeping at most `max_idle` connections open between sends.
    pub fn new(
        host: &str,
        port: u16,
        security: Security,
        credentials: Option<Credentials>,
        max_idle: usize,
    ) -> Self {
        Self {
            host: host.to_owned(),
            port,
            security,
            credentials,
            hello: ClientId::default(),
            max_idle: max_idle.max(1),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one message over an idle connection or a new one.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, SendError> {
        let mut connection = self.checkout().await?;
        let sent = connection.send(envelope, message).await;
        // lettre closes a connection after any error; a healthy one goes back.
        if !connection.has_broken() {
            self.checkin(connection);
        }
        Ok(sent?)
    }

    /// Closes every idle connection (with a QUIT); answers how many.
    pub fn close_idle(&self) -> usize {
        let idle = std::mem::take(&mut *self.lock());
        let closed = idle.len();
        for (connection, _) in idle {
            quit(connection);
        }
        closed
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let (popped, stale) = {
                let mut idle = self.lock();
                // Connections idle too long are closed here, not left for a reaper.
                let stale: Vec<AsyncSmtpConnection> = idle
                    .extract_if(.., |(_, since)| since.elapsed() > IDLE_TIMEOUT)
                    .map(|(connection, _)| connection)
                    .collect();
                (idle.pop(), stale)
            };
            stale.into_iter().for_each(quit);
            let Some((mut connection, since)) = popped else {
                return self.connect().await;
            };
            if since.elapsed() <= CHECK_AFTER {
                return Ok(connection);
            }
            let alive = tokio::time::timeout(SHORT_EXCHANGE, connection.test_connected()).await;
            if matches!(alive, Ok(true)) {
                return Ok(connection);
            }
            quit(connection);
        }
    }

    fn checkin(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push((connection, Instant::now()));
        } else {
            drop(idle);
            quit(connection);
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let address = format!("{}:{}", self.host, self.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
            .await
            .map_err(|_| SendError::Connect(format!("connecting to {address} timed out")))?
            .map_err(|error| SendError::Connect(format!("cannot connect to {address}: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| SendError::Connect(format!("{address}: {error}")))?;
        let mut connection = match &self.security {
            Security::None => {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?
            }
            Security::StartTls(parameters) => {
                let mut connection =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await?;
                if !connection.can_starttls() {
                    connection.abort().await;
                    return Err(SendError::Connect(format!(
                        "{address} does not offer STARTTLS"
                    )));
                }
                connection.starttls(parameters.clone(), &self.hello).await?;
                connection
            }
            Security::Implicit(connector, name) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|error| SendError::Connect(format!("TLS with {address}: {error}")))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(TlsFirst(tls)), &self.hello)
                    .await?
            }
        };
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        // The list is consistent at every step, so a poisoned lock is usable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Says QUIT and closes, in the background; a server that does not answer within a few
/// seconds has its socket dropped.
fn quit(mut connection: AsyncSmtpConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(SHORT_EXCHANGE, connection.abort()).await;
    });
}

/// A stream that is TLS from its first byte, for lettre to speak SMTP over.
#[derive(Debug)]
struct TlsFirst(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsFirst {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsFirst {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for TlsFirst {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(context)
    }
}
