//! `import`: a contact file uploaded and its `import_contacts_async` submitted in one command,
//! optionally waited for (a one-line summary of the records) or followed as `follow` shows it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::CoordinatorAddress;
use super::follow_command::show_tree_progress;
use crate::domain::{
    Aggregate, FileId, FileInfo, JsonText, TaskId, TaskName, TaskSpec, TaskState, TreeEventKind,
    ValidationError,
};
use crate::grpc::CoordinatorClient;
use crate::tasks::contacts::MAX_BATCH;

/// The built-in task an import runs.
const IMPORT_TASK: &str = "import_contacts_async";

/// The contact statuses in the order a summary names them; any other status follows, by name.
const STATUS_ORDER: [&str; 5] = ["valid", "risky", "invalid", "duplicate", "unknown"];

/// `celeritas import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The contact file (CSV or XLSX).
    pub file: PathBuf,
    /// The list the contacts go to: a whole number goes as a JSON number, anything else as a
    /// string.
    #[arg(long, value_name = "L")]
    pub list_id: String,
    /// How far to check each address (default: dns).
    #[arg(long, value_enum, value_name = "DEPTH")]
    pub validation: Option<ValidationDepth>,
    /// A column for a field, as FIELD=HEADER (`email=E-mail`, `name=First Name`); repeat it for
    /// each field. Without `email=…` the email column is found by its header or its contents.
    #[arg(long = "map", value_name = "FIELD=HEADER")]
    pub mappings: Vec<String>,
    /// What the file is (default: decided from its bytes).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FileFormat>,
    /// A CSV's encoding, such as utf-8, windows-1251 or koi8-r (default: detected).
    #[arg(long, value_name = "E")]
    pub encoding: Option<String>,
    /// A CSV's delimiter: one character, or `tab` (default: detected).
    #[arg(long, value_name = "D")]
    pub delimiter: Option<String>,
    /// The workbook sheet to read (default: the first).
    #[arg(long, value_name = "NAME")]
    pub sheet: Option<String>,
    /// Contacts per validation batch (default: 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH as u64))]
    pub batch_size: Option<u64>,
    /// Wait quietly for the whole import to finish, then print a summary of its records; exit
    /// non-zero unless the import succeeded.
    #[arg(long, conflicts_with = "follow")]
    pub wait: bool,
    /// Show the import's progress as `celeritas follow` does until it finishes; exit non-zero
    /// unless the import succeeded.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
    /// Print JSON: the task and file ids (with --wait, the summary as one object; with --follow,
    /// the ids and then each event as a line).
    #[arg(long)]
    pub json: bool,
}

/// `--validation`: how far an import checks each address.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ValidationDepth {
    /// The address's syntax and the disposable and role lists only.
    Syntax,
    /// And where the domain's mail goes.
    Dns,
    /// And whether the domain's mail exchanger takes mail for the address.
    Smtp,
}

impl ValidationDepth {
    /// The name the task's `validation` arg takes.
    fn as_str(self) -> &'static str {
        match self {
            ValidationDepth::Syntax => "syntax",
            ValidationDepth::Dns => "dns",
            ValidationDepth::Smtp => "smtp",
        }
    }
}

/// `--format`: what the file is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileFormat {
    /// Decided from the file's bytes.
    Auto,
    /// Delimited text.
    Csv,
    /// An XLSX workbook.
    Xlsx,
}

impl FileFormat {
    /// The name the task's `format` arg takes.
    fn as_str(self) -> &'static str {
        match self {
            FileFormat::Auto => "auto",
            FileFormat::Csv => "csv",
            FileFormat::Xlsx => "xlsx",
        }
    }
}

