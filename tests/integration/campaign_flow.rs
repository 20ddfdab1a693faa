//! Campaigns under flow control, against a real SMTP server with two coordinators and three
//! workers: groups served in turn, and a campaign paused and resumed while it sends.

use std::collections::HashMap;
use std::time::Duration;

use celeritas::domain::{GroupKey, TaskId, TaskQuery, TaskState};
use celeritas::grpc::client::CoordinatorClient;
use serde_json::json;

use crate::email::{SmtpServer, campaign, configure, recipient};
use crate::flow_control::{MailCluster, cli, mail_cluster};
use crate::support::{TestDatabase, log_dir, spec, wait_for_state, wait_until};

/// The running or leased tasks of a tree.
async fn active_in(client: &mut CoordinatorClient, root: TaskId) -> usize {
    let query = TaskQuery {
        root: Some(root),
        names: Vec::new(),
        states: vec![TaskState::Leased, TaskState::Running],
        quiet_for: None,
        limit: 10_000,
        with_payloads: false,
    };
    client.list_tasks(&query).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_campaign_is_not_stuck_behind_a_large_one_of_another_group() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-fair-groups");
    let server = SmtpServer::start(&logs, &[]).await;
    // 20,000 recipients inline are about 1 MB of args.
    configure(&logs, &server, "[coordinator]\nmax_args_bytes = 4194304\n");
    let MailCluster {
        first,
        second: _second,
        workers,
    } = mail_cluster(&database, &logs, "8").await;
    let mut client = first.client().await;

    let submit = |name: &str, domain: &str, count: usize| {
        let recipients = (0..count)
            .map(|n| recipient(&format!("user{n}@{domain}"), "Reader"))
            .collect();
        let mut campaign = spec("send_campaign", campaign(name, recipients, 50), None);
        campaign.group_key = Some(GroupKey::parse("group_key", name).unwrap());
        campaign
    };
    let big = client
        .submit(&submit("customer-big", "big.test", 20_000))
        .await
        .unwrap();
    wait_until(
        "the large campaign to be sending",
        Duration::from_secs(60),
        || async { !server.messages().is_empty() },
    )
    .await;
    let small = client
        .submit(&submit("customer-small", "small.test", 200))
        .await
        .unwrap();
    wait_for_state(&mut client, small.id, TaskState::Succeeded).await;
    // The small campaign's batches are its children: it succeeds once they all did.
    wait_until(
        "the small campaign's 200 messages",
        Duration::from_secs(60),
        || async {
            server
                .messages()
                .iter()
                .filter(|message| message.to[0].ends_with("@small.test"))
                .count()
                >= 200
        },
    )
    .await;
    let big_sent = server
        .messages()
        .iter()
        .filter(|message| message.to[0].ends_with("@big.test"))
        .count();
    eprintln!("the small campaign finished with {big_sent} of the large one's 20,000 sent");
    assert!(
        big_sent < 4_000,
        "{big_sent} of the large campaign were sent before the small one finished"
    );
    let record = client.task(small.id).await.unwrap();
    assert_eq!(record.group_key.unwrap().as_str(), "customer-small");
    client.cancel(big.id, false).await.unwrap();
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_paused_and_resumed_three_times_mails_everyone_once() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-pause-tree");
    // Each message takes 20 ms at the server: the campaign sends for several seconds.
    let server = SmtpServer::start(&logs, &["--data-delay", "0.02"]).await;
    configure(&logs, &server, "");
    let MailCluster {
        first,
        second,
        workers,
    } = mail_cluster(&database, &logs, "4").await;
    let mut client = first.client().await;

    let total = 2_000;
    let recipients = (0..total)
        .map(|n| recipient(&format!("user{n}@paused.test"), "Reader"))
        .collect();
    let root = client
        .submit(&spec(
            "send_campaign",
            campaign("paused", recipients, 40),
            None,
        ))
        .await
        .unwrap()
        .id;
    for (round, resume_after) in [300, 800, 1_300].into_iter().enumerate() {
        wait_until(
            "the campaign to be sending",
            Duration::from_secs(120),
            || async { server.messages().len() >= resume_after },
        )
        .await;
        let (changed, _) = client.pause_tree(root).await.unwrap();
        assert!(changed, "pause {round} paused it");
        // Its running batches stop after their current message and wait again.
        let mut watcher = first.client().await;
        wait_until(
            "the paused campaign's batches to stop",
            Duration::from_secs(30),
            || {
                let mut client = watcher.clone();
                async move { active_in(&mut client, root).await == 0 }
            },
        )
        .await;
        let held = server.messages().len();
        let shown = client.task(root).await.unwrap();
        assert!(shown.tree_paused_at.is_some(), "the task shows the pause");
        // While paused, a round trip through every coordinator's dispatcher sends nothing.
        for coordinator in [&first, &second] {
            let mut other = coordinator.client().await;
            let probe = other.submit(&spec("noop", json!({}), None)).await.unwrap();
            wait_for_state(&mut other, probe.id, TaskState::Succeeded).await;
        }
        assert_eq!(active_in(&mut watcher, root).await, 0);
        assert_eq!(
            server.messages().len(),
            held,
            "nothing is sent while paused"
        );
        assert!(held < total, "pause {round} came before the end");
        assert!(client.resume_tree(root).await.unwrap());
    }
    wait_until("every message", Duration::from_secs(120), || async {
        server.messages().len() >= total
    })
    .await;
    wait_for_state(&mut client, root, TaskState::Succeeded).await;
    let mut per_address: HashMap<String, usize> = HashMap::new();
    for message in server.messages() {
        *per_address.entry(message.to[0].clone()).or_default() += 1;
    }
    assert_eq!(per_address.len(), total, "nobody skipped");
    let repeated: Vec<_> = per_address.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "mailed twice: {repeated:?}");
    // A finished tree cannot be paused.
    let error = client.pause_tree(root).await.unwrap_err();
    assert!(error.to_string().contains("task_id"), "{error}");
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

