//! A campaign's recipients from an import: `"recipients_from": {"import": "<task id>",
//! "statuses": ["valid"]}` reads the import's `contact` records page by page through the
//! coordinator's API, each contact's mapped fields becoming its template variables, so a
//! million recipients need no megabyte of args.
//!
//! An import records every distinct address once (repeats are `duplicate` records, never read
//! here), so the pages hold each recipient once; they come in the order the records were
//! written, so a retried campaign cuts the same batches.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::content::Recipient;
use crate::domain::{RecordsRequest, StoredRecord, TaskId, TaskQuery};
use crate::grpc::client::CoordinatorClient;
use crate::tasks::api::{CoordinatorApi, api_error};
use crate::tasks::contacts::{CONTACT, address};
use crate::worker::TaskError;

/// Records asked for per page.
const PAGE_SIZE: u32 = 1_000;
/// The verdicts an import gives that a campaign may send to.
const STATUSES: [&str; 4] = ["valid", "risky", "unknown", "invalid"];

/// Where a campaign's recipients come from, as its args say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsFrom {
    /// The `import_contacts_async` task.
    import: String,
    /// Which verdicts to send to.
    #[serde(default = "only_valid")]
    statuses: Vec<String>,
}

impl RecipientsFrom {
    /// The verdicts it sends to.
    pub fn statuses(&self) -> &[String] {
        &self.statuses
    }
}

fn only_valid() -> Vec<String> {
    vec!["valid".to_owned()]
}

fn invalid(field: &str, why: impl std::fmt::Display) -> TaskError {
    TaskError::invalid_args(format!("recipients_from.{field}: {why}"))
}

/// The recipients of a finished import, read a page at a time.
pub struct Audience {
    client: CoordinatorClient,
    import: TaskId,
    statuses: Vec<String>,
    /// Where the current status's reading continues; `None` before its first page.
    page_token: Option<String>,
    started: bool,
}

impl Audience {
    /// Checks that the import exists, is one, and has finished.
    pub async fn open(api: &CoordinatorApi, from: &RecipientsFrom) -> Result<Self, TaskError> {
        let import = TaskId::parse("recipients_from.import", &from.import)?;
        if from.statuses.is_empty() {
            return Err(invalid(
                "statuses",
                "is empty; name the verdicts to send to",
            ));
        }
        for status in &from.statuses {
            if !STATUSES.contains(&status.as_str()) {
                return Err(invalid(
                    "statuses",
                    format!("{status:?} is not one of {}", STATUSES.join(", ")),
                ));
            }
        }
        let mut client = api.client().await?;
        let task = client.task(import).await.map_err(|error| match &error {
            crate::grpc::client::ClientError::Status {
                kind: crate::domain::ErrorKind::NotFound,
                ..
            } => invalid("import", format!("no task {import}")),
            _ => api_error(error),
        })?;
        if task.name.as_str() != "import_contacts_async" {
            return Err(invalid(
                "import",
                format!("task {import} is a {}, not an import", task.name),
            ));
        }
        let unfinished = client
            .list_tasks(&TaskQuery {
                root: Some(task.root_id),
                limit: 1,
                ..TaskQuery::default()
            })
            .await
            .map_err(api_error)?;
        if !unfinished.is_empty() {
            return Err(invalid(
                "import",
                format!(
                    "the import {import} has not finished; send when it has (`celeritas import \
                     --wait`, or follow it)"
                ),
            ));
        }
        // Each status once, in the order asked (the order the batches are cut in).
        let mut statuses: Vec<String> = Vec::new();
        for status in &from.statuses {
            if !statuses.contains(status) {
                statuses.push(status.clone());
            }
        }
        Ok(Self {
            client,
            import,
            statuses,
            page_token: None,
            started: false,
        })
    }

    /// The next page of recipients; `None` when every status has been read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Recipient>>, TaskError> {
        loop {
            let Some(status) = self.statuses.first().cloned() else {
                return Ok(None);
            };
            if self.started && self.page_token.is_none() {
                // This status is read to its end.
                self.statuses.remove(0);
                self.started = false;
                continue;
            }
            let page = self
                .client
                .records(&RecordsRequest {
                    task: self.import,
                    whole_tree: true,
                    kind: Some(CONTACT.to_owned()),
                    status: Some(status),
                    page_size: PAGE_SIZE,
                    page_token: self.page_token.take(),
                })
                .await
                .map_err(api_error)?;
            self.started = true;
            self.page_token = page.next_page_token;
            let recipients: Vec<Recipient> = page.records.iter().filter_map(recipient).collect();
            if !recipients.is_empty() {
                return Ok(Some(recipients));
            }
        }
    }
}

/// A contact record as a recipient: its address normalised, its fields as template variables.
/// A record without an address that parses (a malformed row) is nobody to send to.
fn recipient(record: &StoredRecord) -> Option<Recipient> {
    let data = record.entry.data.as_ref()?.to_value();
    let email = data.get("email")?.as_str()?;
    let address = address::parse(email).ok()?;
    let vars: Map<String, Value> = data
        .get("fields")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Some(Recipient {
        email: address.ascii(),
        vars,
    })
}
