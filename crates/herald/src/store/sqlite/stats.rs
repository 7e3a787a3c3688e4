//! Endpoint health figures on SQLite: a batch's rows added to the stored ones in the writer's
//! round, and a window's rows read back (see [`crate::store::stats`]).

use super::SqliteStore;
use super::batch::Batch;
use crate::domain::{Timestamp, WebhookId};
use crate::store::stats::{
    ADD_TO_STORED, AttemptStats, STAT_COLUMNS, from_values, minute_rows, values,
};
use crate::store::{AttemptRecord, StoreResult};
use sqlx::{AssertSqlSafe, Row};

/// Adds the batch's figures to each webhook's rows of the minutes they fall in.
pub(super) fn push_stats(batch: &mut Batch, records: &[AttemptRecord]) {
    let rows: Vec<_> = minute_rows(records)
        .into_iter()
        .map(|(webhook, minute, stats)| {
            let (counts, last_error, at) = values(&stats);
            let mut row = vec![serde_json::json!(webhook), serde_json::json!(minute)];
            row.extend(counts.map(|n| serde_json::json!(n)));
            row.extend([serde_json::json!(last_error), serde_json::json!(at)]);
            row
        })
        .collect();
    let rows = batch.arg(serde_json::to_string(&rows).expect("stats serialize"));
    // `jsonb_each`: each row's value comes as binary JSON, so reading its 24 fields does not
    // parse its text 24 times (as `json_each`'s would); a write of results to many webhooks
    // has a row for each.
    let picks: Vec<String> = (0..24).map(|i| format!("value->>{i}")).collect();
    batch.push(&format!(
        "INSERT INTO webhook_stats (webhook_id, minute, {STAT_COLUMNS})
         SELECT {} FROM jsonb_each({rows}) WHERE true {ADD_TO_STORED}",
        picks.join(", ")
    ));
}

impl SqliteStore {
    /// The rows of a webhook's minutes from `since` on.
    pub(super) async fn stats_since(
        &self,
        webhook: &WebhookId,
        since: Timestamp,
    ) -> StoreResult<Vec<AttemptStats>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STAT_COLUMNS} FROM webhook_stats WHERE webhook_id = ? AND minute >= ?"
        )))
        .bind(webhook.as_str())
        .bind(since.millis())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| from_values(std::array::from_fn(|i| r.get(i)), r.get(20), r.get(21)))
            .collect())
    }
}
