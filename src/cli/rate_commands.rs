//! `celeritas set-rate-limit` and `clear-rate-limit`: rate limits set through the API, for
//! every coordinator and across restarts (`inspect rate_limits` shows them beside the
//! configured ones).

use std::process::ExitCode;

use clap::Args;

use super::CoordinatorAddress;

/// `celeritas set-rate-limit`.
#[derive(Debug, Args)]
pub struct SetRateLimitArgs {
    /// The rate key (`domain:gmail.com`, `task:send_email_batch`), or a pattern where `*`
    /// stands for any text (`domain:*.ru`).
    pub key: String,
    /// The rate as Celery writes it: `20/s`, `600/m`, `3600/h`.
    pub rate: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// `celeritas clear-rate-limit`.
#[derive(Debug, Args)]
pub struct ClearRateLimitArgs {
    /// The key or pattern, as it was set.
    pub key: String,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// Sets a rate limit.
pub async fn set_rate_limit(args: SetRateLimitArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.coordinator.connect().await?;
    let (previous, governed) = client.set_rate_limit(&args.key, &args.rate).await?;
    let was = previous.map_or_else(String::new, |previous| format!(" (was {previous})"));
    outln!(
        "rate limit of {} set to {}{was}; {governed} waiting tasks newly limited by it",
        args.key,
        args.rate.trim()
    );
    Ok(ExitCode::SUCCESS)
}

/// Clears a rate limit set through the API.
pub async fn clear_rate_limit(args: ClearRateLimitArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.coordinator.connect().await?;
    let previous = client.clear_rate_limit(&args.key).await?;
    outln!(
        "rate limit of {} ({previous}) cleared; a configured limit of it holds again",
        args.key
    );
    Ok(ExitCode::SUCCESS)
}
