//! API tokens and the credentials worker ids are bound to, the same way on both databases.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::backend::Database;
use super::row::{Columns, decode_error};
use super::statements::Statements;
use crate::domain::{Roles, TokenDigest, TokenName, WorkerId};

/// A token as the store keeps it: never the token, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Its name.
    pub name: TokenName,
    /// What it may do.
    pub roles: Roles,
    /// Its SHA-256.
    pub digest: TokenDigest,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

pub(super) async fn create_token<B: Database>(
    backend: &B,
    token: &StoredToken,
) -> Result<bool, StoreError> {
    let roles = token.roles.names();
    let digest = token.digest.to_hex();
    let created = backend
        .connection()
        .await?
        .execute(
            "INSERT INTO api_tokens (name, roles, sha256, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[
                token.name.as_str().into(),
                (&roles).into(),
                (&digest).into(),
                token.created_at.into(),
            ],
        )
        .await?;
    Ok(created == 1)
}

pub(super) async fn tokens<B: Database>(backend: &B) -> Result<Vec<StoredToken>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT name, roles, sha256, created_at, revoked_at FROM api_tokens ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(stored_token)
        .collect::<Result<_, _>>()
        .map_err(StoreError::Internal)
}

fn stored_token(row: &impl Columns) -> Result<StoredToken, sqlx::Error> {
    let name = row.text("name")?;
    let roles = row.text("roles")?;
    let digest = row.text("sha256")?;
    Ok(StoredToken {
        name: TokenName::parse("name", &name).map_err(|_| decode_error("name", &name))?,
        roles: Roles::parse_all("roles", &roles.split(',').collect::<Vec<_>>())
            .map_err(|_| decode_error("roles", &roles))?,
        digest: TokenDigest::from_hex("sha256", &digest)
            .map_err(|_| decode_error("sha256", "(a digest)"))?,
        created_at: row.moment("created_at")?,
        revoked_at: row.optional_moment("revoked_at")?,
    })
}

pub(super) async fn revoke_token<B: Database>(
    backend: &B,
    name: &TokenName,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let revoked = backend
        .connection()
        .await?
        .execute(
            "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
            &[name.as_str().into(), now.into()],
        )
        .await?;
    Ok(revoked == 1)
}

pub(super) async fn bind_worker_credential<B: Database>(
    backend: &B,
    worker: &WorkerId,
    credential: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let mut connection = backend.connection().await?;
    if let Some(credential) = credential {
        connection
            .execute(
                "INSERT INTO worker_credentials (worker_id, credential, bound_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (worker_id) DO NOTHING",
                &[worker.as_str().into(), credential.into(), now.into()],
            )
            .await?;
    }
    let bound = connection
        .fetch_all(
            "SELECT credential FROM worker_credentials WHERE worker_id = $1",
            &[worker.as_str().into()],
        )
        .await?;
    bound
        .first()
        .map(|row| row.text("credential"))
        .transpose()
        .map_err(StoreError::Internal)
}
