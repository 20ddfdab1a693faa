//! Rate limits set through the API: held by every coordinator, over batches queued before the
//! limit existed, measured at a real SMTP server; kept across a restart; cleared; bad input
//! refused by field.

use std::time::Duration;

use celeritas::domain::{ErrorKind, QueueName, TaskState};
use celeritas::grpc::client::{ClientError, CoordinatorClient};

use crate::email::{SmtpServer, campaign, configure, recipient};
use crate::flow_control::{MailCluster, cli, mail_cluster, rate_of};
use crate::support::{CoordinatorLaunch, TestDatabase, log_dir, spec, wait_for_state, wait_until};

/// The rate a coordinator holds `pattern` to, if it has a limit for it set through the API.
async fn api_limit(client: &mut CoordinatorClient, pattern: &str) -> Option<f64> {
    client
        .rate_limits()
        .await
        .unwrap()
        .limits
        .into_iter()
        .find(|rule| rule.pattern == pattern && rule.set_through_api)
        .map(|rule| rule.per_second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_through_one_coordinator_holds_everywhere_over_batches_already_queued() {
    let database = TestDatabase::create().await;
    let logs = log_dir("rate-limit-api");
    let server = SmtpServer::start(&logs, &[]).await;
    // No limit in the configuration: the workers cut batches of mixed domains.
    configure(&logs, &server, "");
    let MailCluster {
        first,
        second,
        workers,
    } = mail_cluster(&database, &logs, "8").await;
    let mut client = first.client().await;
    let mut other = second.client().await;

    // The campaign's batches are queued while `email` is paused, before any limit exists.
    let email = QueueName::parse("queue", "email").unwrap();
    assert!(client.pause_queue(&email).await.unwrap());
    let recipients: Vec<_> = (0..1_200)
        .map(|n| {
            let domain = if n % 3 == 2 {
                "free.test"
            } else {
                "limited.test"
            };
            recipient(&format!("user{n}@{domain}"), "Reader")
        })
        .collect();
    let root = client
        .submit(&spec(
            "send_campaign",
            campaign("api", recipients, 20),
            None,
        ))
        .await
        .unwrap();
    wait_for_state(&mut client, root.id, TaskState::Succeeded).await;

    // Set through the second coordinator; the first, whose workers hold most of the stream,
    // takes it up within its refresh.
    let (previous, governed) = other
        .set_rate_limit("domain:limited.test", "40/s")
        .await
        .unwrap();
    assert_eq!(previous, None);
    assert_eq!(
        governed, 60,
        "every queued batch holds limited.test recipients"
    );
    wait_until(
        "the first coordinator to hold the limit",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move { api_limit(&mut client, "domain:limited.test").await == Some(40.0) }
        },
    )
    .await;
    assert!(client.resume_queue(&email).await.unwrap());
    wait_until(
        "every message to arrive",
        Duration::from_secs(120),
        || async { server.messages().len() >= 1_200 },
    )
    .await;

    let messages = server.messages();
    assert_eq!(messages.len(), 1_200, "each recipient once");
    let mut limited: Vec<f64> = messages
        .iter()
        .filter(|message| message.to[0].ends_with("@limited.test"))
        .map(|message| message.at)
        .collect();
    limited.sort_by(f64::total_cmp);
    assert_eq!(limited.len(), 800);
    let rate = rate_of(&limited);
    let span = limited[limited.len() - 1] - limited[0];
    eprintln!("limited.test: {rate:.1}/s over {span:.1} s");
    assert!(
        (36.0..=44.0).contains(&rate),
        "the limited domain got {rate:.1} messages/s over {span:.1} s; its limit is 40/s"
    );

    // Stored: a coordinator started afresh holds it, and the CLI shows where it came from.
    second.stop_with("TERM").await;
    let second = CoordinatorLaunch::new(&database.url, &logs)
        .name("second-again")
        .start()
        .await;
    let mut other = second.client().await;
    assert_eq!(
        api_limit(&mut other, "domain:limited.test").await,
        Some(40.0)
    );
    let shown = cli(&second.url, &["inspect", "rate_limits"]);
    assert!(
        shown
            .lines()
            .any(|line| line.contains("domain:limited.test") && line.contains("api")),
        "{shown}"
    );

    // Cleared through the CLI, on every coordinator.
    let cleared = cli(&first.url, &["clear-rate-limit", "domain:limited.test"]);
    assert!(cleared.contains("(40/s) cleared"), "{cleared}");
    wait_until(
        "the other coordinator to drop the limit",
        Duration::from_secs(10),
        || {
            let mut other = other.clone();
            async move { api_limit(&mut other, "domain:limited.test").await.is_none() }
        },
    )
    .await;
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rate_limits_are_refused_naming_the_field_and_nothing_is_stored() {
    let database = TestDatabase::create().await;
    let logs = log_dir("rate-limit-api-bad");
    let coordinator = CoordinatorLaunch::new(&database.url, &logs).start().await;
    let mut client = coordinator.client().await;
    let invalid = |error: ClientError, field: &str, says: &str| {
        let ClientError::Status { kind, message } = error else {
            panic!("not a status: {error}");
        };
        assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
        assert!(
            message.starts_with(&format!("{field}:")) && message.contains(says),
            "{message}"
        );
    };
    for (key, rate, field, says) in [
        ("domain:x.test", "ten per second", "rate", "is not a rate"),
        ("domain:x.test", "0/s", "rate", "more than zero"),
        ("domain:x.test", "-5/m", "rate", "more than zero"),
        ("", "5/s", "key", "1 to 200 bytes"),
        ("domain:\u{7}", "5/s", "key", "control characters"),
    ] {
        invalid(
            client.set_rate_limit(key, rate).await.unwrap_err(),
            field,
            says,
        );
    }
    let long = "k".repeat(201);
    invalid(
        client.set_rate_limit(&long, "5/s").await.unwrap_err(),
        "key",
        "1 to 200 bytes",
    );
    let ClientError::Status { kind, message } =
        client.clear_rate_limit("domain:x.test").await.unwrap_err()
    else {
        panic!("not a status");
    };
    assert_eq!(kind, ErrorKind::NotFound);
    assert!(message.starts_with("key:"), "{message}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_limit_settings")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    assert!(client.rate_limits().await.unwrap().limits.is_empty());
}
