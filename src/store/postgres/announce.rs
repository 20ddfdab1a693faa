//! Announcements between coordinators on one Postgres database, through LISTEN/NOTIFY.

use async_trait::async_trait;

use super::super::backend::Announcements;
use super::super::{Announcement, AnnouncementListener, StoreError};
use super::{PostgresStore, classify};
use crate::domain::LeaseToken;

/// The channel coordinators announce on.
const ANNOUNCEMENT_CHANNEL: &str = "celeritas";

#[async_trait]
impl Announcements for PostgresStore {
    async fn announce(&self, announcement: &Announcement) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ANNOUNCEMENT_CHANNEL)
            .bind(encode_announcement(announcement))
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn AnnouncementListener>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(classify)?;
        listener
            .listen(ANNOUNCEMENT_CHANNEL)
            .await
            .map_err(classify)?;
        Ok(Some(Box::new(PostgresListener(listener))))
    }
}

/// `work <coordinator>`, `cancel <task id> <attempt> <terminate: 0|1>` or
/// `pause <task id> <attempt>`.
fn encode_announcement(announcement: &Announcement) -> String {
    match announcement {
        Announcement::Work { from } => format!("work {from}"),
        Announcement::Cancel { token, terminate } => {
            format!(
                "cancel {} {} {}",
                token.task_id,
                token.attempt,
                u8::from(*terminate)
            )
        }
        Announcement::Pause { token } => format!("pause {} {}", token.task_id, token.attempt),
    }
}

fn decode_announcement(payload: &str) -> Option<Announcement> {
    let mut parts = payload.split(' ');
    match parts.next()? {
        "work" => Some(Announcement::Work {
            from: parts.next()?.to_owned(),
        }),
        "cancel" => {
            let task_id = parts.next()?;
            let attempt = parts.next()?.parse().ok()?;
            let terminate = parts.next()? == "1";
            Some(Announcement::Cancel {
                token: LeaseToken::parse("announcement", task_id, attempt).ok()?,
                terminate,
            })
        }
        "pause" => {
            let task_id = parts.next()?;
            let attempt = parts.next()?.parse().ok()?;
            Some(Announcement::Pause {
                token: LeaseToken::parse("announcement", task_id, attempt).ok()?,
            })
        }
        _ => None,
    }
}

/// LISTEN on the announcement channel. sqlx reconnects a dropped listener on the next receive.
struct PostgresListener(sqlx::postgres::PgListener);

#[async_trait]
impl AnnouncementListener for PostgresListener {
    async fn next(&mut self) -> Result<Announcement, StoreError> {
        loop {
            let notification = self.0.recv().await.map_err(classify)?;
            match decode_announcement(notification.payload()) {
                Some(announcement) => return Ok(announcement),
                None => tracing::debug!(payload = notification.payload(), "unknown announcement"),
            }
        }
    }
}
