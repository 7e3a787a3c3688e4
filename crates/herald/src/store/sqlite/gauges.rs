//! The queue gauges on SQLite.

use super::SqliteStore;
use crate::domain::Timestamp;
use crate::store::{QueueDepth, QueueGauges, StoreResult};
use async_trait::async_trait;
use sqlx::Row;

#[async_trait]
impl QueueGauges for SqliteStore {
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth> {
        // One pass over the pending rows (the partial index `deliveries_due`), on a reader.
        let row = sqlx::query(
            "SELECT
               COALESCE(SUM(next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)), 0) AS due,
               COALESCE(SUM(next_attempt_at > ?1), 0) AS scheduled,
               MIN(CASE WHEN next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)
                        THEN next_attempt_at END) AS oldest_due
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now.millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(QueueDepth {
            due: row.try_get::<i64, _>("due")?.max(0) as u64,
            scheduled: row.try_get::<i64, _>("scheduled")?.max(0) as u64,
            oldest_due: row
                .try_get::<Option<i64>, _>("oldest_due")?
                .map(Timestamp::from_millis),
        })
    }
}
