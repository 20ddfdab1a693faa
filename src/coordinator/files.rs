//! Files through the API: an upload streams in, is hashed and counted as it arrives and goes to
//! the store a chunk per transaction, never whole in memory; a download reads pages of chunks
//! from an offset. A file becomes visible only when its upload completes; an upload that fails
//! or is abandoned removes what it wrote.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::{Coordinator, CoordinatorError};
use crate::domain::{ContentType, FileChunk, FileId, FileInfo, FileName, NewFile, ValidationError};
use crate::store::Store;

/// How many bytes each stored chunk holds (the last of a file may hold fewer): small enough for
/// a short transaction, large enough that a big file is not a million rows.
const STORED_CHUNK_BYTES: usize = 256 * 1024;
/// How many stored chunks a download reads at a time.
const DOWNLOAD_PAGE_CHUNKS: u32 = 4;
/// How many chunks a download holds ready for a slow reader.
const DOWNLOAD_BUFFER_CHUNKS: usize = 4;
/// An upload still incomplete this long after it began was abandoned (its coordinator died
/// mid-upload: a live one removes a failed upload's bytes itself).
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(24);
/// How often a coordinator looks for abandoned uploads.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Removes abandoned uploads at start and every `SWEEP_EVERY`, until `stop` fires.
pub(super) async fn sweep_abandoned_uploads(
    store: Arc<dyn Store>,
    clock: crate::clock::SharedClock,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        match store
            .remove_abandoned_uploads(clock.now() - ABANDONED_AFTER)
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed abandoned uploads"),
            Err(error) => tracing::warn!(%error, "cannot remove abandoned uploads"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

/// What an upload's header says.
#[derive(Debug, Clone)]
pub struct UploadHeader {
    /// The file's name.
    pub name: FileName,
    /// Its media type.
    pub content_type: ContentType,
    /// Its size, when the client declared it.
    pub size: Option<u64>,
}

/// One message of an upload, parsed at the edge.
#[derive(Debug, Clone)]
pub enum UploadPart {
    /// What the file is; first, and only first.
    Header(UploadHeader),
    /// The next bytes.
    Chunk(Vec<u8>),
}

/// An upload's messages; an error ends the upload (a message that does not parse, a broken
/// stream).
pub type UploadParts = BoxStream<'static, Result<UploadPart, CoordinatorError>>;

/// A file's chunks on their way to a downloading client.
pub type DownloadChunks = mpsc::Receiver<Result<FileChunk, CoordinatorError>>;

fn no_file(id: FileId) -> CoordinatorError {
    CoordinatorError::NotFound(ValidationError::new("file_id", format!("no file {id}")))
}

/// An upload's file until it completes: dropped before then (the upload failed, or its client
/// went away and the handler with it), it removes what was written.
struct PartialFile {
    store: Arc<dyn Store>,
    tracker: TaskTracker,
    id: Option<FileId>,
}

impl PartialFile {
    /// The file completed: nothing to remove.
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let store = self.store.clone();
            self.tracker.spawn(async move {
                if let Err(error) = store.delete_file(id).await {
                    tracing::warn!(%id, %error, "cannot remove an unfinished upload");
                }
            });
        }
    }
}

