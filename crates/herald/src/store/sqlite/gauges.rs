//! The queue gauges on SQLite.

use super::SqliteStore;
use crate::domain::Timestamp;
use crate::store::flow::{BUSIEST_WEBHOOKS, FlowColumns};
use crate::store::{QueueDepth, QueueGauges, StoreResult, WebhookFlow};
use async_trait::async_trait;

#[async_trait]
impl QueueGauges for SqliteStore {
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth> {
        // One pass over the pending rows (the partial index `deliveries_due`), on a reader.
        let (due, scheduled, oldest_due): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT
               COUNT(*) FILTER (WHERE next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)),
               COUNT(*) FILTER (WHERE next_attempt_at > ?1),
               MIN(next_attempt_at) FILTER (WHERE next_attempt_at <= ?1
                                            AND (locked_until IS NULL OR locked_until <= ?1))
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now.millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(QueueDepth {
            due: due.max(0) as u64,
            scheduled: scheduled.max(0) as u64,
            oldest_due: oldest_due.map(Timestamp::from_millis),
        })
    }

    async fn busiest_webhooks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<WebhookFlow>> {
        let rows: Vec<FlowColumns> = sqlx::query_as(BUSIEST_WEBHOOKS)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(|r| r.at(now)).collect())
    }
}
