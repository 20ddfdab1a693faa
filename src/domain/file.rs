//! Files uploaded through the API and kept in the store: their ids, names and media types, as
//! parsers that name the field they read.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ValidationError;
use super::text::check_text;

/// The most bytes one message of an upload or a download carries.
pub const MAX_FILE_CHUNK_BYTES: usize = 1024 * 1024;

/// The longest file name or media type accepted, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The media type of a file uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The identity of a stored file: a UUID, time-ordered (v7) when celeritas creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(Uuid);

impl FileId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a client-supplied id; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        super::ids::parse_uuid(field, text, "file id").map(Self)
    }

    /// The UUID behind the id.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A file's name as given at upload: 1 to 255 bytes without NUL. It is a label, never a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    /// Parses a file name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        check_text(field, text, MAX_FILE_NAME_BYTES)?;
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A file's media type: at most 255 bytes without NUL; `application/octet-stream` when none is
/// given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(String);

impl ContentType {
    /// Parses a media type; empty text is the default. `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() {
            return Ok(Self(DEFAULT_CONTENT_TYPE.to_owned()));
        }
        check_text(field, text, MAX_FILE_NAME_BYTES)?;
        Ok(Self(text.to_owned()))
    }

    /// The media type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A file about to be uploaded, as the store first writes it (not yet complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Its id.
    pub id: FileId,
    /// Its name.
    pub name: FileName,
    /// Its media type.
    pub content_type: ContentType,
    /// When its upload began.
    pub created_at: DateTime<Utc>,
}

/// A stored, complete file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Its id.
    pub id: FileId,
    /// Its name.
    pub name: FileName,
    /// Its media type.
    pub content_type: ContentType,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 digest of its bytes, as 64 lowercase hexadecimal digits.
    pub sha256: String,
    /// When its upload began.
    pub created_at: DateTime<Utc>,
}

/// Some of a file's bytes, and where in the file they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    /// Where `bytes` start, from the file's beginning.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A digest as lowercase hexadecimal digits, the way files' SHA-256 digests are shown.
pub fn hex_digest(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_required_short_and_without_nul() {
        assert_eq!(
            FileName::parse("header.name", "").unwrap_err().to_string(),
            "header.name: is required"
        );
        let long = "n".repeat(256);
        assert!(
            FileName::parse("header.name", &long)
                .unwrap_err()
                .to_string()
                .contains("256 bytes, more than the limit of 255")
        );
        assert!(
            FileName::parse("header.name", "a\0b")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        assert_eq!(
            FileName::parse("header.name", "контакты.csv")
                .unwrap()
                .as_str(),
            "контакты.csv"
        );
    }

    #[test]
    fn an_empty_content_type_is_octet_stream() {
        assert_eq!(
            ContentType::parse("header.content_type", "")
                .unwrap()
                .as_str(),
            DEFAULT_CONTENT_TYPE
        );
        assert!(ContentType::parse("header.content_type", "text/\0").is_err());
    }

    #[test]
    fn file_ids_are_uuids_named_by_field() {
        let error = FileId::parse("file_id", "nope").unwrap_err().to_string();
        assert!(
            error.starts_with("file_id:") && error.contains("not a file id"),
            "{error}"
        );
        let id = FileId::generate();
        assert_eq!(FileId::parse("file_id", &id.to_string()).unwrap(), id);
    }
}
