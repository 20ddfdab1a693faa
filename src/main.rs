//! The `celeritas` binary: parses the command line, sets up logging and hands off to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    celeritas::cli::main_with_tasks(|_registry| Ok(())).await
}
