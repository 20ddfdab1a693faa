//! Logging: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call does nothing.
///
/// A log line that cannot be written is dropped. tracing-subscriber's default reports a failed
/// write with `eprintln!`, which panics when stderr is closed (`celeritas coordinator 2>&1 |
/// head`): the panic killed whichever task was logging, the signal handler among them, and the
/// coordinator then swallowed SIGTERM.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
