//! The wire layer: the generated protobuf code, conversions at the edge, the gRPC services, and
//! the clients the CLI and the worker runtime use.
//!
//! Invariant: only this module touches `pb` types; everything else speaks domain types.

mod auth;
pub mod client;
mod codec;
mod convert;
mod file_service;
mod inspect_service;
mod schedule_service;
mod server;
mod status;
mod task_service;
pub mod tls;
mod worker_link;
mod worker_service;

pub use auth::{caller_of, certificate_name};
pub use client::{ClientError, CoordinatorClient};
pub use codec::WireCodec;
pub use server::{GrpcServer, serve};
pub use worker_link::{LinkError, WorkerLink};

/// The generated protobuf types and services of `celeritas.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("celeritas.v1");
}

/// The encoded descriptors of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/celeritas_descriptor.bin"));
