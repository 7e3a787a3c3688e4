//! Retention on SQLite: old, finished records deleted in small transactions on the writer.
//!
//! The single writer connection is what makes the check and the delete one step: nothing else
//! can make a delivery pending again between them. Each batch commits without an fsync (a prune
//! lost in a power cut is simply done again), and the janitor pauses between batches, so
//! publishes and attempt results queue behind one batch at most.

use super::SqliteStore;
use crate::domain::{EventId, Timestamp};
use crate::store::{PruneEvents, PrunedEvents, Retention, StoreResult};
use async_trait::async_trait;

#[async_trait]
impl Retention for SqliteStore {
    async fn prune_events(&self, b: &PruneEvents) -> StoreResult<PrunedEvents> {
        let mut tx = self.relaxed_begin().await?;
        let scanned: Vec<(String, i64)> = sqlx::query_as(
            "SELECT e.id, e.created_at < ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                   AND (d.status = 'pending' OR d.updated_at >= ?2))
             FROM events e WHERE e.id > ?3 AND e.id < ?4 ORDER BY e.id LIMIT ?5",
        )
        .bind(b.created_before.millis())
        .bind(b.finished_before.millis())
        .bind(b.after.as_ref().map_or("", EventId::as_str))
        .bind(EventId::bound_at(b.created_before))
        .bind(b.limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let next = (scanned.len() == b.limit)
            .then(|| {
                scanned
                    .last()
                    .map(|(id, _)| EventId::from_trusted(id.clone()))
            })
            .flatten();
        let doomed: Vec<&str> = scanned
            .iter()
            .filter(|(_, prunable)| *prunable != 0)
            .map(|(id, _)| id.as_str())
            .collect();
        if doomed.is_empty() {
            return Ok(PrunedEvents {
                next,
                ..PrunedEvents::default()
            });
        }
        let ids = serde_json::to_string(&doomed).expect("strings serialize");
        let attempts = sqlx::query(
            "DELETE FROM attempts WHERE delivery_id IN
               (SELECT id FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?)))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let deliveries = sqlx::query(
            "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(PrunedEvents {
            events,
            deliveries,
            attempts,
            next,
        })
    }

    async fn prune_jobs(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64> {
        let mut tx = self.relaxed_begin().await?;
        let doomed: Vec<String> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j WHERE j.completed_at < ?1 AND NOT EXISTS (
                 SELECT 1 FROM webhooks w JOIN deliveries d ON d.webhook_id = w.id
                 WHERE w.kind = 'job' AND w.job_id = j.id)
             ORDER BY j.completed_at LIMIT ?2",
        )
        .bind(finished_before.millis())
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if doomed.is_empty() {
            return Ok(0);
        }
        let ids = serde_json::to_string(&doomed).expect("strings serialize");
        sqlx::query(
            "DELETE FROM webhooks WHERE kind = 'job' AND job_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let jobs = sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(jobs)
    }

    async fn forget_idempotency_keys(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let mut tx = self.relaxed_begin().await?;
        let freed = sqlx::query(
            "UPDATE events SET idempotency_key = NULL, idempotency_fingerprint = NULL
             WHERE id IN (SELECT id FROM events WHERE idempotency_key IS NOT NULL AND created_at < ?
                          LIMIT ?)",
        )
        .bind(before.millis())
        .bind(limit as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(freed)
    }
}
