//! Task trees and their events: what a progress stream shows.
//!
//! A tree is a root task and its descendants. Its events are numbered per root. Which events to
//! write is decided here, from what was last reported and what is observed now, so both stores
//! (and the events synthesized for a root that never became a tree) follow one rule.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{ProgressReport, TaskId, TaskState};

/// The state of a tree at one moment, carried by every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// Tasks in the tree, root included.
    pub tasks_total: u64,
    /// Tasks in a terminal state.
    pub tasks_finished: u64,
    /// Tasks by state name.
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Records by status.
    pub records_by_status: BTreeMap<String, u64>,
    /// The sum of every task's latest progress; the message is the latest one reported.
    pub progress: ProgressReport,
}

impl Aggregate {
    /// How many tasks have not finished.
    pub fn unfinished(&self) -> u64 {
        self.tasks_total.saturating_sub(self.tasks_finished)
    }

    /// All records.
    pub fn records_total(&self) -> u64 {
        self.records_by_status.values().sum()
    }
}

/// What happened, as one event tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEventKind {
    /// The root changed state.
    StateChanged {
        /// The task (the root).
        task_id: TaskId,
        /// Its new state.
        state: TaskState,
        /// The error, for a failure.
        error: Option<(String, String)>,
    },
    /// The root reported progress.
    ProgressUpdated {
        /// The task (the root).
        task_id: TaskId,
        /// What it reported.
        progress: ProgressReport,
    },
    /// The tree changed since the previous event.
    TreeUpdated {
        /// Tasks added.
        tasks_submitted: u64,
        /// Tasks finished.
        tasks_finished: u64,
        /// Records added.
        records_added: u64,
        /// The latest progress message.
        message: String,
    },
    /// Every task of the tree has finished.
    TreeFinished {
        /// The root's final state.
        root_state: TaskState,
    },
}

/// One event of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEvent {
    /// Its number in the tree, from 1.
    pub sequence: u64,
    /// The tree's root.
    pub root_id: TaskId,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: TreeEventKind,
    /// The tree as of this event.
    pub aggregate: Aggregate,
}

/// What the last event of a tree reported, kept with the tree to compare against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// The root's state.
    pub root_state: Option<TaskState>,
    /// The root's own progress.
    pub root_progress: Option<ProgressReport>,
    /// The aggregate.
    pub aggregate: Aggregate,
}

/// What the store sees in a tree now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The root.
    pub root_id: TaskId,
    /// The root's state.
    pub root_state: TaskState,
    /// The root's error, if it failed.
    pub root_error: Option<(String, String)>,
    /// The root's own progress, if it reported any.
    pub root_progress: Option<ProgressReport>,
    /// The whole tree's aggregate, root included.
    pub aggregate: Aggregate,
}

/// The events to write for a tree, and what they leave reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// New events, in order.
    pub events: Vec<TreeEventKind>,
    /// What is reported after them.
    pub reported: Reported,
    /// Whether the last event finishes the tree.
    pub finished: bool,
}

/// The part of an aggregate that is not the root's own: descendants and every record.
#[derive(Debug, PartialEq, Eq)]
struct Others {
    tasks: u64,
    finished: u64,
    done: u64,
    total: u64,
    records: BTreeMap<String, u64>,
}

fn others(
    aggregate: &Aggregate,
    root_state: Option<TaskState>,
    root_progress: Option<&ProgressReport>,
) -> Others {
    let root_finished = root_state.is_some_and(|state| state.is_terminal());
    Others {
        tasks: aggregate.tasks_total.saturating_sub(1),
        finished: aggregate
            .tasks_finished
            .saturating_sub(u64::from(root_finished)),
        done: aggregate
            .progress
            .done
            .saturating_sub(root_progress.map_or(0, |progress| progress.done)),
        total: aggregate
            .progress
            .total
            .saturating_sub(root_progress.map_or(0, |progress| progress.total)),
        records: aggregate.records_by_status.clone(),
    }
}

/// Decides which events tell the change from `reported` to `observed`: the root's state and its
/// own progress when they changed, one summary when anything else changed (descendants, their
/// progress, records), and the end of the tree once the root and every other task finished.
pub fn plan_events(reported: &Reported, observed: &Observed) -> Plan {
    let mut events = Vec::new();
    if reported.root_state != Some(observed.root_state) {
        events.push(TreeEventKind::StateChanged {
            task_id: observed.root_id,
            state: observed.root_state,
            error: observed.root_error.clone(),
        });
    }
    if let Some(progress) = &observed.root_progress
        && reported.root_progress.as_ref() != Some(progress)
    {
        events.push(TreeEventKind::ProgressUpdated {
            task_id: observed.root_id,
            progress: progress.clone(),
        });
    }
    let before = others(
        &reported.aggregate,
        reported.root_state,
        reported.root_progress.as_ref(),
    );
    let now = others(
        &observed.aggregate,
        Some(observed.root_state),
        observed.root_progress.as_ref(),
    );
    if before != now {
        let records_before: u64 = before.records.values().sum();
        let records_now: u64 = now.records.values().sum();
        events.push(TreeEventKind::TreeUpdated {
            tasks_submitted: now.tasks.saturating_sub(before.tasks),
            tasks_finished: now.finished.saturating_sub(before.finished),
            records_added: records_now.saturating_sub(records_before),
            message: observed.aggregate.progress.message.clone(),
        });
    }
    let finished = observed.root_state.is_terminal() && observed.aggregate.unfinished() == 0;
    if finished {
        events.push(TreeEventKind::TreeFinished {
            root_state: observed.root_state,
        });
    }
    Plan {
        events,
        reported: Reported {
            root_state: Some(observed.root_state),
            root_progress: observed.root_progress.clone(),
            aggregate: observed.aggregate.clone(),
        },
        finished,
    }
}

