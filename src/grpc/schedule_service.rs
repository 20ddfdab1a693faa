//! `celeritas.v1.ScheduleService`: thin handlers over the coordinator's schedules.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{schedule_from_pb, schedule_to_pb};
use super::pb;
use super::status::invalid;
use crate::coordinator::Coordinator;
use crate::domain::{ValidationError, parse_schedule_name};

/// The schedule API of one coordinator.
pub struct ScheduleApi {
    coordinator: Arc<Coordinator>,
}

impl ScheduleApi {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self { coordinator }
    }
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for ScheduleApi {
    #[tracing::instrument(skip_all, fields(rpc = "ListSchedules"))]
    async fn list_schedules(
        &self,
        _request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self.coordinator.schedules().await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.into_iter().map(schedule_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PutSchedule"))]
    async fn put_schedule(
        &self,
        request: Request<pb::PutScheduleRequest>,
    ) -> Result<Response<pb::PutScheduleResponse>, Status> {
        let schedule = request
            .into_inner()
            .schedule
            .ok_or_else(|| invalid(ValidationError::new("schedule", "is required")))?;
        let schedule = schedule_from_pb(schedule, self.coordinator.settings().max_args_bytes)
            .map_err(invalid)?;
        let stored = self.coordinator.put_api_schedule(schedule).await?;
        Ok(Response::new(pb::PutScheduleResponse {
            schedule: Some(schedule_to_pb(stored)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteSchedule"))]
    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let name = parse_schedule_name("name", &request.into_inner().name).map_err(invalid)?;
        self.coordinator.delete_schedule(&name).await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PauseSchedule"))]
    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::PauseScheduleResponse>, Status> {
        let request = request.into_inner();
        let name = parse_schedule_name("name", &request.name).map_err(invalid)?;
        let schedule = self
            .coordinator
            .pause_schedule(&name, request.paused)
            .await?;
        Ok(Response::new(pb::PauseScheduleResponse {
            schedule: Some(schedule_to_pb(schedule)),
        }))
    }
}
