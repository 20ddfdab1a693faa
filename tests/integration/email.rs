//! The email tasks against a real SMTP server on loopback: aiosmtpd, scripted to refuse some
//! recipients for good (550) and others at first (451). Messages are read back with Python's
//! email package and the DKIM signature checked with dkimpy (`tests/peers/`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use celeritas::grpc::pb;
use celeritas::grpc::pb::task_service_client::TaskServiceClient;
use serde_json::{Value, json};
use tokio::process::Child;
use tonic::transport::Channel;

use crate::health::python;
use crate::progress::{read_events, submit, tasks_client};
use crate::support::{
    CoordinatorProcess, TestDatabase, WorkerProcess, free_port, log_dir, start_peer, wait_until,
};

fn peer(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script)
}

/// One message as the server received it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Received {
    pub(crate) to: Vec<String>,
    data: String,
    /// When its DATA was accepted, in seconds since the epoch.
    pub(crate) at: f64,
}

/// `tests/peers/smtp_server.py` on a free loopback port.
pub(crate) struct SmtpServer {
    _process: Child,
    port: u16,
    log: PathBuf,
}

impl SmtpServer {
    pub(crate) async fn start(logs: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let log = logs.join("smtp-received.jsonl");
        let mut arguments = vec![port.to_string(), log.display().to_string()];
        arguments.extend(extra.iter().map(|argument| (*argument).to_owned()));
        let process = start_peer("smtp_server.py", &arguments, logs, "smtp-server.log").await;
        Self {
            _process: process,
            port,
            log,
        }
    }

    pub(crate) fn messages(&self) -> Vec<Received> {
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return Vec::new();
        };
        // The server may be writing a line right now: only whole lines count.
        let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        whole
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line per message"))
            .collect()
    }

    /// How many messages each recipient got.
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for message in self.messages() {
            for to in message.to {
                *counts.entry(to.to_lowercase()).or_default() += 1;
            }
        }
        counts
    }
}

/// Writes the `celeritas.toml` that processes started in `logs` read: one relay, the server.
pub(crate) fn configure(logs: &Path, server: &SmtpServer, extra: &str) {
    std::fs::write(
        logs.join("celeritas.toml"),
        format!(
            "[smtp]\nretry_deferred_after = \"1s\"\n\n[smtp.relays.default]\nhost = \"127.0.0.1\"\nport = {}\nmax_connections = 4\n\n{extra}",
            server.port
        ),
    )
    .unwrap();
}

fn content(campaign: &str) -> Value {
    json!({
        "campaign_id": campaign,
        "from": "News <news@example.com>",
        "reply_to": "support@example.com",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}, this is {{ campaign_id }}.",
        "html": "<p>Hello {{ name }}</p>",
        "headers": {"X-Mailer": "celeritas"},
        "unsubscribe_url": "https://example.com/unsubscribe?c={{ campaign_id }}&e={{ email }}",
    })
}

pub(crate) fn campaign(campaign: &str, recipients: Vec<Value>, batch_size: usize) -> Value {
    let mut args = content(campaign);
    args["recipients"] = Value::Array(recipients);
    args["batch_size"] = json!(batch_size);
    args
}

pub(crate) fn recipient(email: &str, name: &str) -> Value {
    json!({"email": email, "vars": {"name": name}})
}

/// Follows the task's tree to its end and returns the last event.
async fn finish(
    client: &mut TaskServiceClient<Channel>,
    task_id: &str,
) -> pb::StreamProgressResponse {
    let events = read_events(client, task_id, None, None).await;
    let last = events.last().cloned().expect("events");
    assert!(
        matches!(
            last.event,
            Some(pb::stream_progress_response::Event::TreeFinished(_))
        ),
        "the stream ends with the tree's end: {last:?}"
    );
    last
}

