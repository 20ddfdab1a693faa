//! Files through the API, against a real coordinator on Postgres: uploads in chunks, downloads
//! whole and from an offset, the limit, removal, the refusals of bad input over raw gRPC, and
//! `celeritas upload`.

use std::io::Cursor;
use std::time::Duration;

use celeritas::domain::{ErrorKind, FileId};
use celeritas::grpc::ClientError;
use celeritas::grpc::pb;
use celeritas::grpc::pb::file_service_client::FileServiceClient;
use rand::Rng;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::support::{CoordinatorLaunch, CoordinatorProcess, TestDatabase, log_dir, wait_until};
use crate::validation::channel;

fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0; count];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The kind and message of a failed call.
fn failure<T>(result: Result<T, ClientError>) -> (ErrorKind, String) {
    match result {
        Err(ClientError::Status { kind, message }) => (kind, message),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, got an answer"),
    }
}

/// How many rows the files tables hold, complete or not, with their chunks.
async fn stored_rows(database: &TestDatabase) -> (i64, i64) {
    let files = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    let chunks = sqlx::query_scalar("SELECT count(*) FROM file_chunks")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    (files, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploads_in_chunks_and_downloads_whole_from_an_offset_and_until_deleted() {
    let database = TestDatabase::create().await;
    let logs = log_dir("files");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut client = coordinator.client().await;

    // Several upload messages and several stored chunks, the last one short.
    let bytes = random_bytes(3 * 1024 * 1024 + 12_345);
    let file = client
        .upload(
            Cursor::new(bytes.clone()),
            "contacts.csv",
            Some("text/csv"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(file.sha256, sha256_hex(&bytes));
    assert_eq!(
        (file.name.as_str(), file.content_type.as_str()),
        ("contacts.csv", "text/csv")
    );
    assert_eq!(client.file(file.id).await.unwrap(), file);

    let (info, whole) = client.download_all(file.id, 0).await.unwrap();
    assert_eq!(info, file);
    assert_eq!(whole.len(), bytes.len());
    assert_eq!(sha256_hex(&whole), file.sha256);

    // Resumed from the middle of a stored chunk.
    let offset = 1_000_001;
    let (_, rest) = client.download_all(file.id, offset).await.unwrap();
    assert_eq!(rest, bytes[offset as usize..]);
    // At the end: the metadata and no bytes; past it: refused, naming the offset.
    let (info, nothing) = client.download_all(file.id, file.size).await.unwrap();
    assert_eq!((info.size, nothing.len()), (file.size, 0));
    let (kind, message) = failure(client.download(file.id, file.size + 1).await);
    assert_eq!(kind, ErrorKind::OutOfRange, "{message}");
    assert!(message.starts_with("offset:"), "{message}");

    // An empty file is a file too.
    let empty = client
        .upload(Cursor::new(Vec::new()), "empty.txt", None, Some(0))
        .await
        .unwrap();
    assert_eq!(
        (empty.size, empty.content_type.as_str()),
        (0, "application/octet-stream")
    );
    assert_eq!(empty.sha256, sha256_hex(b""));

    // Unknown ids.
    let unknown = FileId::generate();
    for result in [
        client.file(unknown).await.map(|_| ()),
        client.download(unknown, 0).await.map(|_| ()),
        client.delete_file(unknown).await,
    ] {
        let (kind, message) = failure(result);
        assert_eq!(kind, ErrorKind::NotFound, "{message}");
        assert!(message.starts_with("file_id:"), "{message}");
    }

    // Deleted: gone with its bytes.
    client.delete_file(file.id).await.unwrap();
    let (kind, _) = failure(client.download(file.id, 0).await);
    assert_eq!(kind, ErrorKind::NotFound);
    client.delete_file(empty.id).await.unwrap();
    assert_eq!(stored_rows(&database).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused_with_both_sizes_and_leaves_nothing() {
    let database = TestDatabase::create().await;
    let logs = log_dir("files-limit");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_FILES__MAX_BYTES", "1 MiB")
        .start()
        .await;
    let mut client = coordinator.client().await;

    let bytes = random_bytes(3 * 1024 * 1024);
    let (kind, message) = failure(
        client
            .upload(Cursor::new(bytes.clone()), "big.bin", None, None)
            .await,
    );
    assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
    // Refused once the running total passed the limit: at the second message of 1 MiB.
    assert!(
        message.contains("2097152 bytes") && message.contains("1048576 bytes"),
        "{message}"
    );
    // A declared size over the limit is refused before any byte is sent.
    let (kind, message) = failure(
        client
            .upload(Cursor::new(bytes), "big.bin", None, Some(3 * 1024 * 1024))
            .await,
    );
    assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
    assert!(
        message.starts_with("header.size:") && message.contains("3145728 bytes"),
        "{message}"
    );
    wait_until(
        "the refused upload's rows are gone",
        Duration::from_secs(10),
        || async { stored_rows(&database).await == (0, 0) },
    )
    .await;

    // At the limit exactly, it is taken.
    let at_limit = random_bytes(1024 * 1024);
    let file = client
        .upload(Cursor::new(at_limit), "fits.bin", None, None)
        .await
        .unwrap();
    assert_eq!(file.size, 1024 * 1024);
}

/// A raw upload of `messages`; the status it was refused with.
async fn refused_upload(
    files: &mut FileServiceClient<tonic::transport::Channel>,
    messages: Vec<pb::upload_request::Message>,
) -> tonic::Status {
    let requests = messages.into_iter().map(|message| pb::UploadRequest {
        message: Some(message),
    });
    files
        .upload(futures::stream::iter(requests.collect::<Vec<_>>()))
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_ids_are_refused_naming_the_field() {
    use pb::upload_request::Message;
    let database = TestDatabase::create().await;
    let logs = log_dir("files-refusals");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mut files = FileServiceClient::new(channel(&coordinator).await);
    let header = |name: &str| {
        Message::Header(pb::UploadHeader {
            name: name.to_owned(),
            content_type: String::new(),
            size: None,
        })
    };
    let cases: Vec<(Vec<Message>, &str)> = vec![
        (vec![], "header:"),
        (vec![Message::Chunk(b"early".to_vec())], "header:"),
        (vec![header("")], "header.name:"),
        (vec![header("a\0b")], "header.name:"),
        (vec![header(&"n".repeat(256))], "header.name:"),
        (vec![header("twice"), header("twice")], "header:"),
        (
            vec![header("huge"), Message::Chunk(vec![0; 1024 * 1024 + 1])],
            "chunk:",
        ),
        (
            vec![header("too-huge"), Message::Chunk(vec![0; 2 * 1024 * 1024])],
            "chunk:",
        ),
    ];
    for (messages, field) in cases {
        let status = refused_upload(&mut files, messages).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    let status = refused_upload(
        &mut files,
        vec![
            Message::Header(pb::UploadHeader {
                name: "short".to_owned(),
                content_type: "text/plain".to_owned(),
                size: Some(10),
            }),
            Message::Chunk(b"12345".to_vec()),
        ],
    )
    .await;
    assert!(status.message().starts_with("header.size:"), "{status:?}");

    for malformed in ["", "not-a-uuid"] {
        let status = files
            .get_file(pb::GetFileRequest {
                file_id: malformed.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("file_id:"), "{status:?}");
        let status = files
            .download(pb::DownloadRequest {
                file_id: malformed.to_owned(),
                offset: 0,
            })
            .await
            .unwrap_err();
        assert!(status.message().starts_with("file_id:"), "{status:?}");
        let status = files
            .delete_file(pb::DeleteFileRequest {
                file_id: malformed.to_owned(),
            })
            .await
            .unwrap_err();
        assert!(status.message().starts_with("file_id:"), "{status:?}");
    }
    wait_until(
        "the refused uploads' rows are gone",
        Duration::from_secs(10),
        || async { stored_rows(&database).await == (0, 0) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celeritas_upload_prints_an_id_that_downloads_to_the_same_bytes() {
    let database = TestDatabase::create().await;
    let logs = log_dir("files-cli");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("контакты.csv");
    let bytes = random_bytes(1_500_000);
    std::fs::write(&path, &bytes).unwrap();

    let url = coordinator.url.clone();
    let arguments = |extra: &[&str]| {
        let mut arguments = vec![
            "upload".to_owned(),
            path.display().to_string(),
            "--coordinator".to_owned(),
            url.clone(),
        ];
        arguments.extend(extra.iter().map(|argument| (*argument).to_owned()));
        arguments
    };
    let run = |arguments: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
                .args(arguments)
                .env_remove("CELERITAS_COORDINATOR")
                .env("RUST_LOG", "warn")
                .output()
                .expect("run celeritas")
        })
    };
    let plain = run(arguments(&[])).await.unwrap();
    assert!(plain.status.success(), "{plain:?}");
    let id = FileId::parse("stdout", String::from_utf8(plain.stdout).unwrap().trim()).unwrap();
    let mut client = coordinator.client().await;
    let (info, downloaded) = client.download_all(id, 0).await.unwrap();
    assert_eq!(info.name.as_str(), "контакты.csv");
    assert_eq!(downloaded, bytes);

    let json = run(arguments(&["--content-type", "text/csv", "--json"]))
        .await
        .unwrap();
    assert!(json.status.success(), "{json:?}");
    let printed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(printed["size"], bytes.len());
    assert_eq!(printed["sha256"], sha256_hex(&bytes));
    assert_eq!(printed["content_type"], "text/csv");
    let id = FileId::parse("file_id", printed["file_id"].as_str().unwrap()).unwrap();
    assert_eq!(client.download_all(id, 0).await.unwrap().1, bytes);
}
