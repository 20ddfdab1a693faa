//! From a contact file's rows to what an import does with each: a contact for a
//! `validate_contact_batch` child, or a record written at once (a repeat of an earlier address,
//! a malformed row). Rows are read one at a time and batches handed on as they fill (as JSON
//! text, written contact by contact), so the only thing that grows with the file is the set of
//! addresses seen: 12 bytes of digest and a row number per distinct address.
//!
//! The columns come from the mapping (`{"email": "<header>", "<field>": "<header>"}`), else
//! the email column is the one a header names (English or Russian) or the one holding
//! addresses, and every other column is a field under its header. A file whose first row is
//! itself an address has no header: its columns are `column_1`, `column_2`, ….

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::rows::{Row, Table};
use super::{Depth, address, contact_record, sheet};
use crate::domain::{JsonText, RecordEntry};

/// Rows read to find the email column by what it holds.
const SAMPLE_ROWS: usize = 20;
/// The most a batch's args may weigh: half the coordinator's default `max_args_bytes`.
pub const MAX_BATCH_ARGS_BYTES: usize = 512 * 1024;
/// Records handed on at once.
const RECORDS_AT_ONCE: usize = 500;
/// The most text a row may hold; a longer one is malformed (no contact needs it, and it would
/// not fit a batch).
const MAX_ROW_BYTES: usize = 64 * 1024;

/// What to read and how to batch it.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The list the contacts go to, kept with each record.
    pub list_id: Value,
    /// How far the children validate.
    pub validation: Depth,
    /// Contacts per child.
    pub batch_size: usize,
    /// Field → header; `email` names the address column.
    pub mapping: Option<BTreeMap<String, String>>,
}

/// What the reading hands on, in order.
#[derive(Debug)]
pub enum Piece {
    /// A full batch: a `validate_contact_batch` child's args.
    Batch {
        /// The args.
        args: JsonText,
        /// Contacts in it.
        contacts: usize,
    },
    /// Records of rows that need no validation.
    Records(Vec<RecordEntry>),
    /// How far the reading got.
    Read(Tally),
}

/// How the rows of a file were taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows after the header (all of them, in a file without one).
    pub rows: u64,
    /// Rows with every cell empty, skipped.
    pub blank: u64,
    /// Rows that could not be read, recorded `invalid`.
    pub malformed: u64,
    /// Rows repeating an earlier row's address, recorded `duplicate`.
    pub duplicates: u64,
    /// Rows handed to batches.
    pub contacts: u64,
    /// Batches handed on.
    pub batches: u64,
}

impl Tally {
    /// Rows the import recorded itself.
    pub fn recorded(&self) -> u64 {
        self.malformed + self.duplicates
    }

    /// Rows that end as a record.
    pub fn contact_rows(&self) -> u64 {
        self.rows - self.blank
    }
}

/// Where the address and the fields are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The email column.
    pub email: usize,
    /// Each field and its column.
    pub fields: Vec<(String, usize)>,
    /// The first row is a contact, not a header.
    pub headerless: bool,
}