async fn task(client: &mut TaskServiceClient<Channel>, task_id: &str) -> pb::Task {
    client
        .get_task(pb::GetTaskRequest {
            task_id: task_id.to_owned(),
            wait: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

/// The delivery records of a tree: status and data by address.
async fn deliveries(database: &TestDatabase, root_id: &str) -> HashMap<String, (String, Value)> {
    let rows: Vec<(String, String, Option<Value>)> = sqlx::query_as(
        "SELECT key, status, data FROM task_records WHERE root_id = $1::uuid AND kind = 'delivery'",
    )
    .bind(root_id)
    .fetch_all(&database.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, status, data)| (key, (status, data.unwrap_or(Value::Null))))
        .collect()
}

#[tokio::test]
async fn a_campaign_reaches_every_deliverable_recipient_once() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_1000");
    let server = SmtpServer::start(&logs, &[]).await;
    configure(&logs, &server, "");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "worker",
        &["-Q", "campaigns,email", "-c", "4"],
    );

    // 1,000 recipients: every 50th refused for good, every 40th deferred once, one with an
    // address that is not one, and one listed twice.
    let mut recipients = Vec::new();
    let mut deliverable = HashMap::new();
    let mut rejected = HashSet::new();
    let mut deferred = HashSet::new();
    for i in 0..999 {
        let name = format!("Person {i}");
        let email = if i % 50 == 7 {
            let email = format!("reject-{i}@example.org");
            rejected.insert(email.clone());
            email
        } else if i % 40 == 3 {
            let email = format!("defer-{i}@example.org");
            deferred.insert(email.clone());
            deliverable.insert(email.clone(), name.clone());
            email
        } else {
            let email = format!("person-{i}@example.org");
            deliverable.insert(email.clone(), name.clone());
            email
        };
        recipients.push(recipient(&email, &name));
    }
    recipients.push(recipient("person-1@EXAMPLE.org", "Person 1 again"));
    recipients.push(recipient("not-an-address", "Nobody"));

    let mut client = tasks_client(&coordinator).await;
    let root = submit(
        &mut client,
        "send_campaign",
        campaign("c-1000", recipients, 100),
    )
    .await;
    let last = finish(&mut client, &root).await;
    let root_task = task(&mut client, &root).await;
    assert_eq!(root_task.state(), pb::TaskState::Succeeded);
    let result: Value = serde_json::from_str(&root_task.result_json).unwrap();
    assert_eq!(result["recipients"], 1000);
    assert_eq!(result["batches"], 10);

    // The stream's last event has the campaign's counts: total, sent, failed, none deferred.
    let aggregate = last.aggregate.unwrap();
    let progress = aggregate.progress.unwrap();
    assert_eq!((progress.done, progress.total), (1000, 1000));
    assert_eq!(
        aggregate.records_by_status.get("delivered").copied(),
        Some(deliverable.len() as u64)
    );
    assert_eq!(
        aggregate.records_by_status.get("failed").copied(),
        Some(rejected.len() as u64 + 1)
    );
    assert_eq!(aggregate.records_by_status.get("deferred"), None);
    assert_eq!(aggregate.tasks_by_state.get("succeeded"), Some(&11));

    // Every deliverable recipient got exactly one message, with its own name in it.
    let counts = server.counts();
    for email in deliverable.keys() {
        assert_eq!(counts.get(email), Some(&1), "{email} gets one message");
    }
    assert_eq!(counts.len(), deliverable.len(), "nobody else got mail");
    for message in server.messages() {
        let name = &deliverable[&message.to[0]];
        assert!(
            message.data.contains(&format!("Subject: Hi {name}\r\n")),
            "{}",
            message.data
        );
        assert!(
            message
                .data
                .contains(&format!("Hello {name}, this is c-1000."))
        );
    }

    // One record per recipient, with the server's reply.
    let records = deliveries(&database, &root).await;
    assert_eq!(records.len(), 1000);
    for email in &rejected {
        let (status, data) = &records[email];
        assert_eq!(status, "failed");
        assert!(data["smtp"].as_str().unwrap().contains("550"), "{data}");
    }
    for email in &deferred {
        let (status, data) = &records[email];
        assert_eq!(status, "delivered");
        assert!(data["attempt"].as_u64().unwrap() >= 2, "{email}: {data}");
    }
    let (status, data) = &records["not-an-address"];
    assert_eq!(status, "failed");
    assert!(
        data["error"].as_str().unwrap().contains("not an address"),
        "{data}"
    );
}

