//! Periodic schedules (beat). Every coordinator runs this loop; the store's compare-and-set on a
//! schedule's next tick makes each tick submit exactly once however many coordinators run.
//! After downtime only the latest missed tick runs: the next tick is always the first one after
//! now.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Coordinator, CoordinatorError};
use crate::domain::{Schedule, ScheduleSource, ValidationError};

/// The longest the loop sleeps; schedules made elsewhere are picked up within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);

impl Coordinator {
    /// Runs the schedule loop until `stop` fires.
    pub async fn run_beat(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let sleep = match self.tick_due_schedules().await {
                Ok(next) => next
                    .map(|next| (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP),
                Err(error) => {
                    tracing::warn!(%error, "cannot tick schedules");
                    MAX_SLEEP
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Ticks every due schedule; returns when the next one is due.
    async fn tick_due_schedules(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CoordinatorError> {
        let now = self.clock.now();
        let mut soonest = None;
        for schedule in self.store.schedules().await? {
            if schedule.paused {
                continue;
            }
            let Some(due) = schedule.next_run_at else {
                continue;
            };
            if due > now {
                soonest = Some(
                    soonest.map_or(due, |soonest: chrono::DateTime<chrono::Utc>| {
                        soonest.min(due)
                    }),
                );
                continue;
            }
            let Some(next) = schedule.timing.next_after(now) else {
                continue;
            };
            // Exactly once rests on the compare-and-set committed with the insert.
            let task = match self.prepare_one(schedule.task.clone(), now).await {
                Ok(task) => Some(task),
                Err(error) => {
                    tracing::warn!(schedule = %schedule.name, %error, "a tick could not submit its task; skipping it");
                    None
                }
            };
            let fired = self
                .store
                .fire_schedule(&schedule.name, due, next, task.as_ref(), now)
                .await?;
            if fired {
                tracing::info!(schedule = %schedule.name, task = ?task.as_ref().map(|task| task.id), "schedule ticked");
                self.signal.wake();
                self.announce();
            }
            soonest = Some(
                soonest.map_or(next, |soonest: chrono::DateTime<chrono::Utc>| {
                    soonest.min(next)
                }),
            );
        }
        Ok(soonest)
    }

    /// Makes the store's schedules from the configuration match it: adds and updates them
    /// (keeping the next tick when the timing did not change) and removes configuration
    /// schedules it no longer has. Schedules made through the API are left alone.
    pub async fn sync_schedules(&self, configured: Vec<Schedule>) -> Result<(), CoordinatorError> {
        let existing = self.store.schedules().await?;
        for schedule in &existing {
            if schedule.source == ScheduleSource::Config
                && !configured.iter().any(|wanted| wanted.name == schedule.name)
            {
                self.store.delete_schedule(&schedule.name).await?;
            }
        }
        for mut schedule in configured {
            let current = existing
                .iter()
                .find(|current| current.name == schedule.name);
            if current.is_some_and(|current| current.source == ScheduleSource::Api) {
                continue;
            }
            schedule.paused = current.is_some_and(|current| current.paused);
            self.put_schedule(schedule, current).await?;
        }
        Ok(())
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, CoordinatorError> {
        Ok(self.store.schedules().await?)
    }

    /// Creates or replaces a schedule made through the API.
    pub async fn put_api_schedule(
        &self,
        mut schedule: Schedule,
    ) -> Result<Schedule, CoordinatorError> {
        schedule.source = ScheduleSource::Api;
        // The task must be one a tick can submit.
        self.prepare_one(schedule.task.clone(), self.clock.now())
            .await
            .map_err(|error| error.within("schedule.task"))?;
        let existing = self.store.schedules().await?;
        let current = existing
            .iter()
            .find(|current| current.name == schedule.name);
        self.put_schedule(schedule, current).await
    }

    async fn put_schedule(
        &self,
        mut schedule: Schedule,
        current: Option<&Schedule>,
    ) -> Result<Schedule, CoordinatorError> {
        let unchanged = current.is_some_and(|current| current.timing == schedule.timing);
        schedule.next_run_at = match current.and_then(|current| current.next_run_at) {
            Some(next) if unchanged => Some(next),
            _ => schedule.timing.next_after(self.clock.now()),
        };
        self.store.put_schedule(&schedule).await?;
        Ok(schedule)
    }

    /// Removes a schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), CoordinatorError> {
        if self.store.delete_schedule(name).await? {
            Ok(())
        } else {
            Err(no_schedule(name))
        }
    }

    /// Pauses or resumes a schedule; a resumed schedule ticks next after now.
    pub async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<Schedule, CoordinatorError> {
        let schedule = self
            .store
            .schedules()
            .await?
            .into_iter()
            .find(|schedule| schedule.name == name)
            .ok_or_else(|| no_schedule(name))?;
        let next = schedule
            .timing
            .next_after(self.clock.now())
            .unwrap_or_else(|| self.clock.now());
        self.store.pause_schedule(name, paused, next).await?;
        self.store
            .schedules()
            .await?
            .into_iter()
            .find(|schedule| schedule.name == name)
            .ok_or_else(|| no_schedule(name))
    }
}

fn no_schedule(name: &str) -> CoordinatorError {
    CoordinatorError::NotFound(ValidationError::new(
        "name",
        format!("no schedule {name:?}"),
    ))
}
