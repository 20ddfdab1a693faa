//! Metrics, for Prometheus: a global recorder the coordinator reports to, and `/metrics` on an
//! HTTP port.
//!
//! What is reported (names and labels):
//! - `celeritas_tasks_submitted_total{queue}`: tasks created.
//! - `celeritas_tasks_finished_total{queue, outcome}`: attempts ended: `succeeded`, `failed`
//!   (for good) or `retried`.
//! - `celeritas_task_retries_total{queue}`: attempts that will be retried.
//! - `celeritas_task_queue_wait_seconds{queue}`: from due to started (histogram).
//! - `celeritas_task_run_seconds{name}`: from started to ended (histogram). Task names are
//!   chosen by clients, so only the first `MAX_NAME_LABELS` names seen get a label of their
//!   own; the rest share `other`, and no stream of names can grow `/metrics` without bound.
//! - `celeritas_lease_expiries_total`: leases settled by the reaper.
//! - `celeritas_workers_connected`: workers connected to this coordinator.
//! - `celeritas_tasks{queue, state}`: unfinished tasks, refreshed every ten seconds.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Seconds: from a millisecond to half an hour, the seed's hard time limit.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The most task names that get a label of their own.
pub const MAX_NAME_LABELS: usize = 200;

/// The label a task name reports under: itself while fewer than `limit` names have labels (or
/// it has one already), `other` after that.
#[derive(Debug)]
pub struct NameLabels {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    limit: usize,
}

impl NameLabels {
    /// Labels for at most `limit` names.
    pub fn new(limit: usize) -> Self {
        Self {
            seen: std::sync::Mutex::default(),
            limit,
        }
    }

    /// The label for `name`.
    pub fn label(&self, name: &str) -> String {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(name) {
            return name.to_owned();
        }
        if seen.len() < self.limit {
            seen.insert(name.to_owned());
            return name.to_owned();
        }
        "other".to_owned()
    }
}

/// The label `celeritas_task_run_seconds` reports a task name under, for this process.
pub fn task_name_label(name: &str) -> String {
    static LABELS: OnceLock<NameLabels> = OnceLock::new();
    LABELS
        .get_or_init(|| NameLabels::new(MAX_NAME_LABELS))
        .label(name)
}

/// Installs the process' recorder once; later calls return the same handle. `None` when
/// another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// Serves `/metrics` on `address` until `stop` fires, as work of `tracker` (so a shutdown waits
/// for it). A port that is taken is logged, not fatal: the coordinator serves without metrics.
///
/// With `guard`, the endpoint is served over TLS and each scrape needs a token with the `read`
/// role (`authorization: Bearer <token>`, Prometheus' `authorization` setting).
pub async fn serve(
    address: SocketAddr,
    guard: Option<Guard>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Option<SocketAddr> {
    let handle = install()?;
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%address, %error, "cannot serve metrics there; serving none");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    let access = guard.as_ref().map(|guard| guard.access.clone());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let handle = handle.clone();
            let access = access.clone();
            async move { scrape(&handle, access.as_deref(), &headers) }
        }),
    );
    match guard {
        None => spawn_server(tracker, listener, app, stop),
        Some(guard) => {
            let incoming =
                crate::grpc::tls::incoming_for(listener, guard.tls, b"http/1.1", stop.clone());
            let listener = TlsListener {
                incoming,
                address: bound,
            };
            spawn_server(tracker, listener, app, stop);
        }
    }
    tracing::info!(address = %bound, "metrics served at /metrics");
    Some(bound)
}

/// Serves `app` on `listener` as work of `tracker` until `stop`.
fn spawn_server<L>(tracker: &TaskTracker, listener: L, app: axum::Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the metrics server stopped");
        }
    });
}

/// What protects a metrics endpoint beyond loopback: the coordinator's TLS and its tokens.
pub struct Guard {
    /// The coordinator's certificate, re-read when it changes.
    pub tls: std::sync::Arc<crate::grpc::tls::ReloadingTls>,
    /// Who may scrape: a token with the `read` role.
    pub access: std::sync::Arc<crate::coordinator::access::Access>,
}

/// One scrape: the rendered metrics, or 401/403 for a caller `access` refuses.
fn scrape(
    handle: &PrometheusHandle,
    access: Option<&crate::coordinator::access::Access>,
    headers: &axum::http::HeaderMap,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if let Some(access) = access {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        let allowed = access.authenticate(authorization, None).and_then(|caller| {
            crate::coordinator::access::require(&caller, &[crate::domain::Role::Read], "/metrics")
        });
        if let Err(error) = allowed {
            let status = match error {
                crate::coordinator::CoordinatorError::PermissionDenied(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            metrics::counter!("celeritas_refused_requests_total", "reason" => "metrics")
                .increment(1);
            return (status, format!("{error}\n"));
        }
    }
    (StatusCode::OK, handle.render())
}

/// TLS connections as axum takes them: each one handshaken on a task of its own.
struct TlsListener {
    incoming: tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >,
    address: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.address);
                    return (stream, peer);
                }
                Some(Err(error)) => tracing::debug!(%error, "a metrics connection failed"),
                // The accept loop stopped with the coordinator: wait for the shutdown.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_limit_share_one_label() {
        let labels = NameLabels::new(3);
        assert_eq!(labels.label("send_email_batch"), "send_email_batch");
        for index in 0..3_000 {
            let label = labels.label(&format!("client_chosen_{index}"));
            assert!(index >= 2 || label == format!("client_chosen_{index}"));
            assert!(index < 2 || label == "other", "{index}: {label}");
        }
        // A name that has a label keeps it.
        assert_eq!(labels.label("send_email_batch"), "send_email_batch");
    }
}
