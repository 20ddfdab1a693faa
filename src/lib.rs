//! celeritas: a task-execution platform. A gRPC coordinator keeps tasks in Postgres and grants
//! leases to remote workers over one bidirectional stream each.
//!
//! Start reading at `startup` (how a coordinator is assembled), `coordinator::dispatcher`
//! (where leases are granted) and `worker::runtime` (how a worker runs them). `ARCHITECTURE.md`
//! has the map.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod domain;
pub mod grpc;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod worker;