/// A relay's reply is foreign text: one with a NUL byte (which Postgres cannot store) is made
/// storable, so the recipient's record is written, and the batch's result never commits
/// without it.
#[tokio::test]
async fn a_reply_with_a_nul_byte_is_recorded_not_lost() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_nul_reply");
    let server = SmtpServer::start(&logs, &[]).await;
    configure(&logs, &server, "");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "worker",
        &["-Q", "campaigns,email", "-c", "2"],
    );
    let mut recipients: Vec<Value> = (0..19)
        .map(|i| recipient(&format!("person-{i}@example.org"), &format!("Person {i}")))
        .collect();
    recipients.insert(7, recipient("nul-7@example.org", "Nul"));
    let mut client = tasks_client(&coordinator).await;
    let root = submit(
        &mut client,
        "send_campaign",
        campaign("c-nul", recipients, 10),
    )
    .await;
    finish(&mut client, &root).await;
    let records = deliveries(&database, &root).await;
    assert_eq!(records.len(), 20, "{records:?}");
    let (status, data) = &records["nul-7@example.org"];
    assert_eq!(status, "failed");
    let reply = data["smtp"].as_str().unwrap();
    assert!(
        reply.contains("550") && reply.contains("no\u{fffd}such user"),
        "{data}"
    );
    assert_eq!(server.counts().len(), 19);
}

#[tokio::test]
async fn a_killed_worker_never_mails_a_recorded_recipient_twice() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_kill");
    // Slow enough that the kill lands mid-campaign.
    let server = SmtpServer::start(&logs, &["--data-delay", "0.02"]).await;
    configure(&logs, &server, "");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let first = WorkerProcess::start(
        &coordinator,
        &logs,
        "first",
        &["-Q", "campaigns,email", "-c", "2"],
    );
    let recipients: Vec<Value> = (0..400)
        .map(|i| recipient(&format!("person-{i}@example.org"), &format!("Person {i}")))
        .collect();
    let mut client = tasks_client(&coordinator).await;
    let root = submit(
        &mut client,
        "send_campaign",
        campaign("c-kill", recipients, 50),
    )
    .await;
    wait_until("100 messages sent", Duration::from_secs(60), || async {
        server.messages().len() >= 100
    })
    .await;
    first.kill().await;
    let recorded_before: Vec<String> = deliveries(&database, &root)
        .await
        .into_iter()
        .filter(|(_, (status, _))| status == "delivered")
        .map(|(email, _)| email)
        .collect();
    assert!(!recorded_before.is_empty());
    assert!(recorded_before.len() < 400, "the kill came mid-campaign");

    let _second = WorkerProcess::start(
        &coordinator,
        &logs,
        "second",
        &["-Q", "campaigns,email", "-c", "2"],
    );
    let last = finish(&mut client, &root).await;
    let aggregate = last.aggregate.unwrap();
    assert_eq!(aggregate.records_by_status.get("delivered"), Some(&400));

    let counts = server.counts();
    for email in &recorded_before {
        assert_eq!(
            counts.get(email),
            Some(&1),
            "{email} was recorded as delivered before the kill"
        );
    }
    for i in 0..400 {
        assert!(counts.contains_key(&format!("person-{i}@example.org")));
    }
}