/// What `inspect rate_limits` shows for `key`: its rate now, per second.
async fn rate_now(client: &mut CoordinatorClient, key: &str) -> Option<f64> {
    client
        .rate_limits()
        .await
        .unwrap()
        .keys
        .into_iter()
        .find(|rate| rate.key == key)
        .map(|rate| rate.effective)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_pushes_back_is_slowed_down_everywhere_and_recovers() {
    let database = TestDatabase::create().await;
    let logs = log_dir("flow-pushback");
    // The domain's server is under load for its first 3 s: over 30 RCPTs a second get 421.
    let server = SmtpServer::start(
        &logs,
        &[
            "--busy-domain",
            "busy.test",
            "--busy-rate",
            "30",
            "--busy-for",
            "3",
        ],
    )
    .await;
    configure(
        &logs,
        &server,
        "[rate_limits]\n\"domain:busy.test\" = \"100/s\"\n\n[coordinator]\nrate_recovery = \"4s\"\n\n\
         [tasks.send_email_batch]\nmax_retries = 30\n",
    );
    let MailCluster {
        first,
        second,
        workers,
    } = mail_cluster(&database, &logs, "4").await;
    let mut client = first.client().await;

    let total = 1_200;
    let recipients = (0..total)
        .map(|n| recipient(&format!("user{n}@busy.test"), "Reader"))
        .collect();
    let root = client
        .submit(&spec(
            "send_campaign",
            campaign("busy", recipients, 100),
            None,
        ))
        .await
        .unwrap()
        .id;
    // Pushback reported by any worker lowers the rate every coordinator leases at.
    let mut other = second.client().await;
    let lowest = std::sync::Arc::new(std::sync::Mutex::new(f64::MAX));
    wait_until("the domain's rate to drop", Duration::from_secs(60), || {
        let mut other = other.clone();
        let lowest = lowest.clone();
        async move {
            let now = rate_now(&mut other, "domain:busy.test").await;
            let mut lowest = lowest.lock().unwrap();
            if let Some(rate) = now {
                *lowest = lowest.min(rate);
            }
            *lowest <= 50.0
        }
    })
    .await;
    let lowest = *lowest.lock().unwrap();
    wait_until(
        "the domain's rate to recover",
        Duration::from_secs(60),
        || {
            let mut other = other.clone();
            async move {
                rate_now(&mut other, "domain:busy.test")
                    .await
                    .is_some_and(|rate| rate >= 95.0)
            }
        },
    )
    .await;
    let pushbacks = std::fs::read_to_string(logs.join("smtp-received.jsonl.pushbacks"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(pushbacks > 0, "the server pushed back");
    eprintln!("lowest rate seen {lowest:.1}/s after {pushbacks} replies of 421");
    wait_until("every message", Duration::from_secs(120), || async {
        server.messages().len() >= total
    })
    .await;
    wait_for_state(&mut client, root, TaskState::Succeeded).await;
    let mut per_address: HashMap<String, usize> = HashMap::new();
    for message in server.messages() {
        *per_address.entry(message.to[0].clone()).or_default() += 1;
    }
    assert_eq!(
        per_address.len(),
        total,
        "every recipient, after their retries"
    );
    assert!(per_address.values().all(|count| *count == 1), "each once");
    let shown = cli(&first.url, &["inspect", "rate_limits"]);
    assert!(shown.contains("domain:busy.test"), "{shown}");
    other.cancel(root, false).await.ok();
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}
