//! The command line against a real coordinator and worker.

use std::process::Command;

use crate::support::{CoordinatorProcess, TestDatabase, WorkerProcess, log_dir};

fn celeritas(arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(arguments)
        .env_remove("CELERITAS_COORDINATOR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run celeritas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_result_and_exits_by_the_tasks_outcome() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-worker", &["-c", "2"]);
    let url = coordinator.url.clone();

    let run = |arguments: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            celeritas(&arguments)
        })
    };
    let succeeded = run(vec![
        "submit".into(),
        "test_celery".into(),
        "--wait".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(succeeded.status.success(), "{succeeded:?}");
    let result: serde_json::Value = serde_json::from_slice(&succeeded.stdout).unwrap();
    assert_eq!(result["message"], "celeritas is working");

    let failed = run(vec![
        "submit".into(),
        "sleep".into(),
        "--args".into(),
        r#"{"seconds": 1}"#.into(),
        "--wait".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("invalid_args"));

    let submitted = run(vec![
        "submit".into(),
        "noop".into(),
        "--args".into(),
        r#"{"n": 7}"#.into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(submitted.status.success());
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();
    uuid::Uuid::parse_str(&id).expect("submit prints the new task's id");

    let refused = run(vec![
        "submit".into(),
        "noop".into(),
        "--queue".into(),
        "nowhere".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("task.queue: unknown queue"));

    let status = run(vec![
        "status".into(),
        id.clone(),
        "--json".into(),
        "--coordinator".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(status.status.success());
    let task: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["args"]["n"], 7);

    assert!(worker.terminate().await.success());
}

#[test]
fn migrate_applies_the_schema_and_is_repeatable() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(TestDatabase::create());
    for _ in 0..2 {
        let output = celeritas(&["migrate", "--database-url", &database.url]);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "migrations applied"
        );
    }
    let tables: i64 = runtime.block_on(
        sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('tasks', 'workers')",
        )
        .fetch_one(&database.pool),
    )
    .unwrap();
    assert_eq!(tables, 2);
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_tasks_are_listed_requeued_and_failed_by_hand() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_intervene");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let _worker = WorkerProcess::start(&coordinator, &logs, "cli-stuck", &["-c", "2"]);
    let url = coordinator.url.clone();
    let run = |arguments: &[&str]| {
        let mut arguments: Vec<String> = arguments.iter().map(|text| text.to_string()).collect();
        arguments.extend(["--coordinator".to_owned(), url.clone()]);
        tokio::task::spawn_blocking(move || {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            celeritas(&arguments)
        })
    };
    let json = |output: &std::process::Output| -> serde_json::Value {
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };

    // A task that runs for a minute without reporting progress.
    let submitted = run(&["submit", "sleep", "--args", r#"{"ms": 60000}"#])
        .await
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let quiet = || {
        run(&[
            "tasks",
            "--name",
            "sleep",
            "--state",
            "running",
            "--quiet-for",
            "0.5",
            "--json",
        ])
    };
    crate::support::wait_until(
        "the sleep is running and quiet",
        std::time::Duration::from_secs(30),
        || {
            let quiet = quiet();
            async move { json(&quiet.await.unwrap()).as_array().unwrap().len() == 1 }
        },
    )
    .await;
    let listed = json(&quiet().await.unwrap());
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["attempt"], 1);

    // Requeued: the attempt ends as a failure and the task runs again, as attempt 2.
    let requeued = json(
        &run(&["requeue", &id, "--reason", "stuck, by hand", "--json"])
            .await
            .unwrap(),
    );
    assert_eq!(requeued["failures"][0]["kind"], "requeued");
    assert_eq!(requeued["failures"][0]["message"], "stuck, by hand");
    assert_eq!(requeued["retries"], 1);
    crate::support::wait_until(
        "the task runs again",
        std::time::Duration::from_secs(30),
        || {
            let status = run(&["status", &id, "--json"]);
            async move {
                let task = json(&status.await.unwrap());
                task["state"] == "running" && task["attempt"] == 2
            }
        },
    )
    .await;
    // A stale attempt is refused; the current one is failed.
    let stale = run(&["fail", &id, "--attempt", "1", "--reason", "late"])
        .await
        .unwrap();
    assert_eq!(stale.status.code(), Some(1), "{stale:?}");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("attempt 1"),
        "{stale:?}"
    );
    let failed = json(
        &run(&["fail", &id, "--reason", "give up", "--json"])
            .await
            .unwrap(),
    );
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"]["kind"], "failed_by_request");

    let bad = run(&["tasks", "--state", "stuck"]).await.unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--state"),
        "{bad:?}"
    );

    // The control reaches the worker, which has no relay configured.
    let answers = json(
        &run(&["close-idle-connections", "-Q", "default", "--json"])
            .await
            .unwrap(),
    );
    assert_eq!(answers.as_array().unwrap().len(), 1, "{answers}");
    assert_eq!(answers[0]["answered"], true);
    assert_eq!(
        answers[0]["detail"],
        "closed 0 idle SMTP connection(s) of 0 relay(s)"
    );
}

/// Arguments of about 200 KB: more than a pipe holds, so a command printing them is still
/// writing when its reader goes away.
/// `large_args()` in a file under `logs`, as `--args @FILE` takes it (they outgrow a command
/// line).
fn large_args_file(logs: &std::path::Path) -> String {
    let path = logs.join("args.json");
    std::fs::write(&path, large_args()).unwrap();
    format!("@{}", path.display())
}

fn large_args() -> String {
    let recipients: Vec<String> = (0..5000)
        .map(|index| format!("recipient-{index:05}@example.test"))
        .collect();
    serde_json::json!({ "recipients": recipients }).to_string()
}

/// Runs `celeritas ARGS` with stdout a pipe, reads `keep` bytes, closes the pipe and returns
/// the exit status and stderr.
fn run_with_early_closed_stdout(
    arguments: &[String],
    keep: usize,
) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args(arguments)
        .env_remove("CELERITAS_COORDINATOR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run celeritas");
    let mut stdout = child.stdout.take().unwrap();
    let mut head = vec![0; keep];
    stdout
        .read_exact(&mut head)
        .expect("the first bytes of the output");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_quietly_when_their_reader_goes_away() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_broken_pipe");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let url = coordinator.url.clone();
    // A scheduled task (no worker needed) whose args outgrow a pipe; from a file, as they
    // outgrow a command line too.
    let args_file = large_args_file(&logs);
    let submitted = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            celeritas(&[
                "submit",
                "noop",
                "--countdown",
                "1h",
                "--args",
                &args_file,
                "--coordinator",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();

    for command in [
        vec!["inspect", "scheduled", "--json"],
        vec!["status", &id, "--json"],
        vec!["tasks", "--state", "scheduled", "--with-args", "--json"],
    ] {
        let mut arguments: Vec<String> = command.iter().map(|part| part.to_string()).collect();
        arguments.extend(["--coordinator".to_owned(), url.clone()]);
        let (status, stderr) =
            tokio::task::spawn_blocking(move || run_with_early_closed_stdout(&arguments, 100))
                .await
                .unwrap();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{command:?} complained: {stderr}"
        );
        assert!(
            status.code() == Some(0) || status.code() == Some(141),
            "{command:?} ended with {status:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_a_closed_stderr_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let database = TestDatabase::create().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeritas"))
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--database-url",
            &database.url,
        ])
        .env("RUST_LOG", "info")
        .env_remove("CELERITAS_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start a coordinator");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .expect("the coordinator starts")
        .unwrap();
    assert!(first.is_some_and(|line| line.starts_with("listening on ")));
    // The reader of stderr goes away, as `head` does; every later log line fails to write.
    drop(child.stderr.take());
    crate::support::send_signal(&child, "TERM");
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("the coordinator stops within 30 s of SIGTERM, closed stderr or not")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cuts_long_args_unless_asked_for_all() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_status_full");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let url = coordinator.url.clone();
    let args_file = large_args_file(&logs);
    let run = |arguments: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            arguments.extend(["--coordinator", &url]);
            celeritas(&arguments)
        })
    };
    let submitted = run(vec![
        "submit".into(),
        "noop".into(),
        "--countdown".into(),
        "1h".into(),
        "--args".into(),
        args_file,
    ])
    .await
    .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();

    let short = run(vec!["status".into(), id.clone()]).await.unwrap();
    assert!(short.status.success(), "{short:?}");
    let short = String::from_utf8(short.stdout).unwrap();
    let args_line = short
        .lines()
        .find(|line| line.starts_with("args:"))
        .unwrap();
    assert!(args_line.len() < 400, "{args_line}");
    // The coordinator stores the args re-encoded, so their length is read from the full view.
    assert!(args_line.contains(" more characters, "), "{args_line}");
    assert!(
        args_line.ends_with(" in all; --full shows them)"),
        "{args_line}"
    );
    assert!(!short.contains("recipient-04999@example.test"));

    let full = run(vec!["status".into(), id, "--full".into()])
        .await
        .unwrap();
    assert!(full.status.success(), "{full:?}");
    let full = String::from_utf8(full.stdout).unwrap();
    assert!(full.contains("recipient-04999@example.test"));
    assert!(!full.contains("--full shows them"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_tree_returns_when_the_children_are_done() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_wait_tree");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-tree", &["-c", "4"]);
    let url = coordinator.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        celeritas(&[
            "submit",
            "fan_out",
            "--args",
            r#"{"task": "sleep", "args": [{"ms": 300}, {"ms": 300}, {"ms": 300}]}"#,
            "--wait-tree",
            "--json",
            "--coordinator",
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let root: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(root["state"], "succeeded");
    // Every child had finished when the command returned, not only the root.
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(unfinished, 0);
    assert_eq!(
        crate::support::count_in_state(&database.pool, "succeeded").await,
        4
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_lines_and_a_summary_when_stdout_is_not_a_terminal() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_follow_pipe");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-follow", &["-c", "4"]);
    let url = coordinator.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let submitted = celeritas(&[
            "submit",
            "fan_out",
            "--args",
            r#"{"task": "sleep", "args": [{"ms": 200}, {"ms": 200}, {"ms": 200}]}"#,
            "--coordinator",
            &url,
        ]);
        assert!(submitted.status.success(), "{submitted:?}");
        let id = String::from_utf8(submitted.stdout)
            .unwrap()
            .trim()
            .to_owned();
        // `output()` gives the command a pipe for stdout, as `| tee` or CI would.
        (
            id.clone(),
            celeritas(&["follow", &id, "--coordinator", &url]),
        )
    })
    .await
    .unwrap();
    let (id, output) = output;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 2,
        "a progress line and a summary: {stdout:?}"
    );
    assert!(lines[0].contains(" tasks finished"), "{stdout:?}");
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with(&format!("tree {id} finished: root succeeded;"))
            && summary.contains("4/4 tasks finished"),
        "{summary:?}"
    );
    assert!(worker.terminate().await.success());
}