/// Finds the columns, or says why the file has no email column or lacks a mapped one.
pub fn columns(
    headers: &[String],
    sample: &[Vec<String>],
    mapping: Option<&BTreeMap<String, String>>,
) -> Result<Columns, String> {
    let listed = || {
        headers
            .iter()
            .map(|header| format!("{header:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let find = |field: &str, header: &str| {
        headers
            .iter()
            .position(|candidate| candidate == header.trim())
            .or_else(|| {
                let wanted = header.trim().to_lowercase();
                headers
                    .iter()
                    .position(|candidate| candidate.to_lowercase() == wanted)
            })
            .ok_or_else(|| {
                format!(
                    "mapping.{field}: no column {header:?}; the file's columns are {}",
                    listed()
                )
            })
    };
    let mapped_email = mapping
        .and_then(|mapping| mapping.get("email"))
        .map(|header| find("email", header))
        .transpose()?;
    let email = match mapped_email {
        Some(column) => column,
        None => sheet::email_column(headers, sample).ok_or_else(|| {
            format!(
                "no email column: no header names one and no column holds addresses \
                 (the columns are {}); name it with mapping.email",
                listed()
            )
        })?,
    };
    let headerless = mapped_email.is_none()
        && headers
            .get(email)
            .is_some_and(|cell| address::parse(cell).is_ok());
    let fields = match mapping {
        Some(mapping) => mapping
            .iter()
            .filter(|(field, _)| field.as_str() != "email")
            .map(|(field, header)| Ok((field.clone(), find(field, header)?)))
            .collect::<Result<_, String>>()?,
        None => {
            let mut fields: Vec<(String, usize)> = Vec::new();
            for (column, header) in headers.iter().enumerate() {
                let name = if headerless {
                    format!("column_{}", column + 1)
                } else {
                    header.clone()
                };
                if column != email
                    && !name.is_empty()
                    && !fields.iter().any(|(known, _)| *known == name)
                {
                    fields.push((name, column));
                }
            }
            fields
        }
    };
    Ok(Columns {
        email,
        fields,
        headerless,
    })
}

/// Reads every row of `table`, handing on batches and records through `emit` (which answers
/// false to stop the reading). Fails, before anything is handed on, when the columns cannot be
/// found.
pub fn read(
    table: Table,
    options: &ReadOptions,
    mut emit: impl FnMut(Piece) -> bool,
) -> Result<Tally, String> {
    let Table { headers, rows, .. } = table;
    let mut rows = rows.peekable();
    let mut sampled: Vec<Row> = Vec::with_capacity(SAMPLE_ROWS);
    while sampled.len() < SAMPLE_ROWS
        && let Some(row) = rows.next()
    {
        sampled.push(row);
    }
    let sample: Vec<Vec<String>> = sampled
        .iter()
        .filter_map(|(_, cells)| cells.as_ref().ok().cloned())
        .collect();
    let columns = columns(&headers, &sample, options.mapping.as_ref())?;
    let first: Option<Row> = columns.headerless.then(|| (1, Ok(headers.clone())));
    let mut batcher = Batcher::new(options, &headers, columns);
    for (number, cells) in first.into_iter().chain(sampled).chain(rows) {
        batcher.take(number, cells);
        if !batcher.hand_on(false, &mut emit)? {
            return Ok(batcher.tally);
        }
    }
    batcher.hand_on(true, &mut emit)?;
    Ok(batcher.tally)
}

/// The state of a reading: the addresses seen, the batch filling and the records waiting.
struct Batcher<'a> {
    options: &'a ReadOptions,
    headers: Vec<String>,
    columns: Columns,
    /// Each distinct address's digest (96 bits: no two of billions of addresses share one) and
    /// the first row it was on.
    seen: HashMap<[u8; 12], u32>,
    /// The batch filling: its contacts as JSON, comma-separated.
    contacts: String,
    contacts_count: usize,
    records: Vec<RecordEntry>,
    tally: Tally,
}

impl<'a> Batcher<'a> {
    fn new(options: &'a ReadOptions, headers: &[String], columns: Columns) -> Self {
        Self {
            options,
            headers: headers.to_vec(),
            columns,
            seen: HashMap::new(),
            contacts: String::new(),
            contacts_count: 0,
            records: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Takes one row: a contact, a record, or nothing for a blank row.
    fn take(&mut self, number: u64, cells: Result<Vec<String>, String>) {
        self.tally.rows += 1;
        let cells = match cells.and_then(|cells| self.readable(number, cells)) {
            Ok(cells) if cells.iter().all(String::is_empty) => {
                self.tally.blank += 1;
                return;
            }
            Ok(cells) => cells,
            Err(why) => {
                self.tally.malformed += 1;
                let record = self.malformed(number, &why);
                self.records.push(record);
                return;
            }
        };
        let email = cells.get(self.columns.email).cloned().unwrap_or_default();
        let fields: Map<String, Value> = self
            .columns
            .fields
            .iter()
            .map(|(name, column)| {
                let value = cells.get(*column).cloned().unwrap_or_default();
                (name.clone(), Value::String(value))
            })
            .collect();
        if let Ok(parsed) = address::parse(&email) {
            let normalized = parsed.normalized();
            let digest = Sha256::digest(normalized.to_lowercase().as_bytes());
            let mut key = [0u8; 12];
            key.copy_from_slice(&digest[..12]);
            if let Some(&first) = self.seen.get(&key) {
                self.tally.duplicates += 1;
                let record = self.duplicate(number, &email, &normalized, fields, first.into());
                self.records.push(record);
                return;
            }
            self.seen
                .insert(key, u32::try_from(number).unwrap_or(u32::MAX));
        }
        if self.contacts_count > 0 {
            self.contacts.push(',');
        }
        let contact = json!({"email": email, "row": number, "fields": fields});
        self.contacts.push_str(&contact.to_string());
        self.contacts_count += 1;
        self.tally.contacts += 1;
    }

    /// The row's cells, or why one cannot be taken as text.
    fn readable(&self, number: u64, cells: Vec<String>) -> Result<Vec<String>, String> {
        let bytes: usize = cells.iter().map(String::len).sum();
        if bytes > MAX_ROW_BYTES {
            return Err(format!(
                "row {number}: {bytes} bytes of text, more than the {MAX_ROW_BYTES} a row may hold"
            ));
        }
        for (column, cell) in cells.iter().enumerate() {
            let header = self.headers.get(column).map_or("", String::as_str);
            if cell.contains('\u{FFFD}') {
                return Err(format!(
                    "row {number}: the cell of column {} ({header:?}) holds bytes the file's \
                     encoding cannot decode",
                    column + 1
                ));
            }
            if cell.contains('\0') {
                return Err(format!(
                    "row {number}: the cell of column {} ({header:?}) holds a NUL byte",
                    column + 1
                ));
            }
        }
        Ok(cells)
    }

    fn malformed(&self, number: u64, why: &str) -> RecordEntry {
        contact_record(
            &format!("row {number}"),
            "invalid",
            json!({
                "email": Value::Null,
                "row": number,
                "list_id": self.options.list_id,
                "fields": {},
                "verdict": "invalid",
                "reason": "malformed_row",
                "checks": [{"check": "row", "outcome": "fail", "detail": why}],
            }),
        )
    }

    fn duplicate(
        &self,
        number: u64,
        email: &str,
        normalized: &str,
        fields: Map<String, Value>,
        first: u64,
    ) -> RecordEntry {
        contact_record(
            &format!("{normalized} (row {number})"),
            "duplicate",
            json!({
                "email": email,
                "row": number,
                "list_id": self.options.list_id,
                "fields": fields,
                "verdict": "duplicate",
                "reason": "duplicate",
                "duplicate_of_row": first,
                "checks": [{
                    "check": "duplicate",
                    "outcome": "fail",
                    "detail": format!("the same address as row {first}"),
                }],
            }),
        )
    }

    /// Hands on what is ready (everything, at the end); false when the reader should stop.
    fn hand_on(
        &mut self,
        at_end: bool,
        emit: &mut impl FnMut(Piece) -> bool,
    ) -> Result<bool, String> {
        let full = self.contacts_count >= self.options.batch_size
            || self.contacts.len() >= MAX_BATCH_ARGS_BYTES;
        let mut handed = false;
        if full || (at_end && self.contacts_count > 0) {
            let contacts = std::mem::take(&mut self.contacts);
            let count = std::mem::take(&mut self.contacts_count);
            self.tally.batches += 1;
            let text = format!(
                "{{\"list_id\":{},\"validation\":\"{}\",\"contacts\":[{contacts}]}}",
                self.options.list_id,
                self.options.validation.as_str(),
            );
            // Checked once more as every args are (the cells were, in `readable`).
            let args =
                JsonText::parse("args", &text, usize::MAX).map_err(|error| error.to_string())?;
            if !emit(Piece::Batch {
                args,
                contacts: count,
            }) {
                return Ok(false);
            }
            handed = true;
        }
        if self.records.len() >= RECORDS_AT_ONCE || (at_end && !self.records.is_empty()) {
            if !emit(Piece::Records(std::mem::take(&mut self.records))) {
                return Ok(false);
            }
            handed = true;
        }
        if handed || at_end {
            return Ok(emit(Piece::Read(self.tally)));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(headers: &[&str], rows: Vec<Result<Vec<&str>, &str>>) -> Table {
        let rows: Vec<Row> = rows
            .into_iter()
            .enumerate()
            .map(|(index, cells)| {
                let cells = cells
                    .map(|cells| cells.into_iter().map(str::to_owned).collect())
                    .map_err(str::to_owned);
                (index as u64 + 2, cells)
            })
            .collect();
        Table {
            described: "test".to_owned(),
            headers: headers.iter().map(|header| (*header).to_owned()).collect(),
            rows: Box::new(rows.into_iter()),
        }
    }

    fn options(batch_size: usize, mapping: Option<&[(&str, &str)]>) -> ReadOptions {
        ReadOptions {
            list_id: json!(7),
            validation: Depth::Dns,
            batch_size,
            mapping: mapping.map(|pairs| {
                pairs
                    .iter()
                    .map(|(field, header)| ((*field).to_owned(), (*header).to_owned()))
                    .collect()
            }),
        }
    }

    fn read_all(table: Table, options: &ReadOptions) -> (Result<Tally, String>, Vec<Piece>) {
        let mut pieces = Vec::new();
        let tally = read(table, options, |piece| {
            pieces.push(piece);
            true
        });
        (tally, pieces)
    }

    fn batches(pieces: &[Piece]) -> Vec<Value> {
        pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Batch { args, .. } => Some(args.to_value()),
                _ => None,
            })
            .collect()
    }

    fn records(pieces: &[Piece]) -> Vec<&RecordEntry> {
        pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Records(records) => Some(records.iter()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn repeats_are_recorded_once_as_duplicates_and_batches_fill_to_their_size() {
        let file = table(
            &["Имя", "Почта"],
            vec![
                Ok(vec!["Иван", "ivan@example.ru"]),
                Ok(vec!["Иван 2", " IVAN@Example.RU "]),
                Ok(vec!["", ""]),
                Ok(vec!["Мария", "maria@example.ru"]),
                Err("row 6 has 3 cells, the header 2"),
                Ok(vec!["Нет", "not an address"]),
            ],
        );
        let (tally, pieces) = read_all(file, &options(2, None));
        assert_eq!(
            tally.unwrap(),
            Tally {
                rows: 6,
                blank: 1,
                malformed: 1,
                duplicates: 1,
                contacts: 3,
                batches: 2,
            }
        );
        let batches = batches(&pieces);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0]["contacts"][0]["email"], "ivan@example.ru");
        assert_eq!(batches[0]["contacts"][0]["fields"]["Имя"], "Иван");
        assert_eq!(batches[0]["contacts"][1]["row"], 5);
        assert_eq!(batches[1]["contacts"][0]["email"], "not an address");
        assert_eq!(batches[0]["list_id"], 7);
        let records = records(&pieces);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].status, "duplicate");
        assert_eq!(records[0].key, "IVAN@example.ru (row 3)");
        assert_eq!(
            records[0].data.as_ref().unwrap().to_value()["duplicate_of_row"],
            2
        );
        assert_eq!(records[1].key, "row 6");
        assert_eq!(records[1].status, "invalid");
        let data = records[1].data.as_ref().unwrap().to_value();
        assert_eq!(data["reason"], "malformed_row");
        assert!(
            data["checks"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("row 6")
        );
        assert!(matches!(pieces.last(), Some(Piece::Read(_))));
    }

    #[test]
    fn a_mapping_picks_the_columns_and_a_missing_one_is_named() {
        let headers = ["E-mail адрес", "First Name", "City"].map(str::to_owned);
        let mapping: BTreeMap<String, String> = [("email", "e-mail адрес"), ("name", "First Name")]
            .into_iter()
            .map(|(field, header)| (field.to_owned(), header.to_owned()))
            .collect();
        assert_eq!(
            columns(&headers, &[], Some(&mapping)).unwrap(),
            Columns {
                email: 0,
                fields: vec![("name".to_owned(), 1)],
                headerless: false
            }
        );
        let mut wrong = mapping.clone();
        wrong.insert("city".to_owned(), "Town".to_owned());
        let error = columns(&headers, &[], Some(&wrong)).unwrap_err();
        assert!(
            error.starts_with("mapping.city: no column \"Town\""),
            "{error}"
        );
        let error = columns(&["a".to_owned(), "b".to_owned()], &[], None).unwrap_err();
        assert!(error.starts_with("no email column"), "{error}");
    }

    #[test]
    fn a_file_without_a_header_starts_with_a_contact() {
        let file = table(
            &["first@example.ru", "Anna"],
            vec![Ok(vec!["second@example.ru", "Boris"])],
        );
        let (tally, pieces) = read_all(file, &options(10, None));
        assert_eq!(tally.unwrap().contacts, 2);
        let batch = &batches(&pieces)[0];
        assert_eq!(batch["contacts"][0]["row"], 1);
        assert_eq!(batch["contacts"][0]["fields"]["column_2"], "Anna");
        assert_eq!(batch["contacts"][1]["email"], "second@example.ru");
    }

    #[test]
    fn undecodable_cells_make_their_row_malformed_and_batches_stay_under_the_byte_cap() {
        let long = "x".repeat(60_000);
        let mut rows = vec![Ok(vec!["bad\u{FFFD}@example.ru", "n"])];
        rows.push(Ok(vec!["", "y".repeat(70_000).leak()]));
        for _ in 0..20 {
            rows.push(Ok(vec!["", long.as_str()]));
        }
        let file = table(&["email", "notes"], rows);
        let (tally, pieces) = read_all(file, &options(1_000, None));
        let tally = tally.unwrap();
        assert_eq!(tally.malformed, 2);
        assert!(tally.batches >= 3, "{tally:?}");
        for batch in batches(&pieces) {
            assert!(batch.to_string().len() <= MAX_BATCH_ARGS_BYTES + MAX_ROW_BYTES + 1024);
        }
        let detail = records(&pieces)[0].data.as_ref().unwrap().to_value()["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains("column 1"), "{detail}");
    }

    #[test]
    fn a_reader_told_to_stop_stops() {
        let addresses: Vec<String> = (0..100).map(|n| format!("p{n}@example.ru")).collect();
        let rows = addresses.iter().map(|a| Ok(vec![a.as_str()])).collect();
        let file = table(&["email"], rows);
        let mut handed = 0;
        let tally = read(file, &options(1, None), |_| {
            handed += 1;
            handed < 3
        })
        .unwrap();
        assert!(tally.rows < 100);
    }
}
