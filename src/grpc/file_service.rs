//! `celeritas.v1.FileService`: thin handlers over the coordinator's files. An upload's messages
//! are parsed here, one by one as they arrive, and handed to the coordinator as a stream.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{file_info_to_pb, upload_part_from_pb};
use super::pb;
use super::status::invalid;
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::domain::{FileId, MAX_FILE_CHUNK_BYTES, ValidationError};

/// The largest upload message decoded: a full chunk and room for its framing. A larger one is
/// refused before it is read into memory.
pub const MAX_UPLOAD_MESSAGE_BYTES: usize = MAX_FILE_CHUNK_BYTES + 64 * 1024;

/// The file API of one coordinator.
pub struct FileApi {
    coordinator: Arc<Coordinator>,
}

impl FileApi {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

/// A stream error on an upload, in the coordinator's terms.
fn upload_stream_error(status: Status) -> CoordinatorError {
    match status.code() {
        // Undecodable (the codec) or too large to decode (tonic's limit).
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => ValidationError::new(
            "chunk",
            format!(
                "cannot be read ({}); a message carries at most {MAX_FILE_CHUNK_BYTES} bytes",
                status.message()
            ),
        )
        .into(),
        _ => CoordinatorError::Unavailable(format!(
            "the upload's stream broke ({}); nothing was kept, upload again",
            status.message()
        )),
    }
}

#[tonic::async_trait]
impl pb::file_service_server::FileService for FileApi {
    type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(rpc = "Upload"))]
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let parts = request
            .into_inner()
            .map(|message| match message {
                Ok(message) => upload_part_from_pb(message).map_err(CoordinatorError::Invalid),
                Err(status) => Err(upload_stream_error(status)),
            })
            .boxed();
        let file = self.coordinator.upload(parts).await?;
        Ok(Response::new(pb::UploadResponse {
            file: Some(file_info_to_pb(file)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Download"))]
    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let request = request.into_inner();
        let id = FileId::parse("file_id", &request.file_id).map_err(invalid)?;
        let (file, chunks) = self.coordinator.download(id, request.offset).await?;
        if request.offset == file.size {
            // Nothing left to send: the metadata alone.
            let only = pb::DownloadResponse {
                file: Some(file_info_to_pb(file)),
                chunk: Vec::new(),
                offset: request.offset,
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async {
                Ok(only)
            }))));
        }
        let mut first = Some(file_info_to_pb(file));
        let stream = ReceiverStream::new(chunks).map(move |chunk| {
            chunk
                .map(|chunk| pb::DownloadResponse {
                    file: first.take(),
                    chunk: chunk.bytes,
                    offset: chunk.offset,
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetFile"))]
    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<Response<pb::GetFileResponse>, Status> {
        let id = FileId::parse("file_id", &request.into_inner().file_id).map_err(invalid)?;
        let file = self.coordinator.file(id).await?;
        Ok(Response::new(pb::GetFileResponse {
            file: Some(file_info_to_pb(file)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteFile"))]
    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let id = FileId::parse("file_id", &request.into_inner().file_id).map_err(invalid)?;
        self.coordinator.delete_file(id).await?;
        Ok(Response::new(pb::DeleteFileResponse {}))
    }
}
