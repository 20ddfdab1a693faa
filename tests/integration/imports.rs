//! `import_contacts_async` end to end: files written by real tools (Python's csv module in
//! Windows-1251, KOI8-R, UTF-8 with a BOM and UTF-16; an XLSX from openpyxl) uploaded through
//! the FileService, read by a worker of the `import` queue and validated against the real DNS
//! server and mail exchanger of `contacts.rs`; files that hold no contacts; a million rows; a
//! killed worker.

use std::path::Path;
use std::time::Duration;

use celeritas::domain::{Aggregate, TaskId, TaskState, TreeEventKind};
use celeritas::grpc::CoordinatorClient;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::contacts::{
    DnsServer, MailboxServer, contact_records, validation_worker, validation_worker_named,
};
use crate::support::{
    CoordinatorLaunch, CoordinatorProcess, TestDatabase, WorkerProcess, free_port, log_dir, spec,
    start_peer, wait_until,
};

/// Uploads `path` and submits its import; answers the import's id.
pub(crate) async fn import(client: &mut CoordinatorClient, path: &Path, args: Value) -> TaskId {
    let file = client.upload_path(path, None, None).await.unwrap();
    let mut args = args;
    args["file"] = json!(file.id.to_string());
    client
        .submit(&spec("import_contacts_async", args, None))
        .await
        .unwrap()
        .id
}

/// The large imports take a core each for minutes: they run one at a time.
static LARGE_IMPORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Follows a tree to its end: the root's final state and the last aggregate.
pub(crate) async fn finished_tree(
    client: &mut CoordinatorClient,
    id: TaskId,
) -> (TaskState, Aggregate) {
    finished_tree_within(client, id, Duration::from_secs(300)).await
}

/// `finished_tree`, waiting up to `limit`.
async fn finished_tree_within(
    client: &mut CoordinatorClient,
    id: TaskId,
    limit: Duration,
) -> (TaskState, Aggregate) {
    let mut events = Box::pin(client.stream_progress(id, None).await.unwrap());
    let followed = tokio::time::timeout(limit, async {
        let mut last = None;
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if let TreeEventKind::TreeFinished { root_state } = event.kind {
                return (root_state, event.aggregate);
            }
            last = Some(event.aggregate);
        }
        panic!("the stream of {id} ended before its tree finished: {last:?}");
    });
    followed
        .await
        .expect("the import finishes within 5 minutes")
}