/// Runs `tests/peers/inspect_message.py` on one raw message.
fn inspect(logs: &Path, raw: &str, dkim_txt: Option<&str>) -> Value {
    let path = logs.join("message.eml");
    std::fs::write(&path, raw).unwrap();
    let mut command = std::process::Command::new(python());
    command.arg(peer("inspect_message.py")).arg(&path);
    if let Some(txt) = dkim_txt {
        command.args(["--dkim-txt", txt]);
    }
    let output = command.output().expect("run inspect_message.py");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn openssl(logs: &Path, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(logs)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_message_is_signed_and_reads_cleanly_with_one_click_unsubscribe() {
    use base64::Engine;
    let database = TestDatabase::create().await;
    let logs = log_dir("email_dkim");
    let server = SmtpServer::start(&logs, &[]).await;
    openssl(
        &logs,
        &["genrsa", "-traditional", "-out", "dkim.pem", "2048"],
    );
    let public = openssl(
        &logs,
        &["rsa", "-in", "dkim.pem", "-pubout", "-outform", "DER"],
    );
    let txt = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(public)
    );
    configure(
        &logs,
        &server,
        "[smtp.dkim]\ndomain = \"example.com\"\nselector = \"news\"\nkey_file = \"dkim.pem\"\n",
    );
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "worker", &["-Q", "email"]);

    let mut args = content("c-7");
    args["to"] = json!("anna@example.org");
    args["vars"] = json!({"name": "Анна"});
    let mut client = tasks_client(&coordinator).await;
    let id = submit(&mut client, "send_single_email", args).await;
    let done = task(&mut client, &id).await;
    assert_eq!(done.state(), pb::TaskState::Succeeded, "{done:?}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let raw = &messages[0].data;
    let message = inspect(&logs, raw, Some(&txt));
    assert_eq!(message["dkim"], true, "{raw}");
    assert_eq!(message["defects"], json!([]), "{raw}");
    assert_eq!(message["subject"], "Hi Анна");
    assert_eq!(message["to"], "anna@example.org");
    assert_eq!(message["from"], "News <news@example.com>");
    assert_eq!(message["campaign"], "c-7");
    assert_eq!(
        message["list_unsubscribe"],
        "<https://example.com/unsubscribe?c=c-7&e=anna@example.org>"
    );
    assert_eq!(
        message["list_unsubscribe_post"],
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(message["content_type"], "multipart/alternative");
    assert_eq!(
        message["text"].as_str().unwrap().trim_end(),
        "Hello Анна, this is c-7."
    );
    assert_eq!(
        message["html"].as_str().unwrap().trim_end(),
        "<p>Hello Анна</p>"
    );
    assert!(
        message["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@example.com>")
    );

    // The verifier does say no: a changed subject breaks the signature.
    let tampered = raw.replacen("Subject: ", "Subject: Re: ", 1);
    assert_eq!(inspect(&logs, &tampered, Some(&txt))["dkim"], false);
}

#[tokio::test]
async fn bad_campaigns_are_refused_before_anything_is_sent() {
    let database = TestDatabase::create().await;
    let logs = log_dir("email_bad_input");
    let server = SmtpServer::start(&logs, &[]).await;
    configure(&logs, &server, "");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "worker", &["-Q", "campaigns,email"]);
    let good = || campaign("c-bad", vec![recipient("a@example.org", "A")], 10);
    let mut cases = Vec::new();
    let mut args = good();
    args["from"] = json!("News <news@example.com>\r\nBcc: all@example.com");
    cases.push((args, "from"));
    let mut args = good();
    args["headers"] = json!({"X-Tag": "a\nb"});
    cases.push((args, "headers.X-Tag"));
    let mut args = good();
    args["from"] = json!("not an address");
    cases.push((args, "from"));
    let mut args = good();
    args["subject"] = json!("Hi {{ name");
    cases.push((args, "subject"));
    let mut args = good();
    args["recipients"] =
        json!([{"email": "a@example.org", "vars": {"name": "A"}}, {"email": "b@example.org"}]);
    cases.push((args, "recipients[1].vars"));
    let mut args = good();
    args["relay"] = json!("elsewhere");
    cases.push((args, "relay"));
    let mut args = good();
    args["recipients"] = json!([]);
    cases.push((args, "recipients"));
    let mut args = good();
    args["batch_size"] = json!(0);
    cases.push((args, "batch_size"));

    let mut client = tasks_client(&coordinator).await;
    for (args, field) in cases {
        let id = submit(&mut client, "send_campaign", args).await;
        let done = task(&mut client, &id).await;
        assert_eq!(done.state(), pb::TaskState::Failed, "{field}: {done:?}");
        let error = done.error.unwrap();
        assert_eq!(error.kind, "invalid_args");
        assert!(
            error.message.starts_with(&format!("{field}:")),
            "{field}: {}",
            error.message
        );
    }
    assert!(server.messages().is_empty(), "nothing was sent");
}

/// What a finished task answered, as JSON.
async fn result_of(client: &mut TaskServiceClient<Channel>, task_id: &str) -> Value {
    let task = task(client, task_id).await;
    assert_eq!(
        task.state,
        pb::TaskState::Succeeded as i32,
        "{task_id} succeeded: {task:?}"
    );
    serde_json::from_str(&task.result_json).unwrap()
}

/// The records of one kind a task wrote: status by key.
async fn records_of(database: &TestDatabase, task_id: &str, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT key, status FROM task_records WHERE task_id = $1::uuid AND kind = $2 ORDER BY key",
    )
    .bind(task_id)
    .bind(kind)
    .fetch_all(&database.pool)
    .await
    .unwrap()
}

