//! The worker protocol, worker to coordinator: what a worker sends on its stream (hello, credit,
//! starts, results, children, records, releases, control replies), parsed by the coordinator
//! with refusals that say how the stream answers them.

use chrono::Utc;

use super::primitives::{
    UNLIMITED, duration_from_pb, duration_to_pb, lease_token_from_pb, lease_token_to_pb,
    timestamp_from_pb, timestamp_to_pb,
};
use super::tasks::{task_spec_from_pb, task_spec_to_pb};
use crate::domain::{
    Failure, Hello, JsonText, MAX_FAILURE_KIND_BYTES, MAX_FAILURE_MESSAGE_BYTES,
    MAX_HOSTNAME_BYTES, MAX_NOTE_BYTES, MAX_VERSION_BYTES, Outcome, ProgressReport, QueueName,
    RecordEntry, Refusal, TaskName, ValidationError, WorkerId, WorkerMessage, WorkerStats,
    check_text, parse_short_name, sanitize,
};
use crate::grpc::pb;

/// Parses a message from a worker.
pub fn worker_message_from_pb(request: pb::ConnectRequest) -> Result<WorkerMessage, Refusal> {
    use pb::connect_request::Message;
    let message = request
        .message
        .ok_or_else(|| ValidationError::new("message", "is empty"))?;
    Ok(match message {
        // The worker service opens batches before converting their messages, and refuses one
        // inside another.
        Message::Batch(_) => {
            return Err(ValidationError::new("batch", "a batch may not hold a batch").into());
        }
        Message::Hello(hello) => WorkerMessage::Hello(hello_from_pb(hello)?),
        Message::Credit(credit) => WorkerMessage::Credit(credit.grant),
        Message::Started(started) => WorkerMessage::Started {
            token: lease_token_from_pb("started.lease", started.lease)?,
            at: started
                .started_at
                .map(|at| timestamp_from_pb("started.started_at", at))
                .transpose()?
                .unwrap_or_else(Utc::now),
        },
        Message::Progress(progress) => WorkerMessage::Progress {
            token: lease_token_from_pb("progress.lease", progress.lease)?,
            report: ProgressReport {
                done: progress.done,
                total: progress.total,
                message: sanitize(&progress.message, MAX_NOTE_BYTES).into_owned(),
            },
        },
        Message::Result(result) => {
            let token = lease_token_from_pb("result.lease", result.lease)?;
            let outcome = match result.outcome {
                // A result the store cannot hold fails its attempt, naming why: refusing the
                // message instead would have the worker send it again for ever.
                Some(pb::task_result::Outcome::Success(success)) => match JsonText::parse(
                    "result.success.result_json",
                    &success.result_json,
                    UNLIMITED,
                ) {
                    Ok(result) => Outcome::Succeeded(result),
                    Err(error) => Outcome::Failed(Failure::invalid_result(&error)),
                },
                // Foreign text (an exception's message): made storable, never refused.
                Some(pb::task_result::Outcome::Failure(failure)) => Outcome::Failed(Failure {
                    kind: sanitize(&failure.kind, MAX_FAILURE_KIND_BYTES).into_owned(),
                    message: sanitize(&failure.message, MAX_FAILURE_MESSAGE_BYTES).into_owned(),
                    retryable: failure.retryable,
                    retry_after: failure
                        .retry_after
                        .map(|after| duration_from_pb("result.failure.retry_after", after))
                        .transpose()?,
                }),
                None => {
                    return Err(ValidationError::new(
                        "result.outcome",
                        "is required: success or failure",
                    )
                    .into());
                }
            };
            WorkerMessage::Result { token, outcome }
        }
        Message::Heartbeat(heartbeat) => WorkerMessage::Heartbeat(
            heartbeat
                .stats
                .map(|stats| -> Result<WorkerStats, ValidationError> {
                    Ok(WorkerStats {
                        processed: stats.processed.into_iter().collect(),
                        failed: stats.failed.into_iter().collect(),
                        memory_rss_bytes: stats.memory_rss_bytes,
                        started_at: stats
                            .started_at
                            .map(|at| timestamp_from_pb("heartbeat.stats.started_at", at))
                            .transpose()?,
                    })
                })
                .transpose()?,
        ),
        Message::SubmitChildren(submit) => {
            let request_id = submit.request_id;
            let token = lease_token_from_pb("submit_children.lease", submit.lease)?;
            let refused = |error| Refusal::Children { request_id, error };
            WorkerMessage::SubmitChildren {
                request_id,
                token,
                children: submit
                    .children
                    .into_iter()
                    .enumerate()
                    .map(|(index, spec)| {
                        task_spec_from_pb(spec, UNLIMITED).map_err(|error| {
                            error.within(&format!("submit_children.children[{index}]"))
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map_err(refused)?,
                callback: submit
                    .callback
                    .map(|spec| {
                        task_spec_from_pb(spec, UNLIMITED)
                            .map_err(|error| error.within("submit_children.callback"))
                    })
                    .transpose()
                    .map_err(refused)?,
            }
        }
        Message::SlowDown(slow) => WorkerMessage::SlowDown {
            token: lease_token_from_pb("slow_down.lease", slow.lease)?,
            // Checked where it is used: a bad key is ignored there, the stream goes on.
            key: slow.key,
        },
        Message::EmitRecords(emit) => {
            let token = lease_token_from_pb("emit_records.lease", emit.lease)?;
            WorkerMessage::EmitRecords {
                token,
                records: emit
                    .records
                    .iter()
                    .enumerate()
                    .map(|(index, record)| {
                        RecordEntry::parse(
                            &format!("emit_records.records[{index}]"),
                            &record.kind,
                            &record.key,
                            &record.status,
                            &record.data_json,
                        )
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|error| Refusal::Records { token, error })?,
            }
        }
        Message::QueryRecords(query) => WorkerMessage::QueryRecords {
            request_id: query.request_id,
            token: lease_token_from_pb("query_records.lease", query.lease)?,
            kind: parse_short_name("query_records.kind", &query.kind)?,
            status: if query.status.is_empty() {
                None
            } else {
                Some(parse_short_name("query_records.status", &query.status)?)
            },
        },
        Message::Release(release) => WorkerMessage::Release(
            release
                .leases
                .into_iter()
                .enumerate()
                .map(|(index, token)| {
                    lease_token_from_pb(&format!("release.leases[{index}]"), Some(token))
                })
                .collect::<Result<_, _>>()?,
        ),
        Message::ControlReply(reply) => WorkerMessage::ControlReply {
            request_id: reply.request_id,
            detail: sanitize(&reply.detail, MAX_NOTE_BYTES).into_owned(),
        },
    })
}

/// The most task names a hello may register; every claim for the worker probes each.
pub const MAX_HELLO_TASK_NAMES: usize = 1_000;

/// A hello's task names, parsed, each once, in the order given.
fn distinct_task_names(names: &[String]) -> Result<Vec<TaskName>, ValidationError> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut distinct = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let name = TaskName::parse(&format!("hello.task_names[{index}]"), name)?;
        if seen.insert(name.clone()) {
            distinct.push(name);
        }
    }
    Ok(distinct)
}

fn hello_from_pb(hello: pb::Hello) -> Result<Hello, ValidationError> {
    if hello.queues.is_empty() {
        return Err(ValidationError::new(
            "hello.queues",
            "at least one queue is required",
        ));
    }
    if hello.task_names.is_empty() {
        return Err(ValidationError::new(
            "hello.task_names",
            "at least one task name is required: a worker is leased only the tasks it registered",
        ));
    }
    if hello.task_names.len() > MAX_HELLO_TASK_NAMES {
        return Err(ValidationError::new(
            "hello.task_names",
            format!("at most {MAX_HELLO_TASK_NAMES} task names"),
        ));
    }
    if hello.concurrency == 0 {
        return Err(ValidationError::new(
            "hello.concurrency",
            "must be at least 1",
        ));
    }
    if hello.prefetch_multiplier == 0 {
        return Err(ValidationError::new(
            "hello.prefetch_multiplier",
            "must be at least 1",
        ));
    }
    check_text("hello.hostname", &hello.hostname, MAX_HOSTNAME_BYTES)?;
    check_text("hello.version", &hello.version, MAX_VERSION_BYTES)?;
    Ok(Hello {
        worker_id: WorkerId::parse("hello.worker_id", &hello.worker_id)?,
        hostname: hello.hostname,
        pid: hello.pid,
        queues: hello
            .queues
            .iter()
            .enumerate()
            .map(|(index, queue)| QueueName::parse(&format!("hello.queues[{index}]"), queue))
            .collect::<Result<_, _>>()?,
        concurrency: hello.concurrency,
        prefetch_multiplier: hello.prefetch_multiplier,
        task_names: distinct_task_names(&hello.task_names)?,
        version: hello.version,
        held_leases: hello
            .held_leases
            .into_iter()
            .enumerate()
            .map(|(index, token)| {
                lease_token_from_pb(&format!("hello.held_leases[{index}]"), Some(token))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A message to a coordinator, as a worker sends it.
pub fn worker_message_to_pb(message: WorkerMessage) -> pb::ConnectRequest {
    use pb::connect_request::Message;
    let message = match message {
        WorkerMessage::Hello(hello) => Message::Hello(pb::Hello {
            worker_id: hello.worker_id.to_string(),
            hostname: hello.hostname,
            pid: hello.pid,
            queues: hello.queues.iter().map(ToString::to_string).collect(),
            concurrency: hello.concurrency,
            prefetch_multiplier: hello.prefetch_multiplier,
            task_names: hello.task_names.iter().map(ToString::to_string).collect(),
            version: hello.version,
            // This side of the link reads one message at a time.
            accepts_batches: false,
            held_leases: hello
                .held_leases
                .into_iter()
                .map(lease_token_to_pb)
                .collect(),
        }),
        WorkerMessage::Credit(grant) => Message::Credit(pb::Credit { grant }),
        WorkerMessage::Started { token, at } => Message::Started(pb::TaskStarted {
            lease: Some(lease_token_to_pb(token)),
            started_at: Some(timestamp_to_pb(at)),
        }),
        WorkerMessage::Progress { token, report } => Message::Progress(pb::TaskProgress {
            lease: Some(lease_token_to_pb(token)),
            done: report.done,
            total: report.total,
            message: report.message,
        }),
        WorkerMessage::Result { token, outcome } => Message::Result(pb::TaskResult {
            lease: Some(lease_token_to_pb(token)),
            outcome: Some(match outcome {
                Outcome::Succeeded(result) => pb::task_result::Outcome::Success(pb::TaskSuccess {
                    result_json: result.into_string(),
                }),
                Outcome::Failed(failure) => pb::task_result::Outcome::Failure(pb::TaskFailure {
                    kind: failure.kind,
                    message: failure.message,
                    retryable: failure.retryable,
                    retry_after: failure.retry_after.map(duration_to_pb),
                }),
            }),
        }),
        WorkerMessage::Heartbeat(stats) => Message::Heartbeat(pb::Heartbeat {
            stats: stats.map(|stats| pb::WorkerStats {
                processed: stats.processed.into_iter().collect(),
                failed: stats.failed.into_iter().collect(),
                memory_rss_bytes: stats.memory_rss_bytes,
                started_at: stats.started_at.map(timestamp_to_pb),
            }),
        }),
        WorkerMessage::SubmitChildren {
            request_id,
            token,
            children,
            callback,
        } => Message::SubmitChildren(pb::SubmitChildren {
            request_id,
            lease: Some(lease_token_to_pb(token)),
            children: children.iter().map(task_spec_to_pb).collect(),
            callback: callback.as_ref().map(task_spec_to_pb),
        }),
        WorkerMessage::SlowDown { token, key } => Message::SlowDown(pb::SlowDown {
            lease: Some(lease_token_to_pb(token)),
            key,
        }),
        WorkerMessage::EmitRecords { token, records } => Message::EmitRecords(pb::EmitRecords {
            lease: Some(lease_token_to_pb(token)),
            records: records
                .into_iter()
                .map(|record| pb::RecordEntry {
                    kind: record.kind,
                    key: record.key,
                    status: record.status,
                    data_json: record.data.map(JsonText::into_string).unwrap_or_default(),
                })
                .collect(),
        }),
        WorkerMessage::QueryRecords {
            request_id,
            token,
            kind,
            status,
        } => Message::QueryRecords(pb::QueryRecords {
            request_id,
            lease: Some(lease_token_to_pb(token)),
            kind,
            status: status.unwrap_or_default(),
        }),
        WorkerMessage::Release(tokens) => Message::Release(pb::ReleaseLeases {
            leases: tokens.into_iter().map(lease_token_to_pb).collect(),
        }),
        WorkerMessage::ControlReply { request_id, detail } => {
            Message::ControlReply(pb::ControlReply { request_id, detail })
        }
    };
    pb::ConnectRequest {
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskId;

    #[test]
    fn a_hello_without_queues_is_refused() {
        let request = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                worker_id: "w1".to_owned(),
                concurrency: 1,
                prefetch_multiplier: 1,
                ..Default::default()
            })),
        };
        assert_eq!(stream_refusal(request).field, "hello.queues");
    }

    #[test]
    fn a_result_without_an_outcome_is_refused() {
        let request = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Result(pb::TaskResult {
                lease: Some(pb::LeaseToken {
                    task_id: TaskId::generate().to_string(),
                    attempt: 1,
                }),
                outcome: None,
            })),
        };
        assert_eq!(stream_refusal(request).field, "result.outcome");
    }

    fn stream_refusal(request: pb::ConnectRequest) -> ValidationError {
        match worker_message_from_pb(request) {
            Err(Refusal::Stream(error)) => error,
            other => panic!("expected the stream to be refused, got {other:?}"),
        }
    }

    fn lease() -> Option<pb::LeaseToken> {
        Some(pb::LeaseToken {
            task_id: TaskId::generate().to_string(),
            attempt: 1,
        })
    }

    #[test]
    fn an_unstorable_result_fails_its_attempt_and_foreign_text_is_made_storable() {
        let result = |outcome| pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Result(pb::TaskResult {
                lease: lease(),
                outcome: Some(outcome),
            })),
        };
        let success = result(pb::task_result::Outcome::Success(pb::TaskSuccess {
            result_json: r#"{"reply": "250\u0000ok"}"#.to_owned(),
        }));
        let Ok(WorkerMessage::Result {
            outcome: Outcome::Failed(failure),
            ..
        }) = worker_message_from_pb(success)
        else {
            panic!("an unstorable result must fail its attempt");
        };
        assert_eq!(failure.kind, "invalid_result");
        assert!(
            failure.message.contains("result.success.result_json"),
            "{failure:?}"
        );
        assert!(!failure.retryable);

        let failure = result(pb::task_result::Outcome::Failure(pb::TaskFailure {
            kind: "smtp\0".to_owned(),
            message: format!("550 no\0such user{}", "x".repeat(100_000)),
            retryable: false,
            retry_after: None,
        }));
        let Ok(WorkerMessage::Result {
            outcome: Outcome::Failed(failure),
            ..
        }) = worker_message_from_pb(failure)
        else {
            panic!("a failure is taken");
        };
        assert!(!failure.kind.contains('\0') && !failure.message.contains('\0'));
        assert!(failure.message.len() <= MAX_FAILURE_MESSAGE_BYTES);
        assert!(failure.message.starts_with("550 no\u{fffd}such user"));
    }

    #[test]
    fn bad_children_and_records_are_refused_without_ending_the_stream() {
        let children = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::SubmitChildren(
                pb::SubmitChildren {
                    request_id: 7,
                    lease: lease(),
                    children: vec![pb::TaskSpec {
                        name: "noop".to_owned(),
                        args_json: r#"["\u0000"]"#.to_owned(),
                        ..Default::default()
                    }],
                    callback: None,
                },
            )),
        };
        match worker_message_from_pb(children) {
            Err(Refusal::Children { request_id, error }) => {
                assert_eq!(request_id, 7);
                assert_eq!(error.field, "submit_children.children[0].args_json");
            }
            other => panic!("{other:?}"),
        }
        let records = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::EmitRecords(pb::EmitRecords {
                lease: lease(),
                records: vec![pb::RecordEntry {
                    kind: "delivery".to_owned(),
                    key: "a\0@example.com".to_owned(),
                    status: "delivered".to_owned(),
                    ..Default::default()
                }],
            })),
        };
        match worker_message_from_pb(records) {
            Err(Refusal::Records { error, .. }) => {
                assert_eq!(error.field, "emit_records.records[0].key");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hello_with_a_huge_or_nul_hostname_is_refused() {
        let hello = |hostname: String| pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                worker_id: "w1".to_owned(),
                hostname,
                queues: vec!["default".to_owned()],
                task_names: vec!["noop".to_owned()],
                concurrency: 1,
                prefetch_multiplier: 1,
                ..Default::default()
            })),
        };
        assert_eq!(
            stream_refusal(hello("h".repeat(70_000))).field,
            "hello.hostname"
        );
        assert_eq!(
            stream_refusal(hello("h\0".to_owned())).field,
            "hello.hostname"
        );
    }

    #[test]
    fn a_hello_registers_each_task_name_once_and_at_least_one() {
        let hello = |task_names: Vec<String>| pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                worker_id: "w1".to_owned(),
                queues: vec!["default".to_owned()],
                task_names,
                concurrency: 1,
                prefetch_multiplier: 1,
                ..Default::default()
            })),
        };
        assert_eq!(stream_refusal(hello(vec![])).field, "hello.task_names");
        let too_many = (0..=MAX_HELLO_TASK_NAMES)
            .map(|n| format!("t{n}"))
            .collect();
        assert_eq!(stream_refusal(hello(too_many)).field, "hello.task_names");
        assert_eq!(
            stream_refusal(hello(vec!["noop".to_owned(), " bad".to_owned()])).field,
            "hello.task_names[1]"
        );
        let names = ["noop", "reports.build", "noop"]
            .map(str::to_owned)
            .to_vec();
        match worker_message_from_pb(hello(names)) {
            Ok(WorkerMessage::Hello(hello)) => assert_eq!(
                hello
                    .task_names
                    .iter()
                    .map(TaskName::as_str)
                    .collect::<Vec<_>>(),
                ["noop", "reports.build"]
            ),
            other => panic!("expected a hello, got {other:?}"),
        }
    }
}
