//! Tree events and progress reports (what `StreamProgress` sends) and stored records (what
//! `ListRecords` answers).

use chrono::Utc;

use super::primitives::{state_from_pb, state_to_pb, timestamp_from_pb, timestamp_to_pb};
use crate::domain::{
    Aggregate, JsonText, ProgressReport, RecordEntry, StoredRecord, TaskId, TreeEvent,
    TreeEventKind, ValidationError,
};
use crate::grpc::pb;

pub(super) fn progress_to_pb(progress: &ProgressReport) -> pb::Progress {
    pb::Progress {
        done: progress.done,
        total: progress.total,
        message: progress.message.clone(),
    }
}

fn aggregate_to_pb(aggregate: &Aggregate) -> pb::Aggregate {
    pb::Aggregate {
        tasks_total: aggregate.tasks_total,
        tasks_finished: aggregate.tasks_finished,
        tasks_by_state: aggregate
            .tasks_by_state
            .iter()
            .map(|(state, count)| (state.clone(), *count))
            .collect(),
        records_by_status: aggregate
            .records_by_status
            .iter()
            .map(|(status, count)| (status.clone(), *count))
            .collect(),
        progress: Some(progress_to_pb(&aggregate.progress)),
    }
}

/// A tree event as a progress stream sends it.
pub fn tree_event_to_pb(event: TreeEvent) -> pb::StreamProgressResponse {
    use pb::stream_progress_response::Event;
    let kind = match event.kind {
        TreeEventKind::StateChanged {
            task_id,
            state,
            error,
        } => Event::StateChanged(pb::StateChanged {
            task_id: task_id.to_string(),
            state: state_to_pb(state).into(),
            error: error.map(|(kind, message)| pb::TaskError { kind, message }),
        }),
        TreeEventKind::ProgressUpdated { task_id, progress } => {
            Event::ProgressUpdated(pb::ProgressUpdated {
                task_id: task_id.to_string(),
                progress: Some(progress_to_pb(&progress)),
            })
        }
        TreeEventKind::TreeUpdated {
            tasks_submitted,
            tasks_finished,
            records_added,
            message,
        } => Event::TreeUpdated(pb::TreeUpdated {
            tasks_submitted,
            tasks_finished,
            records_added,
            message,
        }),
        TreeEventKind::TreeFinished { root_state } => Event::TreeFinished(pb::TreeFinished {
            root_state: state_to_pb(root_state).into(),
        }),
    };
    pb::StreamProgressResponse {
        sequence: event.sequence,
        root_id: event.root_id.to_string(),
        at: Some(timestamp_to_pb(event.at)),
        event: Some(kind),
        aggregate: Some(aggregate_to_pb(&event.aggregate)),
    }
}

fn progress_from_pb(progress: Option<pb::Progress>) -> ProgressReport {
    progress
        .map(|progress| ProgressReport {
            done: progress.done,
            total: progress.total,
            message: progress.message,
        })
        .unwrap_or_default()
}

/// A tree event as a client reads it.
pub fn tree_event_from_pb(event: pb::StreamProgressResponse) -> Result<TreeEvent, ValidationError> {
    use pb::stream_progress_response::Event;
    let kind = match event.event {
        Some(Event::StateChanged(changed)) => TreeEventKind::StateChanged {
            task_id: TaskId::parse("state_changed.task_id", &changed.task_id)?,
            state: state_from_pb("state_changed.state", changed.state)?,
            error: changed.error.map(|error| (error.kind, error.message)),
        },
        Some(Event::ProgressUpdated(updated)) => TreeEventKind::ProgressUpdated {
            task_id: TaskId::parse("progress_updated.task_id", &updated.task_id)?,
            progress: progress_from_pb(updated.progress),
        },
        Some(Event::TreeUpdated(updated)) => TreeEventKind::TreeUpdated {
            tasks_submitted: updated.tasks_submitted,
            tasks_finished: updated.tasks_finished,
            records_added: updated.records_added,
            message: updated.message,
        },
        Some(Event::TreeFinished(finished)) => TreeEventKind::TreeFinished {
            root_state: state_from_pb("tree_finished.root_state", finished.root_state)?,
        },
        None => return Err(ValidationError::new("event", "is empty")),
    };
    let aggregate = event.aggregate.unwrap_or_default();
    Ok(TreeEvent {
        sequence: event.sequence,
        root_id: TaskId::parse("root_id", &event.root_id)?,
        at: event
            .at
            .map(|at| timestamp_from_pb("at", at))
            .transpose()?
            .unwrap_or_else(Utc::now),
        kind,
        aggregate: Aggregate {
            tasks_total: aggregate.tasks_total,
            tasks_finished: aggregate.tasks_finished,
            tasks_by_state: aggregate.tasks_by_state.into_iter().collect(),
            records_by_status: aggregate.records_by_status.into_iter().collect(),
            progress: progress_from_pb(aggregate.progress),
        },
    })
}

/// A stored record as a client reads it.
pub fn record_to_pb(record: StoredRecord) -> pb::Record {
    pb::Record {
        task_id: record.task_id.to_string(),
        root_id: record.root_id.to_string(),
        kind: record.entry.kind,
        key: record.entry.key,
        status: record.entry.status,
        data_json: record
            .entry
            .data
            .map(JsonText::into_string)
            .unwrap_or_default(),
        created_at: Some(timestamp_to_pb(record.created_at)),
        updated_at: Some(timestamp_to_pb(record.updated_at)),
    }
}

/// A record as the coordinator answered it.
pub fn record_from_pb(record: pb::Record) -> Result<StoredRecord, ValidationError> {
    let moment = |field: &str, timestamp: Option<prost_types::Timestamp>| {
        timestamp
            .ok_or_else(|| ValidationError::new(field, "is missing"))
            .and_then(|timestamp| timestamp_from_pb(field, timestamp))
    };
    Ok(StoredRecord {
        task_id: TaskId::parse("record.task_id", &record.task_id)?,
        root_id: TaskId::parse("record.root_id", &record.root_id)?,
        entry: RecordEntry {
            kind: record.kind,
            key: record.key,
            status: record.status,
            data: if record.data_json.is_empty() {
                None
            } else {
                Some(JsonText::parse(
                    "record.data_json",
                    &record.data_json,
                    usize::MAX,
                )?)
            },
        },
        created_at: moment("record.created_at", record.created_at)?,
        updated_at: moment("record.updated_at", record.updated_at)?,
    })
}
