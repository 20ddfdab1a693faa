//! Files: upload messages parsed into `UploadPart`s, file metadata both ways.

use super::primitives::{timestamp_from_pb, timestamp_to_pb};
use crate::coordinator::{UploadHeader, UploadPart};
use crate::domain::{
    ContentType, FileId, FileInfo, FileName, MAX_FILE_CHUNK_BYTES, ValidationError,
};
use crate::grpc::pb;

/// One upload message as the coordinator reads it.
pub fn upload_part_from_pb(request: pb::UploadRequest) -> Result<UploadPart, ValidationError> {
    use pb::upload_request::Message;
    match request.message {
        Some(Message::Header(header)) => Ok(UploadPart::Header(UploadHeader {
            name: FileName::parse("header.name", &header.name)?,
            content_type: ContentType::parse("header.content_type", &header.content_type)?,
            size: header.size,
        })),
        Some(Message::Chunk(bytes)) => {
            if bytes.len() > MAX_FILE_CHUNK_BYTES {
                return Err(ValidationError::new(
                    "chunk",
                    format!(
                        "is {} bytes, more than the limit of {MAX_FILE_CHUNK_BYTES} bytes per \
                         message",
                        bytes.len()
                    ),
                ));
            }
            Ok(UploadPart::Chunk(bytes))
        }
        None => Err(ValidationError::new(
            "message",
            "is empty: an upload message carries a header or a chunk",
        )),
    }
}

/// A file's metadata on the wire.
pub fn file_info_to_pb(file: FileInfo) -> pb::FileInfo {
    pb::FileInfo {
        file_id: file.id.to_string(),
        name: file.name.as_str().to_owned(),
        content_type: file.content_type.as_str().to_owned(),
        size: file.size,
        sha256: file.sha256,
        created_at: Some(timestamp_to_pb(file.created_at)),
    }
}

/// A file's metadata from the coordinator's answer; `field` names where it was.
pub fn file_info_from_pb(
    field: &str,
    file: Option<pb::FileInfo>,
) -> Result<FileInfo, ValidationError> {
    let file = file.ok_or_else(|| ValidationError::new(field, "is missing"))?;
    let created_at = file
        .created_at
        .ok_or_else(|| ValidationError::new(format!("{field}.created_at"), "is missing"))?;
    Ok(FileInfo {
        id: FileId::parse(&format!("{field}.file_id"), &file.file_id)?,
        name: FileName::parse(&format!("{field}.name"), &file.name)?,
        content_type: ContentType::parse(&format!("{field}.content_type"), &file.content_type)?,
        size: file.size,
        sha256: file.sha256,
        created_at: timestamp_from_pb(&format!("{field}.created_at"), created_at)?,
    })
}
