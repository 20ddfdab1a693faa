//! A contact file as rows: CSV through the csv crate over one transcoding reader, XLSX through
//! calamine's cell reader (the first sheet or a named one) on a thread of its own that hands
//! rows over a bounded channel; either way memory stays flat however long the file. What the
//! file is comes from its bytes, not its name: a ZIP is a workbook, an OLE container an
//! encrypted (password-protected) XLSX or an old XLS, anything else text.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use calamine::{Data, Reader};

use super::sheet::{SAMPLE_BYTES, sniff_delimiter, sniff_encoding, utf8_reader};

/// What the import was told the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Decide from the bytes.
    #[default]
    Auto,
    /// Delimited text.
    Csv,
    /// An XLSX workbook.
    Xlsx,
}

/// How to read a CSV; `None` decides from the bytes.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// An encoding label (`utf-8`, `windows-1251`, `koi8-r`, …).
    pub encoding: Option<String>,
    /// The delimiter.
    pub delimiter: Option<u8>,
}

/// Why a file cannot be read as contacts; the import fails with it before any row is judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Nothing in it.
    #[error("the file is empty")]
    Empty,
    /// An encrypted workbook.
    #[error("the workbook is password-protected; save it without a password")]
    PasswordProtected,
    /// Not a workbook, or a broken one.
    #[error("the file is not a readable spreadsheet: {0}")]
    Corrupt(String),
    /// Binary bytes where text was expected.
    #[error("the file is neither CSV nor an XLSX workbook")]
    NotTabular,
    /// The named sheet is not there.
    #[error("no sheet {0:?} in the workbook")]
    NoSuchSheet(String),
    /// An encoding label nobody knows.
    #[error("unknown encoding {0:?}")]
    UnknownEncoding(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// One row: its number in the file (the header is row 1) and its cells, or why it is broken.
pub type Row = (u64, Result<Vec<String>, String>);

/// Rows of a workbook the reading thread has ready before they are asked for.
const WORKBOOK_ROWS_AHEAD: usize = 256;

/// A file's header and its rows, read as they are asked for.
pub struct Table {
    /// What the file was read as: `CSV (windows-1251, ';')`, `XLSX (sheet "Contacts")`.
    pub described: String,
    /// The first row's cells.
    pub headers: Vec<String>,
    /// The rows after the header.
    pub rows: Box<dyn Iterator<Item = Row> + Send>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Table")
            .field("described", &self.described)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Opens a contact file.
pub fn open(
    path: &Path,
    format: Format,
    csv: &CsvOptions,
    sheet: Option<&str>,
) -> Result<Table, FileError> {
    let io = |error: std::io::Error| FileError::Io(error.to_string());
    let mut file = File::open(path).map_err(io)?;
    let mut sample = Vec::with_capacity(SAMPLE_BYTES);
    (&mut file)
        .take(SAMPLE_BYTES as u64)
        .read_to_end(&mut sample)
        .map_err(io)?;
    if sample.iter().all(|byte| byte.is_ascii_whitespace()) {
        return Err(FileError::Empty);
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let zip = sample.starts_with(b"PK\x03\x04");
    let ole = sample.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]);
    if ole && format != Format::Csv {
        return Err(ole_container(&sample));
    }
    match format {
        Format::Xlsx => workbook(file, sheet),
        Format::Auto if zip => workbook(file, sheet),
        Format::Csv | Format::Auto => {
            if zip || ole || looks_binary(&sample) {
                return Err(FileError::NotTabular);
            }
            text(file, &sample, csv)
        }
    }
}

/// What an OLE compound file holding a spreadsheet is: Excel keeps a password-protected XLSX
/// encrypted in one (its `EncryptedPackage` stream, named in UTF-16 in the directory near the
/// start), and an old XLS is one too.
fn ole_container(sample: &[u8]) -> FileError {
    let name: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    if sample.windows(name.len()).any(|window| window == name) {
        FileError::PasswordProtected
    } else {
        FileError::Corrupt(
            "an old Excel (XLS) workbook or another Office file; save it as XLSX or CSV".to_owned(),
        )
    }
}

/// Bytes no text file has: NULs outside UTF-16, other control bytes.
fn looks_binary(sample: &[u8]) -> bool {
    let encoding = sniff_encoding(sample);
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        return false;
    }
    let controls = sample
        .iter()
        .filter(|&&byte| byte < 0x09 || (0x0E..0x20).contains(&byte))
        .count();
    controls * 100 > sample.len()
}