/// Uploads the file, submits its import and prints the import's id; with `--wait` or
/// `--follow`, stays until the import's tree finishes.
pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be refused here is refused before a byte is uploaded.
    let mapping = parse_mappings(&args.mappings)?;
    let list_id = parse_list_id(&args.list_id)?;
    let unsent = import_spec(&args, FileId::generate(), list_id.clone(), mapping.clone())?;
    crate::tasks::contacts::check_import_args(unsent.args.to_value())
        .map_err(|why| anyhow::anyhow!("the import's args: {why}"))?;
    let mut client = args.coordinator.connect().await?;
    let file = client.upload_path(&args.file, None, None).await?;
    errln!(
        "file {}: {} bytes, sha256 {}",
        file.id,
        file.size,
        file.sha256
    );
    let spec = import_spec(&args, file.id, list_id, mapping)?;
    let task_id = client.submit(&spec).await?.id;
    let ids = json!({"task_id": task_id.to_string(), "file_id": file.id.to_string()});
    if args.wait {
        if args.json {
            errln!("import {task_id} submitted; waiting for it to finish");
        } else {
            outln!("{task_id}");
        }
        return wait_and_summarize(&mut client, task_id, &file, args.json).await;
    }
    if args.json {
        outln!("{ids}");
    } else {
        outln!("{task_id}");
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let root_state = show_tree_progress(&mut client, task_id, args.json).await?;
    Ok(exit_code_for(root_state))
}

/// The `--map` pairs as the task's `mapping`: field → header. A pair without `=`, with either
/// side empty, or naming a field twice is refused.
fn parse_mappings(pairs: &[String]) -> Result<BTreeMap<String, String>, ValidationError> {
    let mut mapping = BTreeMap::new();
    for pair in pairs {
        let refused = |why: &str| ValidationError::new("--map", format!("{pair:?} {why}"));
        let Some((field, header)) = pair.split_once('=') else {
            return Err(refused("is not FIELD=HEADER (such as name=First Name)"));
        };
        if field.trim().is_empty() {
            return Err(refused("names no field before the `=`"));
        }
        if header.trim().is_empty() {
            return Err(refused("names no column after the `=`"));
        }
        if mapping
            .insert(field.to_owned(), header.to_owned())
            .is_some()
        {
            return Err(refused("maps a field that an earlier --map maps already"));
        }
    }
    Ok(mapping)
}

/// `--list-id` as the task's `list_id`: a whole number written plainly (`7`, not `007` or
/// `+7`) goes as a JSON number, anything else as a string.
fn parse_list_id(text: &str) -> Result<Value, ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new("--list-id", "is empty"));
    }
    let plain_number = text
        .parse::<i64>()
        .ok()
        .filter(|number| number.to_string() == text);
    Ok(plain_number.map_or_else(|| json!(text), |number| json!(number)))
}

/// The import task for the uploaded `file`, with only the args the command line gave (the task
/// has its own defaults for the rest).
fn import_spec(
    args: &ImportArgs,
    file: FileId,
    list_id: Value,
    mapping: BTreeMap<String, String>,
) -> anyhow::Result<TaskSpec> {
    let mut task_args = Map::new();
    task_args.insert("list_id".into(), list_id);
    task_args.insert("file".into(), json!(file.to_string()));
    let optional = [
        ("format", args.format.map(|format| json!(format.as_str()))),
        ("encoding", args.encoding.as_ref().map(|text| json!(text))),
        ("delimiter", args.delimiter.as_ref().map(|text| json!(text))),
        ("sheet", args.sheet.as_ref().map(|text| json!(text))),
        ("mapping", (!mapping.is_empty()).then(|| json!(mapping))),
        (
            "validation",
            args.validation.map(|depth| json!(depth.as_str())),
        ),
        ("batch_size", args.batch_size.map(|size| json!(size))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            task_args.insert(name.into(), value);
        }
    }
    let task_args = JsonText::checked_from_value("the import's args", &Value::Object(task_args))?;
    Ok(TaskSpec::new(
        TaskName::parse("NAME", IMPORT_TASK)?,
        task_args,
    ))
}

/// `--wait`: waits for the tree to finish, prints its summary (a line, or one JSON object) and
/// the root's error when it has one, and exits by the root's state.
async fn wait_and_summarize(
    client: &mut CoordinatorClient,
    task_id: TaskId,
    file: &FileInfo,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (root_state, aggregate) = wait_for_tree(client, task_id).await?;
    if json {
        outln!(
            "{}",
            json!({
                "task_id": task_id.to_string(),
                "file_id": file.id.to_string(),
                "state": root_state.to_string(),
                "records_by_status": aggregate.records_by_status,
                "tasks_total": aggregate.tasks_total,
            })
        );
    } else {
        outln!(
            "import {task_id} {root_state}: {}",
            records_summary(&aggregate)
        );
    }
    if root_state != TaskState::Succeeded {
        let root = client.task(task_id).await?;
        if let Some((kind, message)) = root.error {
            errln!("import {task_id} {root_state}: {kind}: {message}");
        }
    }
    Ok(exit_code_for(root_state))
}