/// How many connections a worker's "closed N idle SMTP connection(s) of M relay(s)" says.
fn closed_connections(detail: &str) -> usize {
    detail
        .strip_prefix("closed ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("not a cleanup's detail: {detail:?}"))
}

fn quits(server: &SmtpServer) -> usize {
    let path = format!("{}.quits", server.log.display());
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[tokio::test]
async fn the_periodic_upkeep_flags_requeues_stalled_batches_and_closes_idle_connections() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_upkeep");
    // A recipient whose first RCPT hangs for ten minutes: its batch stops moving.
    let server = SmtpServer::start(&logs, &[]).await;
    configure(
        &logs,
        &server,
        "[campaigns]\nstall_after = \"2s\"\nstuck_policy = \"requeue\"\n",
    );
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "worker",
        &["-Q", "campaigns,email,default", "-c", "4"],
    );
    let mut client = tasks_client(&coordinator).await;

    // cleanup_smtp_connections: the pooled connections of a finished campaign stay open until the
    // control message closes them (with a QUIT each).
    let warm = submit(
        &mut client,
        "send_campaign",
        campaign(
            "c-warm",
            vec![
                recipient("w1@example.org", "W1"),
                recipient("w2@example.org", "W2"),
            ],
            1,
        ),
    )
    .await;
    // The tree's end comes after every batch ended, and a batch hands its connection back to
    // the pool before it ends: the connections are idle in the pool now. That they stay open
    // until the cleanup is shown by the cleanup finding them there, not by waiting a while.
    finish(&mut client, &warm).await;
    assert_eq!(quits(&server), 0, "pooled connections stay open");
    let cleanup = submit(&mut client, "cleanup_smtp_connections", json!({})).await;
    let answer = result_of(&mut client, &cleanup).await;
    assert_eq!(answer["queue"], "email");
    let workers = answer["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{answer}");
    assert_eq!(workers[0]["answered"], true, "{answer}");
    let detail = workers[0]["detail"].as_str().unwrap();
    assert!(detail.contains("1 relay"), "{answer}");
    let closed = closed_connections(detail);
    assert!(
        closed >= 1,
        "the warm-up's connections were still open in the pool: {answer}"
    );
    wait_until(
        "the idle connections said QUIT",
        Duration::from_secs(10),
        || async { quits(&server) >= closed },
    )
    .await;
    assert_eq!(
        quits(&server),
        closed,
        "one QUIT for each connection the cleanup closed, none before it"
    );

    // A campaign with one batch that hangs.
    let root = submit(
        &mut client,
        "send_campaign",
        campaign(
            "c-stall",
            vec![
                recipient("a@example.org", "A"),
                recipient("stall-1@example.org", "S"),
                recipient("b@example.org", "B"),
            ],
            1,
        ),
    )
    .await;
    let quiet = |client: &mut TaskServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .list_tasks(pb::ListTasksRequest {
                    names: vec!["send_email_batch".to_owned()],
                    states: vec![pb::TaskState::Running as i32],
                    quiet_for: Some(prost_types::Duration {
                        seconds: 2,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .tasks
        }
    };
    wait_until(
        "one batch is quiet for 2 s",
        Duration::from_secs(30),
        || {
            let quiet = quiet(&mut client);
            async move { quiet.await.len() == 1 }
        },
    )
    .await;
    let stuck = quiet(&mut client).await.remove(0);
    assert_eq!(stuck.root_id, root);
    assert_eq!(server.counts().len(), 4, "w1, w2, a and b were delivered");

    // monitor_campaign_progress publishes the campaign and flags it.
    let monitor = submit(&mut client, "monitor_campaign_progress", json!({})).await;
    let report = result_of(&mut client, &monitor).await;
    let campaigns = report["campaigns"].as_array().unwrap();
    assert_eq!(campaigns.len(), 1, "only c-stall is running: {report}");
    let status = &campaigns[0];
    assert_eq!(status["root_id"], root.as_str());
    assert_eq!(status["campaign_id"], "c-stall");
    assert_eq!(status["recipients"], 3);
    assert_eq!(status["batches"], 3);
    assert_eq!(status["stalled"], true);
    assert_eq!(status["stalled_batches"], json!([stuck.id]));
    assert_eq!(
        records_of(&database, &monitor, "campaign_status").await,
        vec![(root.clone(), "stalled".to_owned())]
    );

    // cleanup_stuck_campaigns requeues the batch; its next attempt delivers.
    let cleanup = submit(&mut client, "cleanup_stuck_campaigns", json!({})).await;
    let report = result_of(&mut client, &cleanup).await;
    assert_eq!(report["policy"], "requeue");
    let batches = report["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{report}");
    assert_eq!(batches[0]["task_id"], stuck.id.as_str());
    assert_eq!(batches[0]["action"], "requeued");
    assert_eq!(
        records_of(&database, &cleanup, "stuck_batch").await,
        vec![(
            format!("{}:{}", stuck.id, stuck.attempt),
            "requeued".to_owned()
        )]
    );
    let last = finish(&mut client, &root).await;
    assert_eq!(
        last.aggregate.unwrap().records_by_status.get("delivered"),
        Some(&3)
    );
    let batch = task(&mut client, &stuck.id).await;
    assert_eq!(batch.state, pb::TaskState::Succeeded as i32);
    assert!(batch.attempt > stuck.attempt);
    assert_eq!(batch.failures[0].kind, "requeued");
    assert!(batch.failures[0].message.contains("no progress for 2s"));
    for (email, count) in server.counts() {
        assert_eq!(count, 1, "{email} got one message");
    }

    // The same calls by hand: what they refuse, naming the field.
    let refused = client
        .requeue_task(pb::RequeueTaskRequest {
            task_id: stuck.id.clone(),
            attempt: 0,
            reason: "again".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("succeeded"), "{refused:?}");
    let refused = client
        .fail_task(pb::FailTaskRequest {
            task_id: stuck.id.clone(),
            attempt: 0,
            reason: " ".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("reason"), "{refused:?}");
    let refused = client
        .requeue_task(pb::RequeueTaskRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            attempt: 0,
            reason: "gone".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let refused = client
        .list_tasks(pb::ListTasksRequest {
            states: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("states[0]"), "{refused:?}");
}

/// A CA and a certificate it signed for 127.0.0.1, in `logs`: (ca.pem, server.pem, server.key).
fn certificates(logs: &Path) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        logs,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=celeritas test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        logs,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(logs.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(
        logs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    (
        logs.join("ca.pem"),
        logs.join("server.pem"),
        logs.join("server.key"),
    )
}

#[tokio::test]
async fn starttls_and_implicit_tls_relays_deliver_and_verify_the_certificate() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_tls");
    let (ca, cert, key) = certificates(&logs);
    let server_args = |mode: &'static str| {
        vec![
            "--tls".to_owned(),
            mode.to_owned(),
            "--cert".to_owned(),
            cert.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
        ]
    };
    let starttls_dir = logs.join("starttls");
    let implicit_dir = logs.join("implicit");
    std::fs::create_dir_all(&starttls_dir).unwrap();
    std::fs::create_dir_all(&implicit_dir).unwrap();
    let starttls_args = server_args("starttls");
    let implicit_args = server_args("implicit");
    let starttls = SmtpServer::start(
        &starttls_dir,
        &starttls_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let implicit = SmtpServer::start(
        &implicit_dir,
        &implicit_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    // Three relays: the two servers with the test CA trusted, and the STARTTLS one without it.
    let relay = |name: &str, port: u16, tls: &str, ca: Option<&Path>| {
        let ca = ca.map_or(String::new(), |ca| {
            format!("ca_file = {:?}\n", ca.display().to_string())
        });
        format!(
            "[smtp.relays.{name}]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n{ca}\n"
        )
    };
    std::fs::write(
        logs.join("celeritas.toml"),
        format!(
            "[smtp]\ndefault_relay = \"starttls\"\nretry_deferred_after = \"1s\"\n\n{}{}{}",
            relay("starttls", starttls.port, "starttls", Some(&ca)),
            relay("implicit", implicit.port, "tls", Some(&ca)),
            relay("untrusted", starttls.port, "starttls", None),
        ),
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(
        &coordinator,
        &logs,
        "worker",
        &["-Q", "campaigns,email", "-c", "2"],
    );
    let mut client = tasks_client(&coordinator).await;
    for (name, server) in [("starttls", &starttls), ("implicit", &implicit)] {
        let mut args = campaign(
            &format!("c-{name}"),
            vec![
                recipient("a@example.org", "A"),
                recipient("b@example.org", "B"),
            ],
            10,
        );
        args["relay"] = json!(name);
        let root = submit(&mut client, "send_campaign", args).await;
        let last = finish(&mut client, &root).await;
        assert_eq!(
            last.aggregate.unwrap().records_by_status.get("delivered"),
            Some(&2),
            "{name}"
        );
        assert_eq!(server.messages().len(), 2, "{name}");
    }

    // Without the CA the certificate does not verify: nothing is sent, the recipient deferred.
    let mut args = campaign("c-untrusted", vec![recipient("c@example.org", "C")], 10);
    args["relay"] = json!("untrusted");
    let root = submit(&mut client, "send_campaign", args).await;
    wait_until(
        "the untrusted relay's recipient is deferred",
        Duration::from_secs(30),
        || async { !deliveries(&database, &root).await.is_empty() },
    )
    .await;
    let (status, data) = deliveries(&database, &root)
        .await
        .remove("c@example.org")
        .unwrap();
    assert_eq!(status, "deferred", "{data}");
    assert!(
        data["smtp"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{data}"
    );
    assert_eq!(
        starttls.messages().len(),
        2,
        "nothing more reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imports_valid_contacts_and_only_they_receive_the_campaign() {
    let database = TestDatabase::create().await;
    let logs = log_dir("campaign_from_import");
    let dns = crate::contacts::DnsServer::start(&logs).await;
    let server = SmtpServer::start(&logs, &[]).await;
    configure(&logs, &server, "");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _validator = crate::contacts::validation_worker(&coordinator, &logs, &dns, free_port());
    let _sender = WorkerProcess::start(&coordinator, &logs, "sender", &["-Q", "campaigns,email"]);
    let csv = logs.join("contacts.csv");
    std::fs::write(
        &csv,
        "Имя;Почта\nIvan;ivan@mx.test\nMaria;Maria@AOnly.test\nИнфо;info@mx.test\n\
         Никто;nobody@nullmx.test\nПотерян;lost@nowhere.test\nДубль;IVAN@mx.test\n\
         Сбой;a@servfail.test\nЛишний;x@mx.test;y\n",
    )
    .unwrap();
    let mut client = coordinator.client().await;
    let import = crate::imports::import(
        &mut client,
        &csv,
        json!({"list_id": 3, "mapping": {"email": "Почта", "name": "Имя"}, "batch_size": 2}),
    )
    .await;
    let (state, _) = crate::imports::finished_tree(&mut client, import).await;
    assert_eq!(state, celeritas::domain::TaskState::Succeeded);

    let mut tasks = tasks_client(&coordinator).await;
    let mut args = content("from-import");
    args["recipients_from"] = json!({"import": import.to_string()});
    args["batch_size"] = json!(1);
    let id = submit(&mut tasks, "send_campaign", args).await;
    finish(&mut tasks, &id).await;
    let result = result_of(&mut tasks, &id).await;
    assert_eq!(result["recipients"], 2, "{result}");
    let counts = server.counts();
    assert_eq!(
        counts,
        HashMap::from([
            ("ivan@mx.test".to_owned(), 1),
            ("maria@aonly.test".to_owned(), 1)
        ]),
        "exactly the valid contacts, once each"
    );
    let greeted: HashSet<bool> = server
        .messages()
        .iter()
        .map(|message| message.data.contains("Hello Ivan") || message.data.contains("Hello Maria"))
        .collect();
    assert_eq!(
        greeted,
        HashSet::from([true]),
        "the mapped fields are the vars"
    );

    // Risky ones too, when asked: the role account joins.
    let mut args = content("from-import-risky");
    args["recipients_from"] = json!({"import": import.to_string(), "statuses": ["valid", "risky"]});
    let id = submit(&mut tasks, "send_campaign", args).await;
    finish(&mut tasks, &id).await;
    assert_eq!(result_of(&mut tasks, &id).await["recipients"], 3);
    assert_eq!(server.counts()["info@mx.test"], 1);

    // What cannot be an audience is refused, naming the field, before anything is sent.
    let mut refusals = Vec::new();
    let mut args = content("bad");
    args["recipients_from"] = json!({"import": "0190f5d4-1b6e-7cc1-8d3a-5b1c2d3e4f50"});
    refusals.push((args, "recipients_from.import: no task"));
    let mut args = content("bad");
    args["recipients_from"] = json!({"import": id});
    refusals.push((args, "recipients_from.import: task"));
    let mut args = content("bad");
    args["recipients_from"] = json!({"import": import.to_string(), "statuses": ["duplicate"]});
    refusals.push((args, "recipients_from.statuses"));
    let mut args = content("bad");
    args["recipients_from"] = json!({"import": import.to_string()});
    args["recipients"] = json!([recipient("a@example.org", "A")]);
    refusals.push((args, "recipients: give recipients or recipients_from"));
    let mut args = content("bad");
    args["recipients_from"] = json!({"import": import.to_string()});
    args["text"] = json!("Dear {{ surname }}");
    refusals.push((args, "recipients_from (the contacts' fields)"));
    let sent = server.messages().len();
    for (args, message) in refusals {
        let id = submit(&mut tasks, "send_campaign", args).await;
        let done = task(&mut tasks, &id).await;
        assert_eq!(done.state(), pb::TaskState::Failed, "{message}: {done:?}");
        let error = done.error.unwrap();
        assert_eq!(error.kind, "invalid_args");
        assert!(
            error.message.starts_with(message),
            "{message}: {}",
            error.message
        );
    }
    assert_eq!(server.messages().len(), sent, "nothing more was sent");
}
