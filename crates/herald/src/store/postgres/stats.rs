//! Endpoint health figures on PostgreSQL: a batch's rows added to the stored ones in the
//! results' transaction, and a window's rows read back (see [`crate::store::stats`]).

use super::PgStore;
use crate::domain::{Timestamp, WebhookId};
use crate::store::stats::{
    ADD_TO_STORED, AttemptStats, STAT_COLUMNS, from_values, minute_rows, values,
};
use crate::store::{AttemptRecord, StoreResult};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

/// Adds the batch's figures to each webhook's rows of the minutes they fall in.
pub(super) async fn record_stats(
    conn: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
) -> StoreResult<()> {
    let rows = minute_rows(records);
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(format!(
        "INSERT INTO webhook_stats (webhook_id, minute, {STAT_COLUMNS}) "
    ));
    insert.push_values(&rows, |mut b, (webhook, minute, stats)| {
        let (counts, last_error, at) = values(stats);
        b.push_bind(webhook.clone()).push_bind(*minute);
        for n in counts {
            b.push_bind(n);
        }
        b.push_bind(last_error).push_bind(at);
    });
    insert.push(" ").push(ADD_TO_STORED);
    insert.build().execute(conn).await?;
    Ok(())
}

impl PgStore {
    /// The rows of a webhook's minutes from `since` on.
    pub(super) async fn stats_since(
        &self,
        webhook: &WebhookId,
        since: Timestamp,
    ) -> StoreResult<Vec<AttemptStats>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STAT_COLUMNS} FROM webhook_stats WHERE webhook_id = $1 AND minute >= $2"
        )))
        .bind(webhook.as_str())
        .bind(since.millis())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| from_values(std::array::from_fn(|i| r.get(i)), r.get(20), r.get(21)))
            .collect())
    }
}