#[test]
fn a_missing_database_is_one_error_with_the_command_that_creates_it() {
    let name = format!("celeritas_missing_{}", uuid::Uuid::new_v4().simple());
    let url = crate::support::with_database(&crate::support::server_url(), &name);
    for command in ["migrate", "coordinator"] {
        let mut arguments = vec![command, "--database-url", &url];
        if command == "coordinator" {
            arguments.extend(["--listen", "127.0.0.1:0", "--metrics-listen", "none"]);
        }
        let output = celeritas(&arguments);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.matches("does not exist").count(),
            1,
            "said once: {stderr}"
        );
        assert!(stderr.contains("createdb "), "{stderr}");
        assert!(stderr.contains(&name), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_says_how_many_descendants_it_cancelled() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_cancel_tree");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    // The worker runs the root; its children wait on a queue nobody consumes.
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-cancel", &["-Q", "default"]);
    let url = coordinator.url.clone();
    let (root, cancelled) = tokio::task::spawn_blocking(move || {
        let root = celeritas(&[
            "submit",
            "fan_out",
            "--queue",
            "default",
            "--args",
            r#"{"task": "noop", "count": 3, "queue": "import"}"#,
            "--wait",
            "--json",
            "--coordinator",
            &url,
        ]);
        assert!(root.status.success(), "{root:?}");
        let root: serde_json::Value = serde_json::from_slice(&root.stdout).unwrap();
        let id = root["id"].as_str().unwrap().to_owned();
        (
            id.clone(),
            celeritas(&["cancel", &id, "--coordinator", &url]),
        )
    })
    .await
    .unwrap();
    assert!(cancelled.status.success(), "{cancelled:?}");
    assert_eq!(
        String::from_utf8(cancelled.stdout).unwrap().trim(),
        format!(
            "task {root} had already finished (succeeded); 3 unfinished descendant(s) cancelled"
        )
    );
    assert_eq!(
        crate::support::count_in_state(&database.pool, "cancelled").await,
        3
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_uploads_submits_and_waits_for_a_summary() {
    let database = TestDatabase::create().await;
    let logs = log_dir("cli_import");
    let coordinator = CoordinatorProcess::start(&database, &logs).await;
    let worker = WorkerProcess::start(&coordinator, &logs, "cli-import", &["-Q", "import"]);
    let url = coordinator.url.clone();
    let file = logs.join("contacts.csv");
    std::fs::write(
        &file,
        "email;name\n\
         a@example.com;Ann\n\
         b@example.com;Bob\n\
         c@example.com;Cid\n\
         not an address;Nobody\n\
         a@example.com;Ann again\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let import = move |extra: &[&str]| {
        let mut arguments = vec![
            "import",
            &file,
            "--list-id",
            "7",
            "--validation",
            "syntax",
            "--coordinator",
            &url,
        ];
        arguments.extend(extra);
        celeritas(&arguments)
    };
    let (broken, encoding, conflicting, imported, plain, followed) =
        tokio::task::spawn_blocking(move || {
            (
                import(&["--map", "broken", "--wait"]),
                import(&["--encoding", "martian", "--wait"]),
                import(&["--wait", "--follow"]),
                import(&["--map", "name=name", "--wait", "--json"]),
                import(&["--wait"]),
                import(&["--follow"]),
            )
        })
        .await
        .unwrap();

    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("--map") && stderr.contains("broken"),
        "{stderr}"
    );
    // What the task would refuse is refused before the upload, in the task's words.
    assert_eq!(encoding.status.code(), Some(1), "{encoding:?}");
    let stderr = String::from_utf8_lossy(&encoding.stderr);
    assert!(
        stderr.contains("encoding: unknown encoding \"martian\""),
        "{stderr}"
    );
    assert_eq!(
        conflicting.status.code(),
        Some(2),
        "clap refuses: {conflicting:?}"
    );
    let stderr = String::from_utf8_lossy(&conflicting.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert!(imported.status.success(), "{imported:?}");
    let summary: serde_json::Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(summary["state"], "succeeded", "{summary}");
    assert_eq!(
        summary["records_by_status"],
        serde_json::json!({"valid": 3, "invalid": 1, "duplicate": 1}),
        "{summary}"
    );
    let task_id = summary["task_id"].as_str().unwrap();
    uuid::Uuid::parse_str(summary["file_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        summary["tasks_total"], 2,
        "the root and one batch: {summary}"
    );
    // Without --json: the id at once, then the summary line.
    assert!(plain.status.success(), "{plain:?}");
    let stdout = String::from_utf8(plain.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let plain_id = lines[0];
    assert_eq!(
        lines[1],
        format!("import {plain_id} succeeded: 3 valid, 1 invalid, 1 duplicate")
    );
    assert!(String::from_utf8_lossy(&plain.stderr).contains(" bytes, sha256 "));
    // --follow: the id, then what `celeritas follow` prints.
    assert!(followed.status.success(), "{followed:?}");
    let stdout = String::from_utf8(followed.stdout).unwrap();
    let followed_id = stdout.lines().next().unwrap();
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("tree {followed_id} finished: root succeeded;")),
        "{stdout}"
    );

    // The refused runs uploaded and submitted nothing: the files and task trees are the three
    // imports'.
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(files, 3);
    let mut roots: Vec<String> = sqlx::query_scalar("SELECT DISTINCT root_id::text FROM tasks")
        .fetch_all(&database.pool)
        .await
        .unwrap();
    roots.sort();
    let mut imports = vec![
        task_id.to_owned(),
        plain_id.to_owned(),
        followed_id.to_owned(),
    ];
    imports.sort();
    assert_eq!(roots, imports);
    assert!(worker.terminate().await.success());
}
