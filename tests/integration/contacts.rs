//! Contact validation against a real authoritative DNS server on loopback
//! (`tests/peers/dns_server.py`, dnslib): a worker of the `import` queue judges each contact and
//! records it once, with the verdict and the reason the zone calls for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use celeritas::domain::{TaskId, TaskState};
use serde_json::{Value, json};
use tokio::process::Child;

use crate::support::{
    CoordinatorProcess, TestDatabase, WorkerProcess, free_port, log_dir, spec, start_peer,
    wait_until,
};

/// The zones: a domain with MX, a null MX, one with only an address, one with neither, an
/// international one, one whose server fails and one whose server never answers. Any other
/// name is NXDOMAIN.
fn zones() -> Value {
    json!({
        "mx.test": {"mx": [[10, "mx1.mx.test."], [5, "mx0.mx.test."]]},
        "nullmx.test": {"mx": [[0, "."]]},
        "aonly.test": {"a": ["127.0.0.1"]},
        "nomail.test": {},
        "xn--e1afmkfd.test": {"mx": [[10, "mx.xn--e1afmkfd.test."]]},
        "mx.xn--e1afmkfd.test": {"a": ["127.0.0.1"]},
        "servfail.test": {"behaviour": "servfail"},
        "silent.test": {"behaviour": "silent"},
        "mx0.mx.test": {"a": ["127.0.0.1"]},
        "mx1.mx.test": {"a": ["127.0.0.1"]},
        "catchall.test": {"mx": [[10, "mx.catchall.test."]]},
        "mx.catchall.test": {"a": ["127.0.0.1"]},
    })
}

/// The DNS server, on a free loopback port.
pub(crate) struct DnsServer {
    _process: Child,
    port: u16,
}

impl DnsServer {
    pub(crate) async fn start(logs: &Path) -> Self {
        let port = free_port();
        let zone_file = logs.join("zones.json");
        std::fs::write(&zone_file, zones().to_string()).unwrap();
        let process = start_peer(
            "dns_server.py",
            &[port.to_string(), zone_file.display().to_string()],
            logs,
            "dns-server.log",
        )
        .await;
        Self {
            _process: process,
            port,
        }
    }
}

/// A worker of the `import` queue asking only the test's DNS server, quickly giving up on it,
/// and probing mail exchangers on `smtp_port`.
pub(crate) fn validation_worker(
    coordinator: &CoordinatorProcess,
    logs: &Path,
    dns: &DnsServer,
    smtp_port: u16,
) -> WorkerProcess {
    validation_worker_named(coordinator, logs, dns, smtp_port, "validator")
}

/// `validation_worker`, named `name` (its log is `name.log`).
pub(crate) fn validation_worker_named(
    coordinator: &CoordinatorProcess,
    logs: &Path,
    dns: &DnsServer,
    smtp_port: u16,
    name: &str,
) -> WorkerProcess {
    let config = logs.join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = \"300ms\"\nattempts = 1\n\
             [validation]\nsmtp_port = {smtp_port}\nhelo_name = \"probe.test\"\n\
             mail_from = \"verify@probe.test\"\nprobe_timeout = \"10s\"\n\
             retry_unknown_after = \"1s\"\n",
            dns.port
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    WorkerProcess::start(
        coordinator,
        logs,
        name,
        &["-Q", "import", "-c", "2", "--config", &config],
    )
}

/// Every `contact` record of a tree: key → (status, data).
pub(crate) async fn contact_records(
    database: &TestDatabase,
    root: TaskId,
) -> HashMap<String, (String, Value)> {
    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT key, status, data FROM task_records WHERE root_id = $1 AND kind = 'contact'",
    )
    .bind(uuid::Uuid::parse_str(&root.to_string()).unwrap())
    .fetch_all(&database.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, status, data)| (key, (status, data)))
        .collect()
}