/// The aggregate of a tree of one task in `state`.
pub fn single_task_aggregate(state: TaskState) -> Aggregate {
    Aggregate {
        tasks_total: 1,
        tasks_finished: u64::from(state.is_terminal()),
        tasks_by_state: BTreeMap::from([(state.as_str().to_owned(), 1)]),
        ..Aggregate::default()
    }
}

/// The events of a root that never became a tree, derived from its row: it ran, it ended, the
/// tree finished. Numbered as a tree opened on the root would number them.
pub fn synthesized_events(
    root_id: TaskId,
    state: TaskState,
    error: Option<(String, String)>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
) -> Vec<TreeEvent> {
    let mut events = Vec::new();
    let single = single_task_aggregate;
    if let Some(started_at) = started_at {
        events.push(TreeEvent {
            sequence: 1,
            root_id,
            at: started_at,
            kind: TreeEventKind::StateChanged {
                task_id: root_id,
                state: TaskState::Running,
                error: None,
            },
            aggregate: single(TaskState::Running),
        });
    }
    if state.is_terminal() {
        let at = finished_at.unwrap_or_else(Utc::now);
        let next = events.len() as u64 + 1;
        events.push(TreeEvent {
            sequence: next,
            root_id,
            at,
            kind: TreeEventKind::StateChanged {
                task_id: root_id,
                state,
                error,
            },
            aggregate: single(state),
        });
        events.push(TreeEvent {
            sequence: next + 1,
            root_id,
            at,
            kind: TreeEventKind::TreeFinished { root_state: state },
            aggregate: single(state),
        });
    }
    events
}

/// What a tree reports when it opens on its running root: the first event, "running".
pub fn opening(root_id: TaskId) -> (TreeEventKind, Reported) {
    let aggregate = single_task_aggregate(TaskState::Running);
    (
        TreeEventKind::StateChanged {
            task_id: root_id,
            state: TaskState::Running,
            error: None,
        },
        Reported {
            root_state: Some(TaskState::Running),
            root_progress: None,
            aggregate,
        },
    )
}

/// A progress report as JSON: `done`, `total` and `message`.
pub fn progress_to_json(progress: &ProgressReport) -> Value {
    json!({"done": progress.done, "total": progress.total, "message": progress.message})
}