impl Coordinator {
    /// Stores the file an upload streams in and answers what was stored. The first part must
    /// be the header; the file is refused as soon as it passes `files.max_bytes`.
    pub async fn upload(&self, mut parts: UploadParts) -> Result<FileInfo, CoordinatorError> {
        let max_bytes = self.files.max_bytes;
        let header = match parts.next().await {
            Some(Ok(UploadPart::Header(header))) => header,
            Some(Ok(UploadPart::Chunk(_))) => {
                return Err(ValidationError::new(
                    "header",
                    "the first message must be the header (name and content type), not a chunk",
                )
                .into());
            }
            Some(Err(error)) => return Err(error),
            None => {
                return Err(ValidationError::new(
                    "header",
                    "is required: the upload ended before its first message",
                )
                .into());
            }
        };
        if let Some(size) = header.size
            && size > max_bytes
        {
            return Err(too_large("header.size", size, max_bytes));
        }
        let file = NewFile {
            id: FileId::generate(),
            name: header.name,
            content_type: header.content_type,
            created_at: self.clock.now(),
        };
        self.store.create_file(&file).await?;
        let partial = PartialFile {
            store: self.store.clone(),
            tracker: self.tracker.clone(),
            id: Some(file.id),
        };
        let mut hasher = Sha256::new();
        let mut pending: Vec<u8> = Vec::with_capacity(STORED_CHUNK_BYTES);
        let mut received: u64 = 0;
        let mut stored: u64 = 0;
        while let Some(part) = parts.next().await {
            let bytes = match part? {
                UploadPart::Chunk(bytes) => bytes,
                UploadPart::Header(_) => {
                    return Err(ValidationError::new(
                        "header",
                        "only the first message may carry the header",
                    )
                    .into());
                }
            };
            received += bytes.len() as u64;
            if received > max_bytes {
                return Err(too_large("chunk", received, max_bytes));
            }
            hasher.update(&bytes);
            pending.extend_from_slice(&bytes);
            while pending.len() >= STORED_CHUNK_BYTES {
                let rest = pending.split_off(STORED_CHUNK_BYTES);
                self.store_chunk(file.id, stored, &pending).await?;
                stored += pending.len() as u64;
                pending = rest;
            }
        }
        if !pending.is_empty() {
            self.store_chunk(file.id, stored, &pending).await?;
        }
        if let Some(size) = header.size
            && size != received
        {
            return Err(ValidationError::new(
                "header.size",
                format!("declared {size} bytes, but the upload carried {received}"),
            )
            .into());
        }
        let sha256 = crate::domain::hex_digest(&hasher.finalize());
        if !self
            .store
            .complete_file(file.id, received, &sha256, self.clock.now())
            .await?
        {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "file {} was removed during its upload",
                file.id
            )));
        }
        partial.keep();
        // Answered as stored (the store keeps moments to the microsecond).
        self.file(file.id).await
    }

    /// Writes one stored chunk of an upload.
    async fn store_chunk(
        &self,
        id: FileId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), CoordinatorError> {
        if self.store.append_file_chunk(id, offset, bytes).await? {
            Ok(())
        } else {
            Err(CoordinatorError::FailedPrecondition(format!(
                "file {id} was removed during its upload"
            )))
        }
    }

    /// A file's metadata.
    pub async fn file(&self, id: FileId) -> Result<FileInfo, CoordinatorError> {
        self.store.file(id).await?.ok_or_else(|| no_file(id))
    }

    /// Removes a file.
    pub async fn delete_file(&self, id: FileId) -> Result<(), CoordinatorError> {
        if self.store.delete_file(id).await? {
            Ok(())
        } else {
            Err(no_file(id))
        }
    }

    /// A file's metadata and its bytes from `offset`, read a page at a time in the background
    /// while the client takes them. An offset past the end is OUT_OF_RANGE.
    pub async fn download(
        &self,
        id: FileId,
        offset: u64,
    ) -> Result<(FileInfo, DownloadChunks), CoordinatorError> {
        let info = self.file(id).await?;
        if offset > info.size {
            return Err(CoordinatorError::OutOfRange(ValidationError::new(
                "offset",
                format!("{offset} is past the end of the file ({} bytes)", info.size),
            )));
        }
        let (sender, receiver) = mpsc::channel(DOWNLOAD_BUFFER_CHUNKS);
        let store = self.store.clone();
        let stop = self.stop.clone();
        let size = info.size;
        self.tracker.spawn(async move {
            let mut position = offset;
            while position < size {
                let page = tokio::select! {
                    page = store.file_chunks(id, position, DOWNLOAD_PAGE_CHUNKS) => page,
                    _ = stop.cancelled() => return,
                };
                let page = match page {
                    Ok(page) if page.is_empty() => Err(no_file(id)),
                    Ok(page) => Ok(page),
                    Err(error) => Err(error.into()),
                };
                let chunks = match page {
                    Ok(chunks) => chunks,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                for chunk in chunks {
                    position = chunk.offset + chunk.bytes.len() as u64;
                    // A failed send means the client has gone.
                    if sender.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok((info, receiver))
    }
}

/// INVALID_ARGUMENT for a file over the limit, naming both sizes.
fn too_large(field: &str, size: u64, max_bytes: u64) -> CoordinatorError {
    ValidationError::new(
        field,
        format!(
            "the file is larger than the limit: {size} bytes, more than files.max_bytes \
             ({max_bytes} bytes)"
        ),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex() {
        assert_eq!(
            crate::domain::hex_digest(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
