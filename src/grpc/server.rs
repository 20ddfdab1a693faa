//! The gRPC server of a coordinator: the task, worker, inspect, schedule and file services, `grpc.health.v1` (following
//! the store's health) and server reflection.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::FILE_DESCRIPTOR_SET;
use super::auth::AuthLayer;
use super::file_service::{FileApi, MAX_UPLOAD_MESSAGE_BYTES};
use super::inspect_service::InspectApi;
use super::pb::file_service_server::FileServiceServer;
use super::pb::inspect_service_server::InspectServiceServer;
use super::pb::schedule_service_server::ScheduleServiceServer;
use super::pb::task_service_server::TaskServiceServer;
use super::pb::worker_service_server::WorkerServiceServer;
use super::schedule_service::ScheduleApi;
use super::task_service::TaskApi;
use super::tls::ReloadingTls;
use super::worker_service::WorkerApi;
use crate::coordinator::Coordinator;

/// The names health is reported for: the whole server ("") and each service.
const HEALTH_SERVICES: &[&str] = &[
    "",
    "celeritas.v1.TaskService",
    "celeritas.v1.WorkerService",
    "celeritas.v1.InspectService",
    "celeritas.v1.ScheduleService",
    "celeritas.v1.FileService",
];

/// A server future, ready to be awaited.
pub type GrpcServer =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The largest header block a request may send: a token and the usual metadata fit many times.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Serves `coordinator` on `listener` until `stop` fires, over TLS when `tls` is given.
pub fn serve(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    stop: CancellationToken,
) -> Result<GrpcServer, tonic_reflection::server::Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    follow_store_health(&coordinator, reporter);
    // Both reflection versions: v1 for current tools, v1alpha for the many that only know it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max_message_bytes = coordinator.settings().max_message_bytes;
    let tasks = TaskServiceServer::new(TaskApi::new(coordinator.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let inspect = InspectServiceServer::new(InspectApi::new(coordinator.clone()))
        .max_encoding_message_size(max_message_bytes);
    let schedules = ScheduleServiceServer::new(ScheduleApi::new(coordinator.clone()))
        .max_decoding_message_size(max_message_bytes);
    let files = FileServiceServer::new(FileApi::new(coordinator.clone()))
        .max_decoding_message_size(MAX_UPLOAD_MESSAGE_BYTES)
        .max_encoding_message_size(max_message_bytes);
    let access = coordinator.access().clone();
    let workers = WorkerServiceServer::new(WorkerApi::new(coordinator))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .layer(AuthLayer::new(access))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tasks)
        .add_service(workers)
        .add_service(inspect)
        .add_service(schedules)
        .add_service(files);
    let shutdown = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    Ok(match tls {
        Some(tls) => Box::pin(
            router
                .serve_with_incoming_shutdown(super::tls::incoming(listener, tls, stop), shutdown),
        ),
        None => {
            // Leases and results are small messages on long-lived streams: without TCP_NODELAY
            // each one waits for Nagle's algorithm and the peer's delayed ACK (about 40 ms).
            let incoming = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(std::time::Duration::from_secs(30)));
            Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
    })
}

/// Reports SERVING while the store answers, NOT_SERVING otherwise.
fn follow_store_health(coordinator: &Coordinator, reporter: HealthReporter) {
    let mut healthy = coordinator.health();
    let stopping = coordinator.stopping().clone();
    coordinator.spawn(async move {
        loop {
            let status = if *healthy.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in HEALTH_SERVICES {
                reporter.set_service_status(*service, status).await;
            }
            tokio::select! {
                changed = healthy.changed() => if changed.is_err() { return },
                _ = stopping.cancelled() => {
                    for service in HEALTH_SERVICES {
                        reporter.set_service_status(*service, ServingStatus::NotServing).await;
                    }
                    return;
                }
            }
        }
    });
}
