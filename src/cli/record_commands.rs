//! `records`: the records a task tree wrote (a campaign's deliveries, an import's contacts),
//! page by page.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::CoordinatorAddress;
use super::table::{moment, print_table};
use crate::domain::{RecordsRequest, TaskId};

/// The most records asked for per call.
const PAGE_SIZE: u32 = 1_000;

/// `celeritas records`.
#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// The task: a root for its whole tree's records, any task with --own.
    pub id: String,
    /// Only records of this kind (`contact`, `delivery`, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only records with this status (`valid`, `delivered`, …).
    #[arg(long)]
    pub status: Option<String>,
    /// The most records to print (default: every one).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Only the task's own records, not its tree's.
    #[arg(long)]
    pub own: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print one JSON object a line, with each record's data.
    #[arg(long)]
    pub json: bool,
}

/// Prints the records, following pages until there are no more or `--limit` is reached.
pub async fn records(args: RecordsArgs) -> anyhow::Result<ExitCode> {
    let task = TaskId::parse("ID", &args.id)?;
    let mut client = args.coordinator.connect().await?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut request = RecordsRequest {
        task,
        whole_tree: !args.own,
        kind: args.kind,
        status: args.status,
        page_size: PAGE_SIZE,
        page_token: None,
    };
    let mut printed = 0u64;
    let mut rows = Vec::new();
    loop {
        request.page_size = PAGE_SIZE.min(u32::try_from(limit - printed).unwrap_or(PAGE_SIZE));
        let page = client.records(&request).await?;
        for record in page.records {
            if args.json {
                outln!(
                    "{}",
                    json!({
                        "task_id": record.task_id.to_string(),
                        "kind": record.entry.kind,
                        "key": record.entry.key,
                        "status": record.entry.status,
                        "data": record.entry.data.map(|data| data.to_value()),
                        "created_at": record.created_at.to_rfc3339(),
                        "updated_at": record.updated_at.to_rfc3339(),
                    })
                );
            } else {
                rows.push(vec![
                    record.entry.kind,
                    record.entry.key,
                    record.entry.status,
                    moment(Some(record.updated_at)),
                ]);
            }
            printed += 1;
        }
        match page.next_page_token {
            Some(token) if printed < limit => request.page_token = Some(token),
            _ => break,
        }
    }
    if !args.json {
        print_table(&["KIND", "KEY", "STATUS", "UPDATED"], rows);
    }
    Ok(ExitCode::SUCCESS)
}
