//! The `celeritas` binary: parses the command line, sets up logging and hands off to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = celeritas::cli::Cli::parse();
    celeritas::telemetry::init();
    match celeritas::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            // Not `eprintln!`, which panics when stderr is closed.
            celeritas::cli::write_stderr(format_args!("error: {error:#}\n"));
            ExitCode::FAILURE
        }
    }
}
