//! Files: written chunk by chunk, invisible until complete, read by offset, removed whole.

use celeritas::domain::{ContentType, FileChunk, FileId, FileName, NewFile};

use super::*;

on_both_stores!(
    a_file_is_invisible_until_complete_then_read_by_offset,
    a_file_completes_only_when_its_chunks_add_up,
    deleting_a_file_removes_it_complete_or_not,
    abandoned_uploads_are_removed_and_nothing_else,
);

fn new_file(name: &str, now: DateTime<Utc>) -> NewFile {
    NewFile {
        id: FileId::generate(),
        name: FileName::parse("name", name).unwrap(),
        content_type: ContentType::parse("content_type", "text/csv").unwrap(),
        created_at: now,
    }
}

/// The bytes of `chunks`, joined.
fn joined(chunks: &[FileChunk]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|chunk| chunk.bytes.iter().copied())
        .collect()
}

async fn a_file_is_invisible_until_complete_then_read_by_offset(store: Arc<dyn Store>) {
    let now = t0();
    let file = new_file("contacts.csv", now);
    store.create_file(&file).await.unwrap();
    let parts: [&[u8]; 3] = [b"email\n", b"a@example.com\n", b"b@example.com\n"];
    let mut offset = 0;
    for part in parts {
        assert!(
            store
                .append_file_chunk(file.id, offset, part)
                .await
                .unwrap()
        );
        offset += part.len() as u64;
    }
    // Not downloadable while the upload is under way.
    assert_eq!(store.file(file.id).await.unwrap(), None);
    assert!(store.file_chunks(file.id, 0, 10).await.unwrap().is_empty());

    let later = after(now, Duration::from_secs(1));
    assert!(
        store
            .complete_file(file.id, offset, "digest", later)
            .await
            .unwrap()
    );
    let info = store.file(file.id).await.unwrap().expect("complete");
    assert_eq!(
        (
            info.id,
            info.name.as_str(),
            info.content_type.as_str(),
            info.size,
            info.sha256.as_str(),
            info.created_at
        ),
        (file.id, "contacts.csv", "text/csv", offset, "digest", now)
    );
    // A complete file takes no more chunks, and completes once.
    assert!(
        !store
            .append_file_chunk(file.id, offset, b"x")
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_file(file.id, offset, "digest", later)
            .await
            .unwrap()
    );

    let whole: Vec<u8> = parts.concat();
    let all = store.file_chunks(file.id, 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|chunk| chunk.offset).collect::<Vec<_>>(),
        [0, 6, 20]
    );
    assert_eq!(joined(&all), whole);
    // From the middle of the second chunk: the first answer starts exactly there.
    let from_middle = store.file_chunks(file.id, 10, 10).await.unwrap();
    assert_eq!(from_middle[0].offset, 10);
    assert_eq!(joined(&from_middle), whole[10..]);
    // A page at a time.
    let page = store.file_chunks(file.id, 0, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store.file_chunks(file.id, 20, 2).await.unwrap();
    assert_eq!(joined(&[page, rest].concat()), whole);
    // At or past the end: nothing.
    assert!(
        store
            .file_chunks(file.id, offset, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .file_chunks(file.id, offset + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // An unknown file.
    assert_eq!(store.file(FileId::generate()).await.unwrap(), None);
}

async fn a_file_completes_only_when_its_chunks_add_up(store: Arc<dyn Store>) {
    let now = t0();
    let file = new_file("short.bin", now);
    store.create_file(&file).await.unwrap();
    assert!(
        store
            .append_file_chunk(file.id, 0, &[1, 2, 3])
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_file(file.id, 4, "digest", now)
            .await
            .unwrap()
    );
    assert_eq!(store.file(file.id).await.unwrap(), None);
    assert!(
        store
            .complete_file(file.id, 3, "digest", now)
            .await
            .unwrap()
    );

    // An empty file is a file too.
    let empty = new_file("empty.bin", now);
    store.create_file(&empty).await.unwrap();
    assert!(store.complete_file(empty.id, 0, "e3b0", now).await.unwrap());
    assert_eq!(store.file(empty.id).await.unwrap().unwrap().size, 0);
    assert!(store.file_chunks(empty.id, 0, 10).await.unwrap().is_empty());
    // Bytes for a file that does not exist go nowhere.
    assert!(
        !store
            .append_file_chunk(FileId::generate(), 0, b"lost")
            .await
            .unwrap()
    );
}

async fn deleting_a_file_removes_it_complete_or_not(store: Arc<dyn Store>) {
    let now = t0();
    let complete = new_file("done.bin", now);
    store.create_file(&complete).await.unwrap();
    store
        .append_file_chunk(complete.id, 0, b"bytes")
        .await
        .unwrap();
    store
        .complete_file(complete.id, 5, "digest", now)
        .await
        .unwrap();
    let partial = new_file("partial.bin", now);
    store.create_file(&partial).await.unwrap();
    store
        .append_file_chunk(partial.id, 0, b"half")
        .await
        .unwrap();

    assert!(store.delete_file(complete.id).await.unwrap());
    assert_eq!(store.file(complete.id).await.unwrap(), None);
    assert!(
        store
            .file_chunks(complete.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.delete_file(complete.id).await.unwrap());

    assert!(store.delete_file(partial.id).await.unwrap());
    // The upload of a deleted file can neither go on nor complete.
    assert!(
        !store
            .append_file_chunk(partial.id, 4, b"more")
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_file(partial.id, 4, "digest", now)
            .await
            .unwrap()
    );
    assert!(!store.delete_file(FileId::generate()).await.unwrap());
}

async fn abandoned_uploads_are_removed_and_nothing_else(store: Arc<dyn Store>) {
    let long_ago = Utc::now() - chrono::Duration::days(2);
    let now = Utc::now();
    let abandoned = new_file("abandoned.csv", long_ago);
    store.create_file(&abandoned).await.unwrap();
    store
        .append_file_chunk(abandoned.id, 0, b"half")
        .await
        .unwrap();
    let old_but_complete = new_file("complete.csv", long_ago);
    store.create_file(&old_but_complete).await.unwrap();
    store
        .append_file_chunk(old_but_complete.id, 0, b"all")
        .await
        .unwrap();
    store
        .complete_file(old_but_complete.id, 3, "digest", long_ago)
        .await
        .unwrap();
    let in_progress = new_file("uploading.csv", now);
    store.create_file(&in_progress).await.unwrap();

    let cutoff = now - chrono::Duration::days(1);
    assert_eq!(store.remove_abandoned_uploads(cutoff).await.unwrap(), 1);
    // The abandoned upload is gone, chunks and all: it can neither go on nor complete.
    assert!(
        !store
            .append_file_chunk(abandoned.id, 4, b"more")
            .await
            .unwrap()
    );
    assert!(!store.delete_file(abandoned.id).await.unwrap());
    assert!(store.file(old_but_complete.id).await.unwrap().is_some());
    assert!(
        store
            .append_file_chunk(in_progress.id, 0, b"going on")
            .await
            .unwrap()
    );
    assert_eq!(store.remove_abandoned_uploads(cutoff).await.unwrap(), 0);
}