/// Reads the tree's progress stream until its `tree_finished` event: the root's final state and
/// the tree as that event tells it.
async fn wait_for_tree(
    client: &mut CoordinatorClient,
    task_id: TaskId,
) -> anyhow::Result<(TaskState, Aggregate)> {
    let mut events = Box::pin(client.stream_progress(task_id, None).await?);
    while let Some(event) = events.next().await {
        let event = event?;
        if let TreeEventKind::TreeFinished { root_state } = event.kind {
            return Ok((root_state, event.aggregate));
        }
    }
    anyhow::bail!("the progress stream of import {task_id} ended before its tree finished")
}

/// `812 valid, 40 risky, 31 invalid, 5 duplicate, 2 unknown`: the contact statuses in their
/// usual order, then any other status by name; `no records` when there are none.
fn records_summary(aggregate: &Aggregate) -> String {
    let counts = &aggregate.records_by_status;
    let known = STATUS_ORDER
        .iter()
        .filter_map(|status| counts.get(*status).map(|count| (*status, *count)));
    let others = counts
        .iter()
        .filter(|(status, _)| !STATUS_ORDER.contains(&status.as_str()))
        .map(|(status, count)| (status.as_str(), *count));
    let parts: Vec<String> = known
        .chain(others)
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    if parts.is_empty() {
        "no records".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Success when the root succeeded.
fn exit_code_for(root_state: TaskState) -> ExitCode {
    if root_state == TaskState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_field_header_pairs_and_malformed_ones_name_the_flag() {
        let mapping = parse_mappings(&[
            "email=E-mail".to_owned(),
            "name=First Name".to_owned(),
            "formula=a=b".to_owned(),
        ])
        .unwrap();
        assert_eq!(mapping["email"], "E-mail");
        assert_eq!(mapping["name"], "First Name");
        assert_eq!(mapping["formula"], "a=b");
        for broken in ["broken", "=Header", "name=", "name= ", " =x"] {
            let error = parse_mappings(&[broken.to_owned()]).unwrap_err();
            assert_eq!(error.field, "--map", "{broken}");
        }
        let twice = parse_mappings(&["name=A".to_owned(), "name=B".to_owned()]).unwrap_err();
        assert_eq!(twice.field, "--map");
    }

    #[test]
    fn a_plain_whole_list_id_is_a_number_and_anything_else_a_string() {
        assert_eq!(parse_list_id("7").unwrap(), json!(7));
        assert_eq!(parse_list_id("-3").unwrap(), json!(-3));
        assert_eq!(parse_list_id("007").unwrap(), json!("007"));
        assert_eq!(parse_list_id("list-7").unwrap(), json!("list-7"));
        assert_eq!(parse_list_id("1.5").unwrap(), json!("1.5"));
        assert_eq!(parse_list_id(" ").unwrap_err().field, "--list-id");
    }

    #[test]
    fn the_summary_names_contact_statuses_in_their_usual_order() {
        let mut aggregate = Aggregate::default();
        assert_eq!(records_summary(&aggregate), "no records");
        for (status, count) in [
            ("unknown", 2),
            ("duplicate", 5),
            ("valid", 812),
            ("bounced", 1),
            ("invalid", 31),
            ("risky", 40),
        ] {
            aggregate.records_by_status.insert(status.to_owned(), count);
        }
        assert_eq!(
            records_summary(&aggregate),
            "812 valid, 40 risky, 31 invalid, 5 duplicate, 2 unknown, 1 bounced"
        );
    }

    #[test]
    fn wait_and_follow_cannot_go_together() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut arguments = vec!["celeritas", "import", "c.csv", "--list-id", "7"];
            arguments.extend(extra);
            super::super::Cli::try_parse_from(arguments)
        };
        parse(&["--wait", "--map", "name=Name", "--map", "email=E-mail"]).unwrap();
        parse(&["--follow", "--json"]).unwrap();
        let error = parse(&["--wait", "--follow"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["--batch-size", "0"]).is_err());
        assert!(parse(&["--validation", "psychic"]).is_err());
    }
}
