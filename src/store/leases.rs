//! Lease upkeep both databases run the same way, each with its own SQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backend::Database;
use super::encoding::millis;
use super::statements::{Param, Statements};
use super::{RUNNING_LEASE_MARGIN, StoreError};

pub(super) async fn renew_leases<B: Database>(
    backend: &B,
    sessions: &[Uuid],
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<u64, StoreError> {
    if sessions.is_empty() {
        return Ok(0);
    }
    backend
        .connection()
        .await?
        .execute(
            B::LEASES.renew,
            &[
                Param::Sessions(sessions),
                now.into(),
                millis(ttl).into(),
                millis(RUNNING_LEASE_MARGIN).into(),
            ],
        )
        .await
}

pub(super) async fn expire_session_leases<B: Database>(
    backend: &B,
    session: Uuid,
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    backend
        .connection()
        .await?
        .execute(
            B::LEASES.expire_session,
            &[Param::Session(session), at.into()],
        )
        .await
}
