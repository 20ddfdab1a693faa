//! The one-command start: `celeritas dev` with no database server, the compose file's
//! commands checked against the real binary and its settings read, and the Dockerfile's layers
//! (neither compose nor Docker can run on these machines).

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{free_port, send_signal};

const BINARY: &str = env!("CARGO_BIN_EXE_celeritas");

/// Starts `celeritas dev` in `directory` with no database configured; returns once it listens.
async fn start_dev(directory: &std::path::Path, port: u16) -> tokio::process::Child {
    let log = std::fs::File::create(directory.join(format!("dev-{port}.log"))).unwrap();
    let mut child = tokio::process::Command::new(BINARY)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        .env_remove("CELERITAS_CONFIG")
        // No `celeritas` on PATH, as for someone who ran `cargo run`.
        .env("PATH", "/usr/bin:/bin")
        .current_dir(directory)
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start celeritas dev");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("dev starts within a minute")
        .unwrap()
        .expect("dev prints its address");
    assert_eq!(first, format!("listening on 127.0.0.1:{port}"));
    let mut banner = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
    {
        banner.push(line);
    }
    assert!(
        banner
            .iter()
            .any(|line| line.contains("celeritas submit test_celery")),
        "dev prints the commands to try next: {banner:?}"
    );
    // With no `celeritas` on PATH, the hints name the executable that is running.
    let hint = banner
        .iter()
        .find(|line| line.contains("submit test_celery"))
        .unwrap();
    let program = hint.split_whitespace().next().unwrap();
    assert!(
        std::path::Path::new(program).is_absolute() && std::path::Path::new(program).is_file(),
        "the hint names a program one can run: {hint:?}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn cli(arguments: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(arguments)
        .env_remove("CELERITAS_COORDINATOR")
        .output()
        .expect("run celeritas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_on_the_embedded_store_and_keeps_tasks_across_restarts() {
    let directory = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dev = start_dev(directory.path(), port).await;
    assert!(directory.path().join(".celeritas/celeritas.db").exists());

    let checked = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cli(&["submit", "test_celery", "--wait", "--coordinator", &url])
        })
        .await
        .unwrap()
    };
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("celeritas is working"));

    // A task due in an hour is still there after a restart.
    let later = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cli(&[
                "submit",
                "noop",
                "--countdown",
                "3600",
                "--coordinator",
                &url,
            ])
        })
        .await
        .unwrap()
    };
    assert!(later.status.success(), "{later:?}");
    let id = String::from_utf8(later.stdout).unwrap().trim().to_owned();

    // A second coordinator on the same file is refused.
    let second = {
        let directory = directory.path().to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(BINARY)
                .args([
                    "coordinator",
                    "--listen",
                    "127.0.0.1:0",
                    "--database-url",
                    "sqlite://.celeritas/celeritas.db",
                ])
                .current_dir(directory)
                .env("RUST_LOG", "off")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("serves one coordinator"),
        "{second:?}"
    );

    send_signal(&dev, "TERM");
    let mut dev = dev;
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "dev stops cleanly on SIGTERM: {status:?}");

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _dev = start_dev(directory.path(), port).await;
    let status =
        tokio::task::spawn_blocking(move || cli(&["status", &id, "--json", "--coordinator", &url]))
            .await
            .unwrap();
    assert!(status.status.success(), "{status:?}");
    let task: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(task["state"], "scheduled");
    assert_eq!(task["name"], "noop");
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What compose makes of `${NAME:-default}` when `NAME` is unset; other text as it is.
fn compose_default(value: &str) -> Option<String> {
    match value.strip_prefix("${") {
        None => Some(value.to_owned()),
        Some(rest) => {
            let inner = rest.strip_suffix('}')?;
            let (_, default) = inner.split_once(":-")?;
            Some(default.to_owned())
        }
    }
}

/// A worker that sends or checks mail has a relay, by default one this file runs.
fn check_smtp_relay(name: &str, service: &Yaml, services: &yaml_rust2::yaml::Hash) {
    let url = service["environment"]["CELERITAS_SMTP_URL"]
        .as_str()
        .unwrap_or_else(|| panic!("service {name} sends mail: it needs CELERITAS_SMTP_URL"));
    let default = compose_default(url).unwrap_or_else(|| {
        panic!("service {name}: CELERITAS_SMTP_URL {url:?} needs a default (${{CELERITAS_SMTP_URL:-smtp://…}})")
    });
    let relay = celeritas::config::RelaySettings::from_url(&default)
        .unwrap_or_else(|error| panic!("service {name}: CELERITAS_SMTP_URL {default:?}: {error}"));
    assert!(
        services.contains_key(&Yaml::String(relay.host.clone())),
        "service {name}: the default relay {default:?} is not a service of the compose file"
    );
}