fn text(file: File, sample: &[u8], options: &CsvOptions) -> Result<Table, FileError> {
    let encoding = match &options.encoding {
        Some(label) => encoding_rs::Encoding::for_label(label.as_bytes())
            .ok_or_else(|| FileError::UnknownEncoding(label.clone()))?,
        None => sniff_encoding(sample),
    };
    let delimiter = options.delimiter.unwrap_or_else(|| {
        let (decoded, _, _) = encoding.decode(sample);
        sniff_delimiter(&decoded)
    });
    let reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(utf8_reader(BufReader::new(file), encoding));
    let mut records = reader.into_records();
    let headers = match records.next() {
        Some(Ok(headers)) => headers.iter().map(|cell| cell.trim().to_owned()).collect(),
        Some(Err(error)) => return Err(FileError::Corrupt(error.to_string())),
        None => return Err(FileError::Empty),
    };
    let width = Vec::<String>::len(&headers);
    let rows = records.enumerate().map(move |(index, record)| {
        let number = index as u64 + 2;
        let cells = match record {
            Ok(record) if record.len() != width && !(record.len() == 1 && record[0].is_empty()) => {
                Err(format!(
                    "row {number} has {} cells, the header {width}",
                    record.len()
                ))
            }
            Ok(record) => Ok(record.iter().map(|cell| cell.trim().to_owned()).collect()),
            Err(error) => Err(format!("row {number} cannot be read: {error}")),
        };
        (number, cells)
    });
    Ok(Table {
        described: format!("CSV ({}, {:?})", encoding.name(), delimiter as char),
        headers,
        rows: Box::new(rows),
    })
}

