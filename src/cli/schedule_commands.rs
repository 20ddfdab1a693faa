//! `schedules`: list, add, remove, pause and resume periodic schedules.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::table::{SCHEDULE_HEADER, moment, print_table, schedule_json, schedule_row};
use super::{CoordinatorAddress, parse_duration};
use crate::domain::{
    JsonText, QueueName, Schedule, ScheduleSource, TaskName, TaskSpec, Timing, parse_schedule_name,
};

/// `celeritas schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub command: SchedulesCommand,
    #[command(flatten)]
    pub coordinator: CoordinatorAddress,
}

/// What `celeritas schedules` does.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Lists every schedule.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Creates or replaces a schedule.
    Add {
        /// The schedule's name.
        name: String,
        /// The task each tick submits.
        #[arg(long)]
        task: String,
        /// Tick every this long (seconds, or `5m`).
        #[arg(long, value_parser = parse_duration, conflicts_with = "cron", required_unless_present = "cron")]
        every: Option<Duration>,
        /// Tick on this cron expression: five fields (minute hour day month weekday), six with
        /// seconds first, or seven with seconds first and a year last.
        #[arg(long)]
        cron: Option<String>,
        /// The IANA zone the cron expression is read in.
        #[arg(long, default_value = "UTC", requires = "cron")]
        timezone: String,
        /// The task's arguments, as JSON.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The task's queue (default: its route).
        #[arg(long)]
        queue: Option<String>,
    },
    /// Removes a schedule.
    Remove {
        /// The schedule's name.
        name: String,
    },
    /// Pauses a schedule.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resumes a paused schedule.
    Resume {
        /// The schedule's name.
        name: String,
    },
}

pub async fn schedules(args: SchedulesArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.coordinator.connect().await?;
    match args.command {
        SchedulesCommand::List { json } => {
            let schedules = client.list_schedules().await?;
            if json {
                outln!(
                    "{}",
                    Value::Array(schedules.iter().map(schedule_json).collect())
                );
            } else {
                print_table(
                    SCHEDULE_HEADER,
                    schedules.iter().map(schedule_row).collect(),
                );
            }
        }
        SchedulesCommand::Add {
            name,
            task,
            every,
            cron,
            timezone,
            args,
            queue,
        } => {
            let timing = match (every, cron) {
                (Some(every), _) => Timing::every("--every", every)?,
                (None, Some(cron)) => Timing::cron("--cron", &cron, "--timezone", &timezone)?,
                (None, None) => anyhow::bail!("give --every or --cron"),
            };
            let mut spec = TaskSpec::new(
                TaskName::parse("--task", &task)?,
                JsonText::parse("--args", &args, usize::MAX)?,
            );
            spec.queue = queue
                .as_deref()
                .map(|queue| QueueName::parse("--queue", queue))
                .transpose()?;
            let schedule = Schedule {
                name: parse_schedule_name("NAME", &name)?,
                task: spec,
                timing,
                paused: false,
                next_run_at: None,
                last_run_at: None,
                last_task_id: None,
                source: ScheduleSource::Api,
            };
            let stored = client.put_schedule(&schedule).await?;
            outln!(
                "schedule {} ticks next at {}",
                stored.name,
                moment(stored.next_run_at)
            );
        }
        SchedulesCommand::Remove { name } => {
            client.delete_schedule(&name).await?;
            outln!("schedule {name} removed");
        }
        SchedulesCommand::Pause { name } => {
            client.pause_schedule(&name, true).await?;
            outln!("schedule {name} paused");
        }
        SchedulesCommand::Resume { name } => {
            let schedule = client.pause_schedule(&name, false).await?;
            outln!(
                "schedule {name} resumed; next tick at {}",
                moment(schedule.next_run_at)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_take_the_fields_the_help_names() {
        for accepted in ["0 3 * * *", "30 0 3 * * *", "30 0 3 * * * 2030"] {
            Timing::cron("--cron", accepted, "--timezone", "UTC")
                .unwrap_or_else(|error| panic!("{accepted:?}: {error}"));
        }
        let refused = Timing::cron("--cron", "0 3 *", "--timezone", "UTC").unwrap_err();
        assert!(
            refused.to_string().contains("between 5 and 7 fields"),
            "{refused}"
        );
    }
}
