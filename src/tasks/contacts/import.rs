//! `import_contacts_async`: an uploaded contact file, downloaded from the coordinator to a
//! temporary file (resuming from where a broken download stopped, checked against the size and
//! SHA-256 the upload recorded), read row by row on a blocking thread (`reading.rs`) and fanned
//! out as `validate_contact_batch` children as the batches fill.
//!
//! The import records what needs no validation itself (repeats, malformed rows) and reports
//! the tree's total: its progress is (rows it recorded, rows read), each batch adds the
//! contacts it validated, so the tree's summed progress reaches rows read when every row has
//! its record. A retried import reads the file again and submits the same children under the
//! same idempotency keys, and writes the same records under the same keys: every row still
//! ends as exactly one record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Depth;
use super::reading::{self, Piece, ReadOptions, Tally};
use super::rows::{self, CsvOptions, Format};
use crate::domain::{ErrorKind, FileId, FileInfo, TaskName, TaskSpec};
use crate::grpc::client::ClientError;
use crate::tasks::api::{CoordinatorApi, api_error};
use crate::worker::{TaskContext, TaskError};

/// Contacts per batch unless the import says otherwise.
const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Children submitted per request (each at most `reading::MAX_BATCH_ARGS_BYTES`).
const SUBMIT_AT_ONCE: usize = 8;
/// Pieces the reading may be ahead of the submissions.
const PIECES_AHEAD: usize = 2;
/// How often the import reports its progress while reading.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Downloads resumed after a broken stream before the attempt gives up.
const DOWNLOAD_RESUMES: u32 = 3;
/// The longest `list_id`, as JSON.
const MAX_LIST_ID_BYTES: usize = 256;

/// What an import needs on a worker: the API its files come through.
#[derive(Debug, Clone)]
pub struct Importer {
    api: CoordinatorApi,
}

