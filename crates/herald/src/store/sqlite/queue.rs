//! The queue on SQLite: claims ([`super::claim`]), results ([`super::record`]) and releases,
//! written by the writer thread.

use super::SqliteStore;
use super::record::RecordRequest;
use super::writer::QueueWrite;
use crate::domain::Timestamp;
use crate::store::rows;
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, HealthPolicy, Intake, Queue, Release, StoreResult,
};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

#[async_trait]
impl Queue for SqliteStore {
    async fn claim_due(&self, req: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        self.claim(req).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let request = RecordRequest {
            records: records.to_vec(),
            health: *health,
            reply,
        };
        self.write(QueueWrite::Record(request), answer).await
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        let mut tx = self.relaxed_begin().await?;
        for r in releases {
            sqlx::query("UPDATE deliveries SET lease = NULL, locked_until = NULL WHERE id = ? AND lease = ?")
                .bind(r.delivery_id.as_str())
                .bind(&r.lease)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due_at(&self, scan_limit: usize) -> StoreResult<Option<Timestamp>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT next_attempt_at, locked_until FROM deliveries WHERE status = 'pending'
             ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(scan_limit.max(1) as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows::earliest_claimable(&rows).map(Timestamp::from_millis))
    }

    fn set_intake(&self, intake: Arc<dyn Intake>, lease: Duration) {
        let _ = self.intake.set((intake, lease));
    }
}
