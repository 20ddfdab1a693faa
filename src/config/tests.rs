use super::*;
use crate::domain::{QueueName, TaskName};

#[test]
fn defaults_are_the_seed() {
    let routing = Config::default().routing().unwrap();
    let queue = |name: &str| QueueName::parse("q", name).unwrap();
    let task = |name: &str| TaskName::parse("t", name).unwrap();
    assert_eq!(routing.queue_priority(&queue("import")), Some(5));
    assert_eq!(routing.queue_priority(&queue("email")), Some(10));
    assert_eq!(routing.queue_priority(&queue("campaigns")), Some(10));
    assert_eq!(routing.queue_priority(&queue("default")), Some(0));
    assert_eq!(
        routing.route(&task("send_campaign")),
        Some(&queue("campaigns"))
    );
    assert_eq!(
        routing.route(&task("send_single_email")),
        Some(&queue("email"))
    );
    assert_eq!(
        routing.route(&task("validate_contact_batch")),
        Some(&queue("import"))
    );
    assert_eq!(routing.route(&task("test_celery")), None);
    assert_eq!(routing.default_queue(), &queue("default"));
    let policy = routing.policy(&task("anything"));
    assert_eq!(policy.time_limits.soft, Duration::from_secs(25 * 60));
    assert_eq!(policy.time_limits.hard, Duration::from_secs(30 * 60));
    assert_eq!(Config::default().worker.prefetch_multiplier, 1);
    let schedules = Config::default().schedules().unwrap();
    let names: Vec<&str> = schedules
        .iter()
        .map(|schedule| schedule.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "cleanup_smtp_connections",
            "cleanup_stuck_campaigns",
            "monitor_campaign_progress"
        ]
    );
}

#[test]
fn a_schedule_with_a_bad_cron_names_it() {
    let error = Config::from_toml("[schedules.nightly]\ntask = \"noop\"\ncron = \"at night\"\n")
        .unwrap_err();
    assert!(
        error.to_string().contains("schedules.nightly.cron"),
        "{error}"
    );
}

#[test]
fn schedule_args_a_store_cannot_hold_are_refused_by_name() {
    let error = Config::from_toml(
        "[schedules.nightly]\ntask = \"noop\"\nevery = \"1h\"\nargs = { note = \"a\\u0000b\" }\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("schedules.nightly.args"),
        "{error}"
    );
}

#[test]
fn a_file_adds_queues_and_overrides_task_policies() {
    let config = Config::from_toml(
        r#"
        [queues.bulk]
        priority = 1
        [routes]
        nightly_report = "bulk"
        [tasks.nightly_report]
        hard_time_limit = "2h"
        soft_time_limit = "1h 50m"
        max_retries = 0
        "#,
    )
    .unwrap();
    let routing = config.routing().unwrap();
    let report = TaskName::parse("t", "nightly_report").unwrap();
    assert_eq!(routing.route(&report).unwrap().as_str(), "bulk");
    assert_eq!(routing.policy(&report).max_retries, 0);
    assert_eq!(
        routing.policy(&report).time_limits.hard,
        Duration::from_secs(7200)
    );
    assert_eq!(routing.queues().len(), 5);
}

#[test]
fn a_route_to_an_unknown_queue_names_the_route() {
    let error = Config::from_toml("[routes]\nsend_campaign = \"mail\"\n").unwrap_err();
    assert!(
        error.to_string().contains("routes.send_campaign"),
        "{error}"
    );
}

#[test]
fn smtp_urls_name_host_port_credentials_and_tls() {
    let relay =
        RelaySettings::from_url("smtp://news%40vs:p%3Ass@mail.example.com:587?tls=starttls")
            .unwrap();
    assert_eq!(relay.host, "mail.example.com");
    assert_eq!(relay.port, Some(587));
    assert_eq!(relay.tls, "starttls");
    assert_eq!(relay.username.as_deref(), Some("news@vs"));
    assert_eq!(relay.password().unwrap().as_deref(), Some("p:ss"));
    assert!(
        !format!("{relay:?}").contains("p:ss"),
        "the password is never printed"
    );
    assert_eq!(
        RelaySettings::from_url("smtps://relay:465").unwrap().tls,
        "tls"
    );
    assert_eq!(
        RelaySettings::from_url("smtp://127.0.0.1:2525")
            .unwrap()
            .tls,
        "none"
    );
    assert!(RelaySettings::from_url("http://relay").is_err());
    assert!(RelaySettings::from_url("smtp://relay?pool=3").is_err());
    let relay = RelaySettings::from_url("smtp://relay?max_connections=3&rate=50").unwrap();
    assert_eq!((relay.max_connections, relay.rate), (3, 50));
    assert_eq!(relay.username, None);
}

#[test]
fn unknown_keys_are_refused() {
    let error = Config::from_toml("[coordinator]\nlisten_on = \"0.0.0.0:1\"\n").unwrap_err();
    assert!(error.to_string().contains("listen_on"), "{error}");
}

#[test]
fn dns_and_validation_sections_read_from_the_file_and_are_checked() {
    let config = Config::from_toml(
        "[dns]\nnameservers = [\"127.0.0.1:5353\"]\ntimeout = \"2s\"\n[validation]\nrole_accounts = [\"team\"]\n",
    )
    .unwrap();
    assert_eq!(config.dns.nameservers, vec!["127.0.0.1:5353".to_owned()]);
    assert_eq!(config.dns.timeout, std::time::Duration::from_secs(2));
    assert_eq!(config.validation.role_accounts, vec!["team".to_owned()]);
    let error = Config::from_toml("[dns]\nattempts = 0\n").unwrap_err();
    assert!(error.to_string().contains("dns.attempts"), "{error}");
}

#[test]
fn rate_limits_read_as_celery_writes_them_and_a_bad_one_is_named() {
    let config = Config::from_toml(
        "[rate_limits]\n\"domain:gmail.com\" = \"20/s\"\n\n[tasks.nightly_report]\nrate_limit = \"60/m\"\n",
    )
    .unwrap();
    let limits = config.rate_limits().unwrap();
    let rate = |key: &str| limits.rate_for(key).map(|rate| rate.value());
    assert_eq!(rate("domain:gmail.com"), Some(20.0));
    assert_eq!(rate("task:nightly_report"), Some(1.0));
    assert_eq!(rate("domain:mail.ru"), None);

    let error = Config::from_toml("[rate_limits]\n\"domain:x\" = \"ten per second\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rate_limits.\"domain:x\"") && error.contains("ten per second"),
        "{error}"
    );
    let error = Config::from_toml("[tasks.noop]\nrate_limit = \"0/s\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tasks.noop.rate_limit") && error.contains("more than zero"),
        "{error}"
    );
}

#[test]
fn a_names_priority_defaults_for_transactional_mail_and_an_out_of_range_one_is_named() {
    let name = |text: &str| crate::domain::TaskName::parse("name", text).unwrap();
    let routing = Config::default().routing().unwrap();
    let priority = |routing: &crate::config::Routing, task: &str| {
        routing.policy(&name(task)).priority.map(|p| p.value())
    };
    assert_eq!(priority(&routing, "send_single_email"), Some(9));
    assert_eq!(priority(&routing, "send_email_batch"), None);
    // A section of one's own for the name keeps the seed's priority unless it sets one.
    let config = Config::from_toml("[tasks.send_single_email]\nmax_retries = 5\n").unwrap();
    assert_eq!(
        priority(&config.routing().unwrap(), "send_single_email"),
        Some(9)
    );
    let error = Config::from_toml("[tasks.noop]\npriority = 300\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("tasks.noop.priority"), "{error}");
}