impl Importer {
    /// An importer downloading through `api`.
    pub fn new(api: CoordinatorApi) -> Self {
        Self { api }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportArgs {
    list_id: Value,
    file: String,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    sheet: Option<String>,
    #[serde(default)]
    mapping: Option<BTreeMap<String, String>>,
    #[serde(default)]
    validation: Depth,
    #[serde(default)]
    batch_size: Option<usize>,
}

/// The args, checked.
struct Plan {
    file: FileId,
    format: Format,
    csv: CsvOptions,
    sheet: Option<String>,
    read: ReadOptions,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> TaskError {
    TaskError::invalid_args(format!("{field}: {why}"))
}

impl ImportArgs {
    fn check(self) -> Result<Plan, TaskError> {
        let file = FileId::parse("file", &self.file)?;
        if self.list_id.is_null() {
            return Err(invalid("list_id", "is required"));
        }
        if self.list_id.to_string().len() > MAX_LIST_ID_BYTES {
            return Err(invalid(
                "list_id",
                format!("longer than {MAX_LIST_ID_BYTES} bytes; give the list's id"),
            ));
        }
        let encoding = match self.encoding.as_deref() {
            None | Some("auto") => None,
            Some(label) if encoding_rs::Encoding::for_label(label.as_bytes()).is_some() => {
                Some(label.to_owned())
            }
            Some(label) => {
                return Err(invalid(
                    "encoding",
                    format!("unknown encoding {label:?} (try utf-8, windows-1251, koi8-r, utf-16)"),
                ));
            }
        };
        let delimiter = match self.delimiter.as_deref() {
            None | Some("auto") => None,
            Some("tab" | "\\t") => Some(b'\t'),
            Some(text) if text.len() == 1 && !matches!(text, "\"" | "\n" | "\r") => {
                Some(text.as_bytes()[0])
            }
            Some(text) => {
                return Err(invalid(
                    "delimiter",
                    format!("{text:?} is not one ASCII character other than a quote or a newline"),
                ));
            }
        };
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=super::MAX_BATCH).contains(&batch_size) {
            return Err(invalid(
                "batch_size",
                format!("{batch_size} is out of range 1 to {}", super::MAX_BATCH),
            ));
        }
        if let Some(mapping) = &self.mapping {
            for (field, header) in mapping {
                crate::domain::parse_short_name("mapping", field)
                    .map_err(|error| invalid(&format!("mapping.{field}"), error))?;
                if header.trim().is_empty() {
                    return Err(invalid(&format!("mapping.{field}"), "names no column"));
                }
            }
        }
        Ok(Plan {
            file,
            format: self.format,
            csv: CsvOptions {
                encoding,
                delimiter,
            },
            sheet: self.sheet,
            read: ReadOptions {
                list_id: self.list_id,
                validation: self.validation,
                batch_size,
                mapping: self.mapping,
            },
        })
    }
}

/// Checks an import's args as the task will (for a client that would rather hear of a bad
/// encoding before it uploads); the message names the field.
pub fn check_import_args(args: Value) -> Result<(), String> {
    crate::tasks::parse_args::<ImportArgs>(args)
        .and_then(ImportArgs::check)
        .map(|_| ())
        .map_err(|error| error.message)
}

/// Reads the file and fans out its batches; answers how its rows were taken.
pub async fn import_contacts_async(
    importer: Arc<Importer>,
    context: TaskContext,
    args: Value,
) -> Result<Value, TaskError> {
    let args: ImportArgs = crate::tasks::parse_args(args)?;
    let plan = args.check()?;
    let (info, file) = download(&importer.api, plan.file).await?;
    let (pieces, mut arriving) = mpsc::channel(PIECES_AHEAD);
    let read_options = plan.read.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let table = rows::open(file.path(), plan.format, &plan.csv, plan.sheet.as_deref())
            .map_err(|error| error.to_string())?;
        let described = table.described.clone();
        let tally = reading::read(table, &read_options, |piece| {
            pieces.blocking_send(piece).is_ok()
        })?;
        drop(file);
        Ok::<_, String>((described, tally))
    });
    let batch = TaskName::parse("name", "validate_contact_batch")?;
    let mut children = Vec::new();
    let mut submitted = 0usize;
    let mut last_report: Option<Instant> = None;
    loop {
        let piece = tokio::select! {
            piece = arriving.recv() => piece,
            () = context.stop_requested() => {
                return Err(TaskError::retryable(
                    "stopped",
                    format!("stopped after {submitted} batches"),
                ));
            }
        };
        let Some(piece) = piece else { break };
        match piece {
            Piece::Batch { args, .. } => {
                let mut spec = TaskSpec::new(batch.clone(), args);
                // A retried import submits each batch once.
                spec.idempotency_key = Some(format!("{}:batch:{submitted}", context.task_id));
                submitted += 1;
                children.push(spec);
                if children.len() >= SUBMIT_AT_ONCE {
                    context
                        .submit_children(std::mem::take(&mut children))
                        .await?;
                }
            }
            Piece::Records(records) => context.record(records).await?,
            Piece::Read(tally) => {
                if last_report.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                    last_report = Some(Instant::now());
                    context.progress(
                        tally.recorded(),
                        tally.contact_rows(),
                        format!("read {} rows", tally.rows),
                    );
                }
            }
        }
    }
    let (described, tally) = match reading.await {
        Ok(Ok(read)) => read,
        Ok(Err(why)) => return Err(TaskError::invalid_args(format!("file: {why}"))),
        Err(error) => return Err(TaskError::permanent("internal", error.to_string())),
    };
    if !children.is_empty() {
        context.submit_children(children).await?;
    }
    context
        .report_progress(tally.recorded(), tally.contact_rows(), summary(&tally))
        .await?;
    Ok(json!({
        "list_id": plan.read.list_id,
        "file": {"id": info.id.to_string(), "name": info.name.as_str(), "size": info.size, "sha256": info.sha256},
        "read_as": described,
        "validation": plan.read.validation.as_str(),
        "rows": tally.rows,
        "contacts": tally.contacts,
        "batches": tally.batches,
        "duplicates": tally.duplicates,
        "malformed": tally.malformed,
        "blank": tally.blank,
    }))
}

fn summary(tally: &Tally) -> String {
    format!(
        "read {} rows: {} contacts in {} batches, {} duplicates, {} malformed, {} blank",
        tally.rows, tally.contacts, tally.batches, tally.duplicates, tally.malformed, tally.blank
    )
}