/// The rows every file holds, and for each the record it must end as: (key, status, reason).
/// Row numbers count the header as row 1.
fn table() -> (Value, Vec<(&'static str, &'static str, &'static str)>) {
    let rows = json!([
        ["Иван Петров", "ivan@mx.test", "Москва"],
        ["Петров; \"Иван\"", "  Maria@AOnly.TEST ", "Санкт-Петербург"],
        ["Дубль", "IVAN@mx.test", "Москва"],
        ["Инфо", "info@mx.test", ""],
        ["Пусто", "nobody@nullmx.test", "Казань"],
        ["Нет", "lost@nowhere.test", "Омск"],
        ["", "", ""],
        ["Лишнее", "extra@mx.test", "Тверь", "лишняя ячейка"],
        ["Ошибка", "not an address", "Уфа"],
        ["Юникод", "user@пример.test", "Сочи"],
        ["Сбой", "a@servfail.test", "Тула"],
        ["Нет ящика", "gone@mx.test", "Псков"],
        ["Любой", "anyone@catchall.test", "Тверь"],
        ["Серый", "grey@mx.test", "Вологда"],
    ]);
    let expected = vec![
        ("ivan@mx.test", "valid", "ok"),
        ("Maria@aonly.test", "valid", "ok"),
        ("IVAN@mx.test (row 4)", "duplicate", "duplicate"),
        ("info@mx.test", "risky", "role_account"),
        ("nobody@nullmx.test", "invalid", "null_mx"),
        ("lost@nowhere.test", "invalid", "no_such_domain"),
        // Row 9 has a cell more than the header: malformed in a CSV, an extra column in a
        // workbook (checked per file below).
        ("row 10: not an address", "invalid", "no_at_sign"),
        ("user@пример.test", "valid", "ok"),
        ("a@servfail.test", "unknown", "dns_unavailable"),
        // What the mail exchanger says: no such mailbox, a domain that takes anything, and a
        // mailbox behind greylisting, valid on the batch's later retry.
        ("gone@mx.test", "invalid", "mailbox_unavailable"),
        ("anyone@catchall.test", "risky", "catch_all"),
        ("grey@mx.test", "valid", "ok"),
    ];
    (
        json!({"header": ["Имя", "Электронная почта", "Город"], "rows": rows}),
        expected,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_saved_by_real_tools_import_as_one_record_per_row() {
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_import");
    let dns = DnsServer::start(&logs).await;
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let mailboxes = MailboxServer::start(&logs).await;
    let worker = validation_worker(&coordinator, &logs, &dns, mailboxes.port);
    let (table, expected) = table();
    let table_file = logs.join("table.json");
    std::fs::write(&table_file, table.to_string()).unwrap();
    let files = logs.join("files");
    std::fs::create_dir_all(&files).unwrap();
    drop(
        start_peer(
            "write_contacts.py",
            &[
                table_file.display().to_string(),
                files.display().to_string(),
            ],
            &logs,
            "write-contacts.log",
        )
        .await,
    );

    let mut client = coordinator.client().await;
    // The cp1251 file names its columns by a mapping; the others are found by their headers.
    let mapping = json!({"email": "Электронная почта", "name": "Имя", "city": "Город"});
    let mut imports = Vec::new();
    for (name, csv) in [
        ("cp1251.csv", true),
        ("koi8r.csv", true),
        ("bom.csv", true),
        ("utf16.csv", true),
        ("contacts.xlsx", false),
    ] {
        let mut args = json!({"list_id": name, "validation": "smtp", "batch_size": 3});
        if name == "cp1251.csv" {
            args["mapping"] = mapping.clone();
        }
        let id = import(&mut client, &files.join(name), args).await;
        imports.push((name, csv, id));
    }
    for (name, csv, id) in imports {
        let (state, aggregate) = finished_tree(&mut client, id).await;
        assert_eq!(state, TaskState::Succeeded, "{name}: {aggregate:?}");
        let result = client.task(id).await.unwrap().result.unwrap().to_value();
        let records = contact_records(&database, id).await;
        for (key, status, reason) in &expected {
            let (recorded, data) = records
                .get(*key)
                .unwrap_or_else(|| panic!("{name}: no record {key:?}: {records:#?}"));
            assert_eq!(recorded, status, "{name} {key}: {data}");
            assert_eq!(data["reason"], *reason, "{name} {key}: {data}");
            assert_eq!(data["list_id"], name);
        }
        let extra = if csv {
            let (status, data) = &records["row 9"];
            assert_eq!(status, "invalid", "{name}");
            assert_eq!(data["reason"], "malformed_row");
            let detail = data["checks"][0]["detail"].as_str().unwrap();
            assert!(detail.contains("row 9 has 4 cells"), "{name}: {detail}");
            &records["row 9"]
        } else {
            // A mailbox the exchanger does not know.
            let (status, _) = &records["extra@mx.test"];
            assert_eq!(status, "invalid", "{name}");
            &records["extra@mx.test"]
        };
        assert!(extra.1["row"] == 9);
        // Every row but the blank one is exactly one record.
        assert_eq!(records.len(), expected.len() + 1, "{name}: {records:#?}");
        // The quoted cell with the delimiter and quotes in it came through whole, as the
        // fields of its row.
        let (_, maria) = &records["Maria@aonly.test"];
        let fields = &maria["fields"];
        if name == "cp1251.csv" {
            assert_eq!(
                fields,
                &json!({"name": "Петров; \"Иван\"", "city": "Санкт-Петербург"})
            );
        } else {
            assert_eq!(fields["Имя"], "Петров; \"Иван\"", "{name}: {maria}");
            assert_eq!(fields["Город"], "Санкт-Петербург");
        }
        assert_eq!(result["duplicates"], 1, "{name}: {result}");
        assert_eq!(result["malformed"], u64::from(csv), "{name}: {result}");
        // The progress is the import's rows: all of them done, and the verdicts counted.
        assert_eq!(aggregate.progress.total, 13, "{name}: {aggregate:?}");
        assert_eq!(aggregate.progress.done, 13, "{name}: {aggregate:?}");
        assert_eq!(aggregate.records_by_status["duplicate"], 1);
        assert_eq!(aggregate.records_by_status["unknown"], 1);
        assert!(
            aggregate.tasks_total >= 4,
            "{name}: children of three contacts each"
        );
    }
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_hold_no_contacts_fail_the_import_before_any_child_runs() {
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_import_refusals");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "importer", &["-Q", "import"]);
    let mut client = coordinator.client().await;
    let write = |name: &str, bytes: &[u8]| {
        let path = logs.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // What Excel writes for a workbook with a password: an OLE container whose directory names
    // the encrypted package (in UTF-16).
    let mut locked = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    locked.extend(std::iter::repeat_n(0u8, 1024));
    locked.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&[7; 200]);
    let cases: Vec<(std::path::PathBuf, Value, &str)> = vec![
        (write("empty.csv", b""), json!({}), "the file is empty"),
        (
            write("binary.bin", &[0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 9, 0x7f, 0, 3]),
            json!({}),
            "neither CSV nor an XLSX",
        ),
        (
            write("no-email.csv", "Имя;Город\nИван;Москва\n".as_bytes()),
            json!({}),
            "no email column",
        ),
        (
            write("broken.xlsx", &zip),
            json!({}),
            "not an XLSX workbook",
        ),
        (
            write("locked.xlsx", &locked),
            json!({}),
            "the workbook is password-protected",
        ),
        (
            write("names.csv", b"email,name\na@b.ru,A\n"),
            json!({"mapping": {"name": "Full name"}}),
            "mapping.name: no column \"Full name\"",
        ),
        (
            write("sheet.csv", b"email\na@b.ru\n"),
            json!({"format": "xlsx"}),
            "not an XLSX workbook",
        ),
    ];
    let mut imports = Vec::new();
    for (path, extra, message) in cases {
        let mut args = json!({"list_id": 1});
        for (key, value) in extra.as_object().unwrap() {
            args[key] = value.clone();
        }
        imports.push((import(&mut client, &path, args).await, message));
    }
    // A file that was never uploaded.
    let missing = client
        .submit(&spec(
            "import_contacts_async",
            json!({"list_id": 1, "file": "0190f5d4-1b6e-7cc1-8d3a-5b1c2d3e4f50"}),
            None,
        ))
        .await
        .unwrap()
        .id;
    imports.push((missing, "no file 0190f5d4-1b6e-7cc1-8d3a-5b1c2d3e4f50"));
    for (id, message) in imports {
        let (state, aggregate) = finished_tree(&mut client, id).await;
        assert_eq!(state, TaskState::Failed);
        let (kind, error) = client.task(id).await.unwrap().error.unwrap();
        assert_eq!(kind, "invalid_args", "{error}");
        assert!(error.contains(message), "{error:?} should say {message:?}");
        assert_eq!(aggregate.tasks_total, 1, "no child was submitted: {error}");
        assert_eq!(aggregate.records_total(), 0);
    }
    assert!(worker.terminate().await.success());
}

/// A CSV of `rows` distinct addresses over a few domains, written as fast as the disk takes it.
fn write_big_csv(path: &Path, rows: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "email;name;city").unwrap();
    for row in 0..rows {
        writeln!(out, "user{row}@example{}.ru;Имя {row};Город", row % 97).unwrap();
    }
    out.flush().unwrap();
}

/// Each row number of an import's contact records, and how often it appears.
async fn rows_recorded(database: &TestDatabase, root: TaskId) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT (data->>'row')) FROM task_records \
         WHERE root_id = $1 AND kind = 'contact'",
    )
    .bind(uuid::Uuid::parse_str(&root.to_string()).unwrap())
    .fetch_one(&database.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_import_with_the_workers_memory_bounded() {
    const ROWS: usize = 1_000_000;
    let _alone = LARGE_IMPORTS.lock().await;
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_import_million");
    let csv = logs.join("million.csv");
    write_big_csv(&csv, ROWS);
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "importer",
        &["-Q", "import", "-c", "2"],
    );
    let mut client = coordinator.client().await;
    let id = import(
        &mut client,
        &csv,
        json!({"list_id": "million", "validation": "syntax", "batch_size": 10_000}),
    )
    .await;
    let (state, aggregate) = finished_tree_within(&mut client, id, Duration::from_secs(900)).await;
    assert_eq!(state, TaskState::Succeeded, "{aggregate:?}");
    let peak = celeritas::bench::peak_resident_bytes(worker.pid().unwrap()).unwrap();
    eprintln!(
        "imported {ROWS} rows; the worker's peak resident memory was {} MiB",
        peak / (1024 * 1024)
    );
    assert_eq!(
        rows_recorded(&database, id).await,
        (ROWS as i64, ROWS as i64)
    );
    assert_eq!(
        aggregate.records_by_status.get("valid"),
        Some(&(ROWS as u64))
    );
    assert_eq!(aggregate.progress.done, ROWS as u64);
    // The rows are never all in memory: what grows is 16 bytes of digest and a row number per
    // address (about 50 MB for a million with the map's overhead), beside the batches in flight.
    assert!(
        peak < 200 * 1024 * 1024,
        "the worker peaked at {peak} bytes importing {ROWS} rows"
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_import_worker_mid_run_still_gives_every_row_one_record() {
    const ROWS: usize = 100_000;
    let _alone = LARGE_IMPORTS.lock().await;
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_import_killed");
    let csv = logs.join("contacts.csv");
    write_big_csv(&csv, ROWS);
    let dns = DnsServer::start(&logs).await;
    let coordinator = CoordinatorLaunch::new(&database.url, &logs)
        .env("CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL", "500ms")
        .env("CELERITAS_COORDINATOR__LEASE_TTL", "3s")
        .env("CELERITAS_COORDINATOR__LEASE_GRACE", "1s")
        .env("CELERITAS_COORDINATOR__REAP_INTERVAL", "200ms")
        .env("CELERITAS_TASK_DEFAULTS__RETRY_BACKOFF", "50ms")
        .start()
        .await;
    let doomed = validation_worker_named(&coordinator, &logs, &dns, free_port(), "doomed");
    let mut client = coordinator.client().await;
    let id = import(
        &mut client,
        &csv,
        json!({"list_id": 1, "validation": "syntax", "batch_size": 100}),
    )
    .await;
    // Killed while the import is still fanning out: some children are in, the root runs.
    wait_until(
        "the import to have children",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            async move {
                let children = client
                    .list_tasks(&celeritas::domain::TaskQuery {
                        root: Some(id),
                        limit: 20,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                children.len() >= 20
            }
        },
    )
    .await;
    let root = client.task(id).await.unwrap();
    assert_eq!(root.state, TaskState::Running, "killed mid-run");
    doomed.kill().await;
    let survivor = validation_worker_named(&coordinator, &logs, &dns, free_port(), "survivor");
    let (state, aggregate) = finished_tree_within(&mut client, id, Duration::from_secs(900)).await;
    assert_eq!(state, TaskState::Succeeded, "{aggregate:?}");
    let root = client.task(id).await.unwrap();
    assert!(root.attempt >= 2, "the import ran again: {root:?}");
    assert_eq!(
        rows_recorded(&database, id).await,
        (ROWS as i64, ROWS as i64)
    );
    assert_eq!(
        aggregate.tasks_total,
        1 + (ROWS as u64).div_ceil(100),
        "each batch submitted once: {:?}",
        aggregate.tasks_by_state
    );
    assert!(survivor.terminate().await.success());
}
