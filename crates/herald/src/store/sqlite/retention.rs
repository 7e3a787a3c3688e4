//! Retention on SQLite: old, finished records deleted in small transactions of the writer thread.
//!
//! The writer thread writes one transaction at a time: that is what makes the check and the
//! delete one step, as nothing else can make a delivery pending again between them. Each batch commits without an fsync (a prune
//! lost in a power cut is simply done again), and the janitor pauses between batches, so
//! publishes and attempt results queue behind one batch at most.

use super::{Commit, SqliteStore};
use crate::domain::{AccountId, EventId, Timestamp};
use crate::store::{
    ErasedRows, ErasureStep, PortalTokens, PruneEvents, PrunedEvents, Retention, StoreResult,
};
use async_trait::async_trait;

#[async_trait]
impl Retention for SqliteStore {
    async fn prune_events(&self, b: &PruneEvents) -> StoreResult<PrunedEvents> {
        let b = b.clone();
        self.write_alone(Commit::Relaxed, move |tx| {
            let scanned: Vec<(String, bool)> = tx
                .prepare_cached(
                    "SELECT e.id, e.created_at < ?1 AND NOT EXISTS (
                         SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                           AND (d.status = 'pending' OR d.updated_at >= ?2))
                     FROM events e WHERE e.id > ?3 AND e.id < ?4 ORDER BY e.id LIMIT ?5",
                )?
                .query_map(
                    (
                        b.created_before.millis(),
                        b.finished_before.millis(),
                        b.after.as_ref().map_or("", EventId::as_str),
                        EventId::bound_at(b.created_before),
                        b.limit as i64,
                    ),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let next = (scanned.len() == b.limit)
                .then(|| {
                    scanned
                        .last()
                        .map(|(id, _)| EventId::from_trusted(id.clone()))
                })
                .flatten();
            let doomed: Vec<&str> = scanned
                .iter()
                .filter(|(_, prunable)| *prunable)
                .map(|(id, _)| id.as_str())
                .collect();
            if doomed.is_empty() {
                return Ok(PrunedEvents {
                    next,
                    ..PrunedEvents::default()
                });
            }
            let ids = serde_json::to_string(&doomed).expect("strings serialize");
            let attempts = tx
                .prepare_cached(
                    "DELETE FROM attempts WHERE delivery_id IN
                       (SELECT id FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?)))",
                )?
                .execute([&ids])?;
            let deliveries = tx
                .prepare_cached(
                    "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?))",
                )?
                .execute([&ids])?;
            let events = tx
                .prepare_cached("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))")?
                .execute([&ids])?;
            Ok(PrunedEvents {
                events: events as u64,
                deliveries: deliveries as u64,
                attempts: attempts as u64,
                next,
            })
        })
        .await
    }

    async fn prune_jobs(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_alone(Commit::Relaxed, move |tx| {
            let doomed: Vec<String> = tx
                .prepare_cached(
                    "SELECT j.id FROM jobs j WHERE j.completed_at < ?1 AND NOT EXISTS (
                         SELECT 1 FROM webhooks w JOIN deliveries d ON d.webhook_id = w.id
                         WHERE w.kind = 'job' AND w.job_id = j.id)
                     ORDER BY j.completed_at LIMIT ?2",
                )?
                .query_map((finished_before.millis(), limit as i64), |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if doomed.is_empty() {
                return Ok(0);
            }
            let ids = serde_json::to_string(&doomed).expect("strings serialize");
            tx.prepare_cached(
                "DELETE FROM webhooks WHERE kind = 'job' AND job_id IN (SELECT value FROM json_each(?))",
            )?
            .execute([&ids])?;
            let jobs = tx
                .prepare_cached("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")?
                .execute([&ids])?;
            Ok(jobs as u64)
        })
        .await
    }

    async fn forget_idempotency_keys(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_alone(Commit::Relaxed, move |tx| {
            let freed = tx
                .prepare_cached(
                    "UPDATE events SET idempotency_key = NULL, idempotency_fingerprint = NULL
                     WHERE id IN (SELECT id FROM events WHERE idempotency_key IS NOT NULL AND created_at < ?
                                  LIMIT ?)",
                )?
                .execute((before.millis(), limit as i64))?;
            Ok(freed as u64)
        })
        .await
    }

    async fn prune_stats(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_alone(Commit::Relaxed, move |tx| {
            let pruned = tx
                .prepare_cached(
                    "DELETE FROM webhook_stats WHERE rowid IN (
                         SELECT rowid FROM webhook_stats WHERE minute < ? LIMIT ?)",
                )?
                .execute((before.millis(), limit as i64))?;
            Ok(pruned as u64)
        })
        .await
    }

    async fn prune_portal(
        &self,
        tokens: PortalTokens,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        self.write_alone(Commit::Relaxed, move |tx| {
            let pruned = tx
                .prepare_cached(&tokens.prune_sql(""))?
                .execute((before.millis(), limit as i64))?;
            Ok(pruned as u64)
        })
        .await
    }

    async fn prune_tasks(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_alone(Commit::Relaxed, move |tx| {
            let pruned = tx
                .prepare_cached(
                    "DELETE FROM tasks WHERE id IN (
                         SELECT id FROM tasks WHERE finished_at < ? LIMIT ?)",
                )?
                .execute((finished_before.millis(), limit as i64))?;
            Ok(pruned as u64)
        })
        .await
    }

    async fn remove_lapsed_listeners(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_alone(Commit::Durable, move |tx| {
            super::listeners::remove_lapsed_listeners(tx, now, limit)
        })
        .await
    }

    async fn accounts_being_erased(&self) -> StoreResult<Vec<AccountId>> {
        self.erasing_accounts().await
    }

    async fn erase_batch(
        &self,
        account: &AccountId,
        step: ErasureStep,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Option<ErasedRows>> {
        self.erase(account, step, now, limit).await
    }

    async fn finish_erasure(&self, account: &AccountId) -> StoreResult<bool> {
        self.erase_account_row(account).await
    }
}