fn workbook(file: File, sheet: Option<&str>) -> Result<Table, FileError> {
    let reader = BufReader::new(file);
    let mut workbook = match calamine::open_workbook_from_rs::<calamine::Xlsx<_>, _>(reader) {
        Ok(workbook) => workbook,
        Err(calamine::XlsxError::Password) => return Err(FileError::PasswordProtected),
        Err(_) => {
            return Err(FileError::Corrupt(
                "not an XLSX workbook (save an old XLS or an ODS as XLSX or CSV)".to_owned(),
            ));
        }
    };
    let name = match sheet {
        Some(name) => name.to_owned(),
        None => workbook
            .sheet_names()
            .first()
            .cloned()
            .ok_or(FileError::Empty)?,
    };
    if !workbook.sheet_names().contains(&name) {
        return Err(FileError::NoSuchSheet(name));
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(WORKBOOK_ROWS_AHEAD);
    let sheet_name = name.clone();
    std::thread::spawn(move || send_rows(&mut workbook, &sheet_name, &sender));
    let mut rows = receiver.into_iter();
    let headers = match rows.next() {
        Some((_, Ok(headers))) => headers,
        Some((_, Err(why))) => return Err(FileError::Corrupt(why)),
        None => return Err(FileError::Empty),
    };
    Ok(Table {
        described: format!("XLSX (sheet {name:?})"),
        headers,
        rows: Box::new(rows),
    })
}

/// Reads a sheet's cells in the order the file holds them and sends them row by row, numbered
/// as the sheet numbers them, until the sheet ends or nobody listens.
fn send_rows<R: Read + Seek>(
    workbook: &mut calamine::Xlsx<R>,
    sheet: &str,
    sender: &std::sync::mpsc::SyncSender<Row>,
) {
    let mut cells = match workbook.worksheet_cells_reader(sheet) {
        Ok(cells) => cells,
        Err(error) => {
            let _ = sender.send((1, Err(error.to_string())));
            return;
        }
    };
    let mut current: Option<(u32, Vec<String>)> = None;
    loop {
        let cell = match cells.next_cell() {
            Ok(Some(cell)) => cell,
            Ok(None) => break,
            Err(error) => {
                let number = current.as_ref().map_or(1, |(row, _)| u64::from(*row) + 1);
                let _ = sender.send((number, Err(format!("the sheet cannot be read: {error}"))));
                return;
            }
        };
        let (row, column) = cell.get_position();
        if current.as_ref().is_some_and(|(at, _)| *at != row)
            && let Some((at, values)) = current.take()
            && sender.send((u64::from(at) + 1, Ok(values))).is_err()
        {
            return;
        }
        let values = &mut current.get_or_insert_with(|| (row, Vec::new())).1;
        let column = column as usize;
        if values.len() <= column {
            values.resize(column + 1, String::new());
        }
        values[column] = cell_text(&Data::from(cell.get_value().clone()));
    }
    if let Some((at, values)) = current {
        let _ = sender.send((u64::from(at) + 1, Ok(values)));
    }
}

fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::Float(value) if value.fract() == 0.0 && value.abs() < 1e15 => {
            format!("{}", *value as i64)
        }
        other => other.to_string().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    fn read(bytes: &[u8]) -> Result<(Vec<String>, Vec<Row>), FileError> {
        let file = file_of(bytes);
        let table = open(file.path(), Format::Auto, &CsvOptions::default(), None)?;
        Ok((table.headers, table.rows.collect()))
    }

    #[test]
    fn a_cp1251_csv_with_semicolons_reads_as_rows_and_broken_rows_are_named() {
        let text = "Имя;Email\n\"Петров; Иван\";ivan@example.ru\nМария;maria@example.ru;лишнее\n";
        let bytes = encoding_rs::WINDOWS_1251.encode(text).0.into_owned();
        let (headers, rows) = read(&bytes).unwrap();
        assert_eq!(headers, vec!["Имя", "Email"]);
        assert_eq!(
            rows[0],
            (
                2,
                Ok(vec![
                    "Петров; Иван".to_owned(),
                    "ivan@example.ru".to_owned()
                ])
            )
        );
        assert_eq!(rows[1].0, 3);
        assert!(
            rows[1]
                .1
                .as_ref()
                .unwrap_err()
                .contains("row 3 has 3 cells")
        );
    }

    #[test]
    fn what_is_no_contact_file_is_refused_with_why() {
        assert_eq!(read(b"").unwrap_err(), FileError::Empty);
        assert_eq!(read(b" \n\n").unwrap_err(), FileError::Empty);
        assert_eq!(
            read(&[0u8, 1, 2, 3, 4, 5, 6, 7, 0, 0, 1, 2]).unwrap_err(),
            FileError::NotTabular
        );
        assert!(matches!(
            read(b"PK\x03\x04 not really a zip").unwrap_err(),
            FileError::Corrupt(_)
        ));
        let mut encrypted = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        encrypted.extend(std::iter::repeat_n(0u8, 500));
        let old_xls = encrypted.clone();
        encrypted.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(read(&encrypted).unwrap_err(), FileError::PasswordProtected);
        assert!(matches!(
            read(&old_xls).unwrap_err(),
            FileError::Corrupt(why) if why.contains("XLS")
        ));
        let file = file_of(b"email\na@b.ru\n");
        let options = CsvOptions {
            encoding: Some("no-such-encoding".to_owned()),
            delimiter: None,
        };
        assert_eq!(
            open(file.path(), Format::Csv, &options, None).unwrap_err(),
            FileError::UnknownEncoding("no-such-encoding".to_owned())
        );
    }
}
