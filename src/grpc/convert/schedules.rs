//! Periodic schedules, as clients send them and as they read them back.

use super::primitives::{
    UNLIMITED, duration_from_pb, duration_to_pb, optional_task_id, timestamp_from_pb,
    timestamp_to_pb,
};
use super::tasks::{task_spec_from_pb, task_spec_to_pb};
use crate::domain::{Schedule, ScheduleSource, Timing, ValidationError, parse_schedule_name};
use crate::grpc::pb;

/// A schedule as clients read it.
pub fn schedule_to_pb(schedule: Schedule) -> pb::Schedule {
    let timing = match &schedule.timing {
        Timing::Every(interval) => pb::schedule::Timing::Every(duration_to_pb(*interval)),
        Timing::Cron { expression, .. } => pb::schedule::Timing::Cron(expression.clone()),
    };
    pb::Schedule {
        timezone: schedule.timing.timezone_name().to_owned(),
        name: schedule.name,
        task: Some(task_spec_to_pb(&schedule.task)),
        timing: Some(timing),
        paused: schedule.paused,
        next_run_at: schedule.next_run_at.map(timestamp_to_pb),
        last_run_at: schedule.last_run_at.map(timestamp_to_pb),
        last_task_id: schedule
            .last_task_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// Parses a schedule a client sends (server-set fields are ignored); fields are named
/// `schedule.…`.
pub fn schedule_from_pb(
    schedule: pb::Schedule,
    max_args_bytes: usize,
) -> Result<Schedule, ValidationError> {
    let name = parse_schedule_name("schedule.name", &schedule.name)?;
    let task = schedule
        .task
        .ok_or_else(|| ValidationError::new("schedule.task", "is required"))?;
    let task =
        task_spec_from_pb(task, max_args_bytes).map_err(|error| error.within("schedule.task"))?;
    let timing = match schedule.timing {
        Some(pb::schedule::Timing::Every(every)) => {
            Timing::every("schedule.every", duration_from_pb("schedule.every", every)?)?
        }
        Some(pb::schedule::Timing::Cron(cron)) => Timing::cron(
            "schedule.cron",
            &cron,
            "schedule.timezone",
            &schedule.timezone,
        )?,
        None => {
            return Err(ValidationError::new(
                "schedule.timing",
                "is required: every or cron",
            ));
        }
    };
    Ok(Schedule {
        name,
        task,
        timing,
        paused: schedule.paused,
        next_run_at: None,
        last_run_at: None,
        last_task_id: None,
        source: ScheduleSource::Api,
    })
}

/// A schedule as a client reads it.
pub fn schedule_from_stored_pb(schedule: pb::Schedule) -> Result<Schedule, ValidationError> {
    let next_run_at = schedule
        .next_run_at
        .map(|at| timestamp_from_pb("schedule.next_run_at", at))
        .transpose()?;
    let last_run_at = schedule
        .last_run_at
        .map(|at| timestamp_from_pb("schedule.last_run_at", at))
        .transpose()?;
    let last_task_id = optional_task_id("schedule.last_task_id", &schedule.last_task_id)?;
    let mut parsed = schedule_from_pb(schedule, UNLIMITED)?;
    parsed.next_run_at = next_run_at;
    parsed.last_run_at = last_run_at;
    parsed.last_task_id = last_task_id;
    Ok(parsed)
}
