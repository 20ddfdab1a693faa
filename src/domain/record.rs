use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{JsonText, TaskId, ValidationError};

/// The longest record key accepted, in bytes.
pub const MAX_RECORD_KEY_BYTES: usize = 1024;
/// The largest record data accepted, in bytes.
pub const MAX_RECORD_DATA_BYTES: usize = 64 * 1024;

/// A record a task emits: one item of its work, such as a delivery or a validated contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    /// What sort of record: a short name such as `delivery`.
    pub kind: String,
    /// Which item; unique per root task and kind.
    pub key: String,
    /// Its status: a short name such as `delivered`.
    pub status: String,
    /// Anything else.
    pub data: Option<JsonText>,
}

/// Checks a short name (kind, status): 1 to 64 characters of letters, digits, `_`, `-`, `.`.
pub fn parse_short_name(field: &str, text: &str) -> Result<String, ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if text.len() > 64 {
        return Err(ValidationError::new(field, "is longer than 64 characters"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ValidationError::new(
            field,
            format!("{text:?} contains {bad:?}; use letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(text.to_owned())
}

impl RecordEntry {
    /// Parses a record; `field` names it in errors.
    pub fn parse(
        field: &str,
        kind: &str,
        key: &str,
        status: &str,
        data_json: &str,
    ) -> Result<Self, ValidationError> {
        let kind = parse_short_name(&format!("{field}.kind"), kind)?;
        let status = parse_short_name(&format!("{field}.status"), status)?;
        if key.is_empty() {
            return Err(ValidationError::new(format!("{field}.key"), "is required"));
        }
        super::check_text(&format!("{field}.key"), key, MAX_RECORD_KEY_BYTES)?;
        let data = if data_json.trim().is_empty() {
            None
        } else {
            Some(JsonText::parse(
                &format!("{field}.data_json"),
                data_json,
                MAX_RECORD_DATA_BYTES,
            )?)
        };
        Ok(Self {
            kind,
            key: key.to_owned(),
            status,
            data,
        })
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The task that last wrote it.
    pub task_id: TaskId,
    /// The root of that task's tree.
    pub root_id: TaskId,
    /// The record.
    pub entry: RecordEntry,
    /// When it was first written.
    pub created_at: DateTime<Utc>,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// A worker's counters, reported with its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Attempts ended, by task name.
    pub processed: BTreeMap<String, u64>,
    /// Attempts failed, by task name.
    pub failed: BTreeMap<String, u64>,
    /// Resident memory, in bytes.
    pub memory_rss_bytes: u64,
    /// When the worker process started.
    pub started_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_the_bad_field() {
        let error = RecordEntry::parse("records[3]", "delivery", "", "delivered", "").unwrap_err();
        assert_eq!(error.field, "records[3].key");
        let error = RecordEntry::parse("records[0]", "delivery", "a@b", "sent ok", "").unwrap_err();
        assert_eq!(error.field, "records[0].status");
        let record =
            RecordEntry::parse("r", "delivery", "a@b", "delivered", r#"{"smtp": "250"}"#).unwrap();
        assert_eq!(record.data.unwrap().to_value()["smtp"], "250");
    }
}
