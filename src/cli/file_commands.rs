//! The file commands: `upload`, which stores a file in the coordinator for tasks to read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::CoordinatorAddress;

/// `celeritas upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// The name to store it under (default: the file's own name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Its media type, such as text/csv (default: application/octet-stream).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Print JSON: the id, name, content type, size and SHA-256 digest.
    #[arg(long)]
    pub json: bool,
}

/// Uploads a file; prints its id (with --json, everything the coordinator stored).
pub async fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.coordinator.connect().await?;
    let file = client
        .upload_path(
            &args.file,
            args.name.as_deref(),
            args.content_type.as_deref(),
        )
        .await?;
    if args.json {
        outln!(
            "{}",
            json!({
                "file_id": file.id.to_string(),
                "name": file.name.as_str(),
                "content_type": file.content_type.as_str(),
                "size": file.size,
                "sha256": file.sha256,
            })
        );
    } else {
        outln!("{}", file.id);
        errln!("{} bytes, sha256 {}", file.size, file.sha256);
    }
    Ok(ExitCode::SUCCESS)
}
