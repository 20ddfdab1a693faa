//! Assembling a coordinator: store, migrations, background work and the gRPC server. Tests build
//! the same `Application` on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, is_loopback};
use crate::coordinator::{Background, Coordinator};
use crate::grpc::tls::ReloadingTls;
use crate::grpc::{self, GrpcServer};
use crate::store::{self, Store, StoreError};

/// The longest pause between attempts to reach the database at start-up.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(5);

/// A coordinator, built and bound, ready to serve.
pub struct Application {
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    server: GrpcServer,
    background: Background,
}

impl Application {
    /// Opens the store at `database_url` (Postgres, or `sqlite://PATH` for the embedded store),
    /// applies migrations (waiting for the database if it is not up yet, until `stop` fires)
    /// and binds the configured address.
    pub async fn build(
        config: &Config,
        database_url: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = store::open(database_url, config.coordinator.database_pool_size).await?;
        migrate_when_available(store.as_ref(), stop).await?;
        Self::with_store(store, config, Arc::new(SystemClock)).await
    }

    /// A coordinator on a store whose schema is up to date.
    pub async fn with_store(
        store: Arc<dyn Store>,
        config: &Config,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.coordinator.listen)
            .await
            .map_err(|error| {
                anyhow::anyhow!("cannot listen on {}: {error}", config.coordinator.listen)
            })?;
        let address = listener.local_addr()?;
        let tls = check_exposure(config)?;
        let guard_metrics = check_metrics_exposure(config, tls.is_some())?;
        let (coordinator, background) = Coordinator::start(store, config, clock)?;
        coordinator
            .access()
            .refresh(coordinator.store().as_ref())
            .await?;
        coordinator.sync_schedules(config.schedules()?).await?;
        let stop = background.stop_token();
        let metrics_address = match config.coordinator.metrics_listen {
            Some(metrics) => {
                let guard =
                    tls.as_ref()
                        .filter(|_| guard_metrics)
                        .map(|tls| crate::metrics::Guard {
                            tls: tls.clone(),
                            access: coordinator.access().clone(),
                        });
                crate::metrics::serve(metrics, guard, background.tracker(), stop.clone()).await
            }
            None => None,
        };
        let server = grpc::serve(coordinator, listener, tls, stop)?;
        Ok(Self {
            address,
            metrics_address,
            server,
            background,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// The token that stops the coordinator gracefully.
    pub fn stop_token(&self) -> CancellationToken {
        self.background.stop_token()
    }

    /// Serves until the stop token fires, then finishes gracefully: streams end, pending writes
    /// are flushed, background loops stop.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.background.shutdown().await;
        served?;
        Ok(())
    }
}

/// Loads the TLS files, if any, and refuses a coordinator open beyond this host with neither
/// TLS nor tokens unless `allow_insecure` says so (then it warns, loudly).
fn check_exposure(config: &Config) -> anyhow::Result<Option<Arc<ReloadingTls>>> {
    let settings = &config.coordinator;
    let tls = settings.tls.as_ref().map(ReloadingTls::load).transpose()?;
    let client_certificates = settings
        .tls
        .as_ref()
        .is_some_and(|tls| tls.require_client_cert && tls.client_ca_file.is_some());
    let authenticated = config.auth.required || client_certificates;
    if is_loopback(&settings.listen) || (tls.is_some() && authenticated) {
        return Ok(tls);
    }
    let missing = match (tls.is_some(), authenticated) {
        (false, false) => "neither TLS ([coordinator.tls]) nor tokens ([auth] required)",
        (false, true) => "no TLS ([coordinator.tls]): tokens and tasks travel in clear",
        _ => {
            "no tokens ([auth] required): anyone who reaches it may submit, cancel and connect as a worker"
        }
    };
    if !settings.allow_insecure {
        anyhow::bail!(
            "refusing to listen on {} with {missing}; configure them, or set \
             coordinator.allow_insecure (--allow-insecure) on a network you trust",
            settings.listen
        );
    }
    tracing::warn!(
        listen = %settings.listen,
        "INSECURE: this coordinator listens beyond loopback with {missing}"
    );
    Ok(tls)
}

/// Whether the metrics endpoint needs TLS and a token: beyond loopback it does, and a
/// coordinator without both refuses to serve it there (unless `allow_insecure`, with a warning).
fn check_metrics_exposure(config: &Config, tls: bool) -> anyhow::Result<bool> {
    let settings = &config.coordinator;
    let Some(address) = settings.metrics_listen else {
        return Ok(false);
    };
    if is_loopback(&address) {
        return Ok(false);
    }
    if tls && config.auth.required {
        return Ok(true);
    }
    if !settings.allow_insecure {
        anyhow::bail!(
            "refusing to serve metrics on {address} without TLS ([coordinator.tls]) and tokens \
             ([auth] required): bind coordinator.metrics_listen to loopback (the default), \
             configure both, or set coordinator.allow_insecure on a network you trust"
        );
    }
    tracing::warn!(%address, "INSECURE: metrics are served beyond loopback without TLS and tokens");
    Ok(false)
}

/// Applies migrations, retrying while the database is unreachable.
pub async fn migrate_when_available(
    store: &dyn Store,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut pause = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(error) if is_unreachable(&error) => {
                tracing::warn!(%error, retry_in = ?pause, "the database is not reachable yet");
                tokio::select! {
                    _ = stop.cancelled() => anyhow::bail!("stopped while waiting for the database"),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MIGRATE_RETRY_MAX);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn is_unreachable(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}
