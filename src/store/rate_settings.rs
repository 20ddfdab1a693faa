//! Rate limits set through the API, the same way on both databases: a row per pattern in
//! `rate_limit_settings`, which every coordinator reads back (the configured limits stay in
//! the configuration). Setting one also makes the unfinished tasks it covers governed, so that
//! the governed claim meters tasks submitted before the limit existed.

use super::StoreError;
use super::backend::Database;
use super::row::Columns;
use super::statements::Statements;
use crate::domain::RateLimitSetting;

/// What setting a limit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSet {
    /// The rate the pattern had before, if it had one set through the API.
    pub previous: Option<String>,
    /// Unfinished tasks that became governed by it.
    pub governed: u64,
}

/// `pattern` as a `LIKE` pattern with `\` escaping: `*` stands for any text, and `%`, `_`
/// and `\` stand for themselves.
pub(super) fn like_pattern(pattern: &str) -> String {
    let mut like = String::with_capacity(pattern.len() + 8);
    for c in pattern.chars() {
        match c {
            '*' => like.push('%'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

/// The rate `pattern` has through the API, if any.
async fn rate_of<B: Database>(
    transaction: &mut B::Transaction,
    pattern: &str,
) -> Result<Option<String>, StoreError> {
    transaction
        .fetch_optional(
            "SELECT rate FROM rate_limit_settings WHERE pattern = $1",
            &[pattern.into()],
        )
        .await?
        .map(|row| row.text("rate"))
        .transpose()
        .map_err(StoreError::Internal)
}

/// Sets (or replaces) the limit of `setting.pattern`, and governs the unfinished tasks it
/// covers, in one transaction.
pub(super) async fn set_rate_limit<B: Database>(
    backend: &B,
    setting: &RateLimitSetting,
) -> Result<RateLimitSet, StoreError> {
    let mut transaction = backend.begin().await?;
    let previous = rate_of::<B>(&mut transaction, &setting.pattern).await?;
    transaction
        .execute(
            "INSERT INTO rate_limit_settings (pattern, rate, set_at, set_by) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pattern) DO UPDATE \
             SET rate = excluded.rate, set_at = excluded.set_at, set_by = excluded.set_by",
            &[
                setting.pattern.as_str().into(),
                setting.rate.as_str().into(),
                setting.set_at.into(),
                setting.set_by.as_deref().into(),
            ],
        )
        .await?;
    let like = like_pattern(&setting.pattern);
    let governed = transaction
        .execute(B::LEASES.govern_matching, &[like.as_str().into()])
        .await?;
    B::commit(transaction).await?;
    Ok(RateLimitSet { previous, governed })
}

/// Removes the limit of `pattern` set through the API; answers the rate it had, if any.
/// Tasks it governed stay governed: with no limit covering their keys they cost nothing.
pub(super) async fn clear_rate_limit<B: Database>(
    backend: &B,
    pattern: &str,
) -> Result<Option<String>, StoreError> {
    let mut transaction = backend.begin().await?;
    let previous = rate_of::<B>(&mut transaction, pattern).await?;
    transaction
        .execute(
            "DELETE FROM rate_limit_settings WHERE pattern = $1",
            &[pattern.into()],
        )
        .await?;
    B::commit(transaction).await?;
    Ok(previous)
}

/// The limits set through the API, by pattern.
pub(super) async fn rate_limit_settings<B: Database>(
    backend: &B,
) -> Result<Vec<RateLimitSetting>, StoreError> {
    let rows = backend
        .connection()
        .await?
        .fetch_all(
            "SELECT pattern, rate, set_at, set_by FROM rate_limit_settings ORDER BY pattern",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RateLimitSetting {
                pattern: row.text("pattern")?,
                rate: row.text("rate")?,
                set_at: row.moment("set_at")?,
                set_by: row.optional_text("set_by")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::Internal)
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn a_glob_becomes_a_like_pattern_that_takes_the_rest_literally() {
        assert_eq!(like_pattern("domain:*"), "domain:%");
        assert_eq!(like_pattern("domain:*.ru"), "domain:%.ru");
        assert_eq!(like_pattern("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(like_pattern("exact"), "exact");
    }
}