/// The coordinator's metrics listen on the container's interfaces and the port is published.
fn check_metrics_reachable(name: &str, service: &Yaml, command: &[String]) {
    let from_command = command
        .iter()
        .position(|arg| arg == "--metrics-listen")
        .map(|index| command[index + 1].clone());
    let from_environment = service["environment"]["CELERITAS_COORDINATOR__METRICS_LISTEN"]
        .as_str()
        .map(str::to_owned);
    // Without either, the default: 127.0.0.1:9464, the container's loopback.
    let listen = from_command
        .or(from_environment)
        .unwrap_or_else(|| "127.0.0.1:9464".to_owned());
    let address: std::net::SocketAddr = listen
        .parse()
        .unwrap_or_else(|error| panic!("service {name}: metrics listen {listen:?}: {error}"));
    assert!(
        !address.ip().is_loopback(),
        "service {name}: metrics on {address} cannot be reached from outside the container"
    );
    let published = strings(&service["ports"]);
    let port = format!(":{}", address.port());
    assert!(
        published.iter().any(|mapping| mapping.ends_with(&port)),
        "service {name}: the metrics port {} is not published ({published:?})",
        address.port()
    );
}

#[test]
fn every_compose_service_runs_a_command_the_binary_accepts() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml at the top of the project");
    let document = YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is YAML")
        .remove(0);
    let services = document["services"].as_hash().expect("a services section");
    let mut checked = Vec::new();
    let mut worker_queues = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("celeritas") {
            continue;
        }
        let mut commands = vec![strings(&service["command"])];
        let health = strings(&service["healthcheck"]["test"]);
        if health.first().map(String::as_str) == Some("CMD")
            && health.get(1).map(String::as_str) == Some("celeritas")
        {
            commands.push(health[2..].to_vec());
        }
        for command in commands {
            assert!(!command.is_empty(), "service {name} has a command");
            // clap rejects unknown flags and bad values before it honours --help.
            let output = Command::new(BINARY)
                .args(&command)
                .arg("--help")
                .env_clear()
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "service {name}: `celeritas {}` is refused: {}",
                command.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            checked.push(format!("{name}: {}", command.join(" ")));
        }
        let command = strings(&service["command"]);
        if command[0] == "coordinator" {
            let has_database = command.iter().any(|arg| arg == "--database-url")
                || service["environment"]["DATABASE_URL"].as_str().is_some();
            assert!(has_database, "the coordinator is given its database");
            check_metrics_reachable(name, service, &command);
        }
        if command[0] == "worker" {
            let queue = command
                .iter()
                .position(|arg| arg == "-Q")
                .map(|index| command[index + 1].clone());
            // The email worker sends; the campaigns worker's send_campaign refuses a campaign
            // whose relay it does not have. Both need one.
            let queues = queue.as_deref().unwrap_or_default();
            if queues
                .split(',')
                .any(|queue| queue == "email" || queue == "campaigns")
            {
                check_smtp_relay(name, service, services);
            }
            let concurrency = command
                .iter()
                .position(|arg| arg == "-c")
                .map(|index| command[index + 1].clone());
            worker_queues.push((queue.unwrap_or_default(), concurrency.unwrap_or_default()));
        }
    }
    worker_queues.sort();
    assert_eq!(
        worker_queues,
        vec![
            ("campaigns,default".to_owned(), "2".to_owned()),
            ("email".to_owned(), "4".to_owned()),
            ("import".to_owned(), "2".to_owned()),
        ],
        "the seed's production workers; the campaigns worker also runs the periodic upkeep (default)"
    );
    assert!(checked.len() >= 5, "{checked:?}");
}

/// The Dockerfile caches the dependencies in a layer of their own: they are built before any
/// of `src/` is copied, from nothing but the manifests (the workspace's and its example
/// member's), the lock file, the build script and the proto contract, so a source change
/// rebuilds the crate alone. (No Docker engine runs on
/// these machines; this checks the file's shape.)
#[test]
fn the_dockerfile_builds_the_dependencies_before_it_copies_the_sources() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("a Dockerfile at the top of the project");
    // Instructions, with continued lines joined; the build stage only.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .take_while(|line| !line.starts_with("FROM") || line.contains("AS build"))
        .collect();
    let copies_sources = instructions
        .iter()
        .position(|line| line.starts_with("COPY src"))
        .expect("the build stage copies src");
    let builds = |line: &&str| line.starts_with("RUN") && line.contains("cargo build");
    let dependency_build = instructions
        .iter()
        .position(builds)
        .expect("the build stage runs cargo build");
    assert!(
        dependency_build < copies_sources,
        "a cargo build runs before src is copied: {instructions:#?}"
    );
    for line in &instructions[..dependency_build] {
        if let Some(sources) = line.strip_prefix("COPY ") {
            let copied: Vec<&str> = sources.split_whitespace().collect();
            for source in &copied[..copied.len() - 1] {
                assert!(
                    [
                        "Cargo.toml",
                        "Cargo.lock",
                        "build.rs",
                        "proto",
                        "examples/own-tasks/Cargo.toml"
                    ]
                    .contains(source),
                    "the dependency layer copies {source}, so it would be rebuilt when that changes"
                );
            }
        }
    }
    assert!(
        instructions[copies_sources..].iter().any(builds),
        "the crate is built after src is copied: {instructions:#?}"
    );
}
