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
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