/// Reads a progress report written by `progress_to_json`; missing numbers read as 0.
pub fn progress_from_json(value: Option<&Value>) -> Option<ProgressReport> {
    let value = value?.as_object()?;
    Some(ProgressReport {
        done: value.get("done").and_then(Value::as_u64).unwrap_or(0),
        total: value.get("total").and_then(Value::as_u64).unwrap_or(0),
        message: value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A tree event as JSON: the shape the stores keep and `celeritas follow --json` prints.
pub fn event_to_json(event: &TreeEventKind) -> Value {
    match event {
        TreeEventKind::StateChanged {
            task_id,
            state,
            error,
        } => json!({
            "kind": "state_changed",
            "task_id": task_id.to_string(),
            "state": state.as_str(),
            "error": error.as_ref().map(|(kind, message)| json!({"kind": kind, "message": message})),
        }),
        TreeEventKind::ProgressUpdated { task_id, progress } => json!({
            "kind": "progress_updated",
            "task_id": task_id.to_string(),
            "progress": progress_to_json(progress),
        }),
        TreeEventKind::TreeUpdated {
            tasks_submitted,
            tasks_finished,
            records_added,
            message,
        } => json!({
            "kind": "tree_updated",
            "tasks_submitted": tasks_submitted,
            "tasks_finished": tasks_finished,
            "records_added": records_added,
            "message": message,
        }),
        TreeEventKind::TreeFinished { root_state } => json!({
            "kind": "tree_finished",
            "root_state": root_state.as_str(),
        }),
    }
}

/// Reads an event written by `event_to_json`; `None` for a value celeritas did not write.
pub fn event_from_json(value: &Value) -> Option<TreeEventKind> {
    let task_id = || -> Option<TaskId> {
        value["task_id"]
            .as_str()
            .and_then(|id| TaskId::parse("task_id", id).ok())
    };
    Some(match value["kind"].as_str()? {
        "state_changed" => TreeEventKind::StateChanged {
            task_id: task_id()?,
            state: TaskState::from_name(value["state"].as_str()?)?,
            error: value["error"].as_object().map(|error| {
                (
                    error["kind"].as_str().unwrap_or_default().to_owned(),
                    error["message"].as_str().unwrap_or_default().to_owned(),
                )
            }),
        },
        "progress_updated" => TreeEventKind::ProgressUpdated {
            task_id: task_id()?,
            progress: progress_from_json(value.get("progress"))?,
        },
        "tree_updated" => TreeEventKind::TreeUpdated {
            tasks_submitted: value["tasks_submitted"].as_u64().unwrap_or(0),
            tasks_finished: value["tasks_finished"].as_u64().unwrap_or(0),
            records_added: value["records_added"].as_u64().unwrap_or(0),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        },
        "tree_finished" => TreeEventKind::TreeFinished {
            root_state: TaskState::from_name(value["root_state"].as_str()?)?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let root = TaskId::generate();
        let events = [
            TreeEventKind::StateChanged {
                task_id: root,
                state: TaskState::Failed,
                error: Some(("smtp".into(), "550".into())),
            },
            TreeEventKind::ProgressUpdated {
                task_id: root,
                progress: ProgressReport {
                    done: 3,
                    total: 9,
                    message: "m".into(),
                },
            },
            TreeEventKind::TreeUpdated {
                tasks_submitted: 1,
                tasks_finished: 2,
                records_added: 3,
                message: "x".into(),
            },
            TreeEventKind::TreeFinished {
                root_state: TaskState::Succeeded,
            },
        ];
        for event in events {
            assert_eq!(event_from_json(&event_to_json(&event)), Some(event));
        }
    }

    fn observed(root: TaskId, state: TaskState, aggregate: Aggregate) -> Observed {
        Observed {
            root_id: root,
            root_state: state,
            root_error: None,
            root_progress: None,
            aggregate,
        }
    }

    fn tree(total: u64, finished: u64) -> Aggregate {
        Aggregate {
            tasks_total: total,
            tasks_finished: finished,
            ..Aggregate::default()
        }
    }

    #[test]
    fn nothing_changed_means_no_event() {
        let root = TaskId::generate();
        let (_, reported) = opening(root);
        let plan = plan_events(
            &reported,
            &observed(root, TaskState::Running, reported.aggregate.clone()),
        );
        assert!(plan.events.is_empty());
        assert!(!plan.finished);
    }

    #[test]
    fn children_make_one_summary_with_deltas() {
        let root = TaskId::generate();
        let (_, reported) = opening(root);
        let plan = plan_events(
            &reported,
            &observed(root, TaskState::Running, tree(1_001, 400)),
        );
        assert_eq!(
            plan.events,
            vec![TreeEventKind::TreeUpdated {
                tasks_submitted: 1_000,
                tasks_finished: 400,
                records_added: 0,
                message: String::new(),
            }]
        );
    }

    #[test]
    fn a_root_finishing_alone_is_its_state_change_and_the_end_not_a_summary() {
        let root = TaskId::generate();
        let (_, reported) = opening(root);
        let plan = plan_events(&reported, &observed(root, TaskState::Succeeded, tree(1, 1)));
        assert_eq!(plan.events.len(), 2, "{:?}", plan.events);
        assert!(matches!(
            plan.events[0],
            TreeEventKind::StateChanged {
                state: TaskState::Succeeded,
                ..
            }
        ));
        assert!(matches!(
            plan.events[1],
            TreeEventKind::TreeFinished {
                root_state: TaskState::Succeeded
            }
        ));
        assert!(plan.finished);
    }

    #[test]
    fn the_tree_ends_only_when_every_task_has() {
        let root = TaskId::generate();
        let (_, reported) = opening(root);
        let waiting = plan_events(
            &reported,
            &observed(root, TaskState::Succeeded, tree(11, 6)),
        );
        assert!(!waiting.finished);
        assert!(matches!(
            waiting.events.last(),
            Some(TreeEventKind::TreeUpdated {
                tasks_finished: 5,
                ..
            })
        ));
        let done = plan_events(
            &waiting.reported,
            &observed(root, TaskState::Succeeded, tree(11, 11)),
        );
        assert!(done.finished);
        assert_eq!(
            done.events.len(),
            2,
            "a summary of the last children, then the end"
        );
    }

    #[test]
    fn synthesized_events_number_like_an_opened_tree() {
        let root = TaskId::generate();
        let now = Utc::now();
        let running = synthesized_events(root, TaskState::Running, None, Some(now), None);
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].kind, opening(root).0);
        let done = synthesized_events(
            root,
            TaskState::Failed,
            Some(("x".into(), "y".into())),
            Some(now),
            Some(now),
        );
        assert_eq!(
            done.iter().map(|event| event.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(matches!(
            done[2].kind,
            TreeEventKind::TreeFinished {
                root_state: TaskState::Failed
            }
        ));
        let never_started = synthesized_events(root, TaskState::Cancelled, None, None, Some(now));
        assert_eq!(never_started[0].sequence, 1);
    }
}
