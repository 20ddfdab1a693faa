//! `vashsender-worker`: the `celeritas` command line with VashSender's own tasks registered
//! beside the built-ins. Run it as `vashsender-worker worker --coordinator URL -Q reports`; every
//! other command (`dev`, `submit`, `inspect`...) is celeritas' own.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    celeritas::cli::main_with_tasks(vashsender_worker::register).await
}
