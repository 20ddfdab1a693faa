//! The client's schedule calls.

use super::{ClientError, CoordinatorClient};
use crate::domain::{Schedule, ValidationError};
use crate::grpc::convert::{schedule_from_stored_pb, schedule_to_pb};
use crate::grpc::pb;

impl CoordinatorClient {
    /// Every periodic schedule.
    pub async fn list_schedules(&mut self) -> Result<Vec<Schedule>, ClientError> {
        let response = self
            .schedules
            .list_schedules(pb::ListSchedulesRequest {})
            .await?
            .into_inner();
        Ok(response
            .schedules
            .into_iter()
            .map(schedule_from_stored_pb)
            .collect::<Result<_, _>>()?)
    }

    /// Creates or replaces a schedule.
    pub async fn put_schedule(&mut self, schedule: &Schedule) -> Result<Schedule, ClientError> {
        let response = self
            .schedules
            .put_schedule(pb::PutScheduleRequest {
                schedule: Some(schedule_to_pb(schedule.clone())),
            })
            .await?
            .into_inner();
        let schedule = response
            .schedule
            .ok_or_else(|| ValidationError::new("schedule", "is missing"))?;
        Ok(schedule_from_stored_pb(schedule)?)
    }

    /// Removes a schedule.
    pub async fn delete_schedule(&mut self, name: &str) -> Result<(), ClientError> {
        self.schedules
            .delete_schedule(pb::DeleteScheduleRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Pauses or resumes a schedule.
    pub async fn pause_schedule(
        &mut self,
        name: &str,
        paused: bool,
    ) -> Result<Schedule, ClientError> {
        let response = self
            .schedules
            .pause_schedule(pb::PauseScheduleRequest {
                name: name.to_owned(),
                paused,
            })
            .await?
            .into_inner();
        let schedule = response
            .schedule
            .ok_or_else(|| ValidationError::new("schedule", "is missing"))?;
        Ok(schedule_from_stored_pb(schedule)?)
    }
}
