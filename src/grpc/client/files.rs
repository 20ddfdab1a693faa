//! The client's file calls: upload from a reader or a path, download from an offset (what a
//! worker uses to read a task's file), metadata and removal.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

use super::{ClientError, CoordinatorClient};
use crate::domain::{FileId, FileInfo, MAX_FILE_CHUNK_BYTES, ValidationError};
use crate::grpc::convert::file_info_from_pb;
use crate::grpc::pb;

/// The largest file message either way: a full chunk and room for its framing.
pub(super) const MAX_MESSAGE_BYTES: usize = MAX_FILE_CHUNK_BYTES + 64 * 1024;

/// A file's bytes as they arrive, in order.
pub type FileBytes = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ClientError>> + Send>>;

/// Fills `buffer` from `reader` as far as it goes; how many bytes were read (fewer only at the
/// end of the input).
async fn read_full(
    reader: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Where a reader's failure waits for the upload to notice it.
#[derive(Default)]
struct ReadFailure {
    error: Mutex<Option<std::io::Error>>,
    noticed: Notify,
}

impl CoordinatorClient {
    /// Uploads what `reader` yields as a file named `name` (`content_type` defaults to
    /// `application/octet-stream`), in chunks of 1 MiB. A reader that fails abandons the
    /// upload: the call is dropped before the stream ends, so the coordinator keeps nothing.
    pub async fn upload(
        &mut self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        name: &str,
        content_type: Option<&str>,
        size: Option<u64>,
    ) -> Result<FileInfo, ClientError> {
        let header = pb::UploadRequest {
            message: Some(pb::upload_request::Message::Header(pb::UploadHeader {
                name: name.to_owned(),
                content_type: content_type.unwrap_or_default().to_owned(),
                size,
            })),
        };
        let failure = Arc::new(ReadFailure::default());
        let chunks = futures::stream::unfold(
            (reader, failure.clone()),
            |(mut reader, failure)| async move {
                let mut buffer = vec![0; MAX_FILE_CHUNK_BYTES];
                match read_full(&mut reader, &mut buffer).await {
                    Ok(0) => None,
                    Ok(read) => {
                        buffer.truncate(read);
                        let message = pb::UploadRequest {
                            message: Some(pb::upload_request::Message::Chunk(buffer)),
                        };
                        Some((message, (reader, failure)))
                    }
                    Err(error) => {
                        *failure.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        failure.noticed.notify_one();
                        // Never end the stream: an ended stream would complete the file.
                        std::future::pending().await
                    }
                }
            },
        );
        let requests = futures::stream::once(async { header }).chain(chunks);
        let call = self.files.upload(requests);
        let response = tokio::select! {
            response = call => response?.into_inner(),
            () = failure.noticed.notified() => {
                let error = failure.error.lock().unwrap_or_else(|e| e.into_inner()).take();
                return Err(ClientError::Read {
                    what: format!("the file to upload ({name})"),
                    source: error.unwrap_or_else(|| std::io::Error::other("read failed")),
                });
            }
        };
        Ok(file_info_from_pb("file", response.file)?)
    }

    /// Uploads the file at `path`, named `name` or by the path's last part.
    pub async fn upload_path(
        &mut self,
        path: &Path,
        name: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<FileInfo, ClientError> {
        let read_error = |source| ClientError::Read {
            what: path.display().to_string(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let size = file.metadata().await.map_err(read_error)?.len();
        let name = match name {
            Some(name) => name.to_owned(),
            None => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        self.upload(file, &name, content_type, Some(size)).await
    }

    /// A file's metadata and its bytes from `offset` (to resume an interrupted download).
    pub async fn download(
        &mut self,
        id: FileId,
        offset: u64,
    ) -> Result<(FileInfo, FileBytes), ClientError> {
        let mut responses = self
            .files
            .download(pb::DownloadRequest {
                file_id: id.to_string(),
                offset,
            })
            .await?
            .into_inner();
        let first = responses
            .message()
            .await?
            .ok_or_else(|| ValidationError::new("file", "the download ended before it began"))?;
        let info = file_info_from_pb("file", first.file)?;
        let first_chunk = Some(first.chunk).filter(|chunk| !chunk.is_empty());
        let rest = responses.map(|response| Ok(response?.chunk));
        let bytes = futures::stream::iter(first_chunk.map(Ok)).chain(rest);
        Ok((info, Box::pin(bytes)))
    }

    /// A file's bytes from `offset`, all in memory: for tests and small files.
    pub async fn download_all(
        &mut self,
        id: FileId,
        offset: u64,
    ) -> Result<(FileInfo, Vec<u8>), ClientError> {
        let (info, mut chunks) = self.download(id, offset).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok((info, bytes))
    }

    /// A file's metadata.
    pub async fn file(&mut self, id: FileId) -> Result<FileInfo, ClientError> {
        let response = self
            .files
            .get_file(pb::GetFileRequest {
                file_id: id.to_string(),
            })
            .await?
            .into_inner();
        Ok(file_info_from_pb("file", response.file)?)
    }

    /// Removes a file.
    pub async fn delete_file(&mut self, id: FileId) -> Result<(), ClientError> {
        self.files
            .delete_file(pb::DeleteFileRequest {
                file_id: id.to_string(),
            })
            .await?;
        Ok(())
    }
}