async fn run_batch(
    coordinator: &CoordinatorProcess,
    contacts: Value,
    validation: &str,
) -> (TaskId, Value) {
    let mut client = coordinator.client().await;
    let id = client
        .submit(&spec(
            "validate_contact_batch",
            json!({"list_id": 7, "validation": validation, "contacts": contacts}),
            None,
        ))
        .await
        .unwrap()
        .id;
    let task = client
        .task_waiting(id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Succeeded, "{:?}", task.error);
    (id, task.result.unwrap().to_value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_contact_is_recorded_once_with_the_verdict_its_domain_calls_for() {
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_validation");
    let dns = DnsServer::start(&logs).await;
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = validation_worker(&coordinator, &logs, &dns, free_port());

    let cases = [
        ("ivan@mx.test", "ivan@mx.test", "valid", "ok"),
        ("  Maria@AOnly.TEST ", "Maria@aonly.test", "valid", "ok"),
        ("user@пример.test", "user@пример.test", "valid", "ok"),
        ("info@mx.test", "info@mx.test", "risky", "role_account"),
        (
            "temp@mailinator.com",
            "temp@mailinator.com",
            "risky",
            "disposable",
        ),
        (
            "nobody@nullmx.test",
            "nobody@nullmx.test",
            "invalid",
            "null_mx",
        ),
        (
            "lost@nowhere.test",
            "lost@nowhere.test",
            "invalid",
            "no_such_domain",
        ),
        ("x@nomail.test", "x@nomail.test", "invalid", "no_mail_host"),
        (
            "a@servfail.test",
            "a@servfail.test",
            "unknown",
            "dns_unavailable",
        ),
        (
            "b@silent.test",
            "b@silent.test",
            "unknown",
            "dns_unavailable",
        ),
        (
            "not an address",
            "row 11: not an address",
            "invalid",
            "no_at_sign",
        ),
        (
            "a..b@mx.test",
            "row 12: a..b@mx.test",
            "invalid",
            "local_part",
        ),
    ];
    let mut contacts: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(index, (email, ..))| json!({"email": email, "row": index + 1, "fields": {"name": format!("n{index}")}}))
        .collect();
    contacts.push(json!({"email": "IVAN@MX.TEST ", "row": 13}));
    let (id, result) = run_batch(&coordinator, Value::Array(contacts), "dns").await;

    let records = contact_records(&database, id).await;
    assert_eq!(records.len(), cases.len() + 1, "{records:#?}");
    for (row, (email, key, status, reason)) in cases.iter().enumerate() {
        let (recorded, data) = records
            .get(*key)
            .unwrap_or_else(|| panic!("no record {key:?} for {email:?}: {records:#?}"));
        assert_eq!(recorded, status, "{email:?}: {data}");
        assert_eq!(data["reason"], *reason, "{email:?}: {data}");
        assert_eq!(data["row"], row + 1);
        assert_eq!(data["list_id"], 7);
        assert_eq!(data["fields"]["name"], format!("n{row}"));
        assert!(
            data["checks"]
                .as_array()
                .is_some_and(|checks| !checks.is_empty())
        );
    }
    // The same address again, differently cased and spaced: a duplicate, recorded under its row.
    let (status, _) = &records["IVAN@mx.test (row 13)"];
    assert_eq!(status, "duplicate");
    // MX hosts best first; the international domain looked up as punycode.
    let (_, ivan) = &records["ivan@mx.test"];
    assert_eq!(ivan["checks"][2]["detail"], "MX mx0.mx.test, mx1.mx.test");
    let (_, idn) = &records["user@пример.test"];
    assert_eq!(idn["checks"][0]["detail"], "user@xn--e1afmkfd.test");
    assert_eq!(result["total"], 13);
    assert_eq!(result["by_status"]["valid"], 3);
    assert_eq!(result["by_status"]["unknown"], 2);
    assert_eq!(result["by_status"]["duplicate"], 1);

    // `celeritas records` pages the same records: by status, and cut at a limit.
    let records_cli = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
            .args([
                "records",
                &id.to_string(),
                "--coordinator",
                &coordinator.url,
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let valid: Vec<Value> = records_cli(&["--kind", "contact", "--status", "valid", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut keys: Vec<&str> = valid
        .iter()
        .map(|record| record["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["Maria@aonly.test", "ivan@mx.test", "user@пример.test"]
    );
    assert!(valid.iter().all(|record| record["data"]["reason"] == "ok"));
    let table = records_cli(&["--limit", "2"]);
    assert_eq!(table.lines().count(), 3, "a header and two rows: {table}");
    assert!(table.starts_with("KIND"), "{table}");

    // Syntax-only validation asks no DNS: a domain that does not exist passes.
    let (syntax_only, _) = run_batch(
        &coordinator,
        json!([{"email": "lost@nowhere.test"}, {"email": "@nowhere.test"}]),
        "syntax",
    )
    .await;
    let records = contact_records(&database, syntax_only).await;
    assert_eq!(records["lost@nowhere.test"].0, "valid");
    assert_eq!(records["row 2: @nowhere.test"].0, "invalid");

    // A batch that is not one fails as bad arguments, naming what is wrong.
    let mut client = coordinator.client().await;
    let bad = client
        .submit(&spec(
            "validate_contact_batch",
            json!({"contacts": "nope"}),
            None,
        ))
        .await
        .unwrap()
        .id;
    wait_until("the bad batch to fail", Duration::from_secs(30), || async {
        coordinator.client().await.task(bad).await.unwrap().state == TaskState::Failed
    })
    .await;
    let failed = client.task(bad).await.unwrap();
    let (kind, message) = failed.error.unwrap();
    assert_eq!(kind, "invalid_args");
    assert!(
        message.contains("contacts") || message.contains("sequence"),
        "{message}"
    );
    assert!(worker.terminate().await.success());
}

/// `tests/peers/mailbox_server.py` on a free loopback port: the mail exchanger of every test
/// domain (their MX hosts all resolve to 127.0.0.1).
pub(crate) struct MailboxServer {
    _process: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl MailboxServer {
    pub(crate) async fn start(logs: &Path) -> Self {
        let port = free_port();
        let mailboxes = logs.join("mailboxes.json");
        std::fs::write(
            &mailboxes,
            json!({
                "users": [
                    "ivan@mx.test", "info@mx.test", "maria@aonly.test", "user@xn--e1afmkfd.test",
                ],
                "greylist": ["grey@mx.test"],
                "catch_all": ["catchall.test"],
            })
            .to_string(),
        )
        .unwrap();
        let log = logs.join("mailbox-commands.jsonl");
        let process = start_peer(
            "mailbox_server.py",
            &[
                port.to_string(),
                mailboxes.display().to_string(),
                log.display().to_string(),
            ],
            logs,
            "mailbox-server.log",
        )
        .await;
        Self {
            _process: process,
            port,
            log,
        }
    }

    /// Every command the server received, as (verb, argument).
    pub(crate) fn commands(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let command: Value = serde_json::from_str(line).unwrap();
                (
                    command["verb"].as_str().unwrap().to_owned(),
                    command["argument"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_probe_asks_the_mail_exchanger_and_never_sends() {
    let database = TestDatabase::create().await;
    let logs = log_dir("contact_probe");
    let dns = DnsServer::start(&logs).await;
    let mailboxes = MailboxServer::start(&logs).await;
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = validation_worker(&coordinator, &logs, &dns, mailboxes.port);

    let cases = [
        ("ivan@mx.test", "valid", "ok"),
        ("gone@mx.test", "invalid", "mailbox_unavailable"),
        ("grey@mx.test", "valid", "ok"),
        ("info@mx.test", "risky", "role_account"),
        ("maria@aonly.test", "valid", "ok"),
        ("anyone@catchall.test", "risky", "catch_all"),
        ("someone@catchall.test", "risky", "catch_all"),
        ("nobody@nullmx.test", "invalid", "null_mx"),
    ];
    let contacts: Vec<Value> = cases
        .iter()
        .map(|(email, ..)| json!({ "email": email }))
        .collect();
    let (id, _) = run_batch(&coordinator, Value::Array(contacts), "smtp").await;
    let records = contact_records(&database, id).await;
    assert_eq!(records.len(), cases.len(), "{records:#?}");
    for (email, status, reason) in cases {
        let (recorded, data) = &records[email];
        assert_eq!(recorded, status, "{email}: {data}");
        assert_eq!(data["reason"], reason, "{email}: {data}");
    }

    let commands = mailboxes.commands();
    assert!(
        commands.iter().all(|(verb, _)| verb != "DATA"),
        "a probe sent DATA: {commands:?}"
    );
    let rcpts = |address: &str| {
        commands
            .iter()
            .filter(|(verb, argument)| verb == "RCPT" && argument == address)
            .count()
    };
    // The greylisted address was asked twice: 451, then accepted on the retry.
    assert_eq!(rcpts("grey@mx.test"), 2, "{commands:?}");
    // Every test domain's exchanger is this one server: the retry's session, at least, went
    // over a connection an earlier session left open (four sessions, three domains).
    let greetings = commands.iter().filter(|(verb, _)| verb == "EHLO").count();
    assert!(
        (1..=3).contains(&greetings),
        "{greetings} connections: {commands:?}"
    );
    assert_eq!(rcpts("ivan@mx.test"), 1);
    // A catch-all domain's mailboxes are not asked: the random address answered for them.
    assert_eq!(rcpts("anyone@catchall.test"), 0);
    let random_probes = commands
        .iter()
        .filter(|(verb, argument)| verb == "RCPT" && argument.starts_with("celeritas-probe-"))
        .count();
    assert!(
        random_probes >= 3,
        "one catch-all question per domain: {commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|(verb, argument)| verb == "MAIL" && argument == "verify@probe.test")
    );
    // Each session ends its transaction (RSET, to be used again) or the session (QUIT).
    let ended = commands
        .iter()
        .filter(|(verb, _)| verb == "RSET" || verb == "QUIT")
        .count();
    let mails = commands.iter().filter(|(verb, _)| verb == "MAIL").count();
    assert_eq!(ended, mails, "{commands:?}");
    assert!(worker.terminate().await.success());
}