/// Downloads a file to a temporary one, resuming a broken download where it stopped, and
/// checks it against what the upload recorded.
async fn download(
    api: &CoordinatorApi,
    id: FileId,
) -> Result<(FileInfo, tempfile::NamedTempFile), TaskError> {
    let local = |error: std::io::Error| {
        TaskError::retryable("local_file", format!("cannot write the download: {error}"))
    };
    let temporary = tempfile::Builder::new()
        .prefix("celeritas-import-")
        .tempfile()
        .map_err(local)?;
    let mut writer = tokio::fs::File::from_std(temporary.reopen().map_err(local)?);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut resumes = 0;
    let info = loop {
        match download_from(api, id, written, &mut writer, &mut hasher).await {
            Ok((info, more)) => {
                written += more;
                break info;
            }
            Err((more, error)) => {
                written += more;
                let retryable = matches!(error.retry, crate::worker::Retry::Backoff);
                if !retryable || resumes >= DOWNLOAD_RESUMES {
                    return Err(error);
                }
                resumes += 1;
            }
        }
    };
    writer.flush().await.map_err(local)?;
    let digest = crate::domain::hex_digest(&hasher.finalize());
    if written != info.size || digest != info.sha256 {
        return Err(TaskError::retryable(
            "file_mismatch",
            format!(
                "the download of file {id} has {written} bytes with SHA-256 {digest}; the upload \
                 recorded {} bytes with {}",
                info.size, info.sha256
            ),
        ));
    }
    Ok((info, temporary))
}

/// One download call from `offset`: the file's metadata and the bytes written, or the bytes
/// written before it failed and why.
async fn download_from(
    api: &CoordinatorApi,
    id: FileId,
    offset: u64,
    writer: &mut tokio::fs::File,
    hasher: &mut Sha256,
) -> Result<(FileInfo, u64), (u64, TaskError)> {
    let mut client = api.client().await.map_err(|error| (0, error))?;
    let (info, mut bytes) = client
        .download(id, offset)
        .await
        .map_err(|error| (0, file_error(id, error)))?;
    let mut written = 0u64;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|error| (written, file_error(id, error)))?;
        writer.write_all(&chunk).await.map_err(|error| {
            (
                written,
                TaskError::retryable("local_file", format!("cannot write the download: {error}")),
            )
        })?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
    }
    Ok((info, written))
}

/// An unknown file fails the import for good; anything else is the API's usual answer.
fn file_error(id: FileId, error: ClientError) -> TaskError {
    match &error {
        ClientError::Status {
            kind: ErrorKind::NotFound,
            ..
        } => TaskError::invalid_args(format!("file: no file {id}; upload it first")),
        _ => api_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: Value) -> Result<Plan, TaskError> {
        crate::tasks::parse_args::<ImportArgs>(args)?.check()
    }

    #[test]
    fn bad_args_are_refused_naming_the_field() {
        let file = FileId::generate().to_string();
        let refused = |args: Value, field: &str| {
            let error = check(args).err().unwrap();
            assert_eq!(error.kind, "invalid_args");
            assert!(error.message.contains(field), "{}", error.message);
        };
        refused(json!({"list_id": 1, "file": "nope"}), "file");
        refused(json!({"file": file}), "list_id");
        refused(json!({"list_id": "x".repeat(300), "file": file}), "list_id");
        for (field, value, named) in [
            ("batch_size", json!(0), "batch_size"),
            ("batch_size", json!(10_001), "batch_size"),
            ("delimiter", json!(";;"), "delimiter"),
            ("encoding", json!("martian"), "encoding"),
            ("validation", json!("psychic"), "validation"),
            ("format", json!("pdf"), "format"),
            ("mapping", json!({"name": " "}), "mapping.name"),
        ] {
            let mut args = json!({"list_id": 1, "file": file});
            args[field] = value;
            refused(args, named);
        }
        let plan = check(json!({
            "list_id": 1, "file": file, "delimiter": "tab", "encoding": "cp1251",
            "validation": "smtp", "batch_size": 10,
        }))
        .unwrap();
        assert_eq!(plan.csv.delimiter, Some(b'\t'));
        assert_eq!(plan.csv.encoding.as_deref(), Some("cp1251"));
        assert_eq!(plan.read.validation, Depth::Smtp);
    }
}
