//! Integration tests: real coordinator and worker processes, real gRPC, real Postgres.
//!
//! Each test creates its own database on the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), so tests run in parallel. Process logs are kept
//! under `target/tmp/logs/`.

mod bench;
mod campaign_flow;
mod cli;
mod contacts;
mod email;
mod files;
mod flow_control;
mod guarantees;
mod hardening;
mod health;
mod imports;
mod in_process;
mod one_command;
mod operations;
mod own_tasks;
mod platform;
mod progress;
mod rate_limit_api;
mod security;
mod store_suite;
mod support;
mod validation;
