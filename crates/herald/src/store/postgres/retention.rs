//! Retention on PostgreSQL: old, finished records deleted in small transactions by id.
//!
//! Every node runs the janitor, so each batch first takes a transaction-level advisory lock and
//! gives up at once if another node holds it: one node prunes at a time, and a node that finds
//! the lock taken ends its pass. Within a batch the deliveries of the candidate events are
//! locked and looked at again before anything is deleted, so a delivery made pending by a manual
//! retry in the meantime keeps its event.

use super::PgStore;
use crate::domain::{AccountId, EventId, Timestamp};
use crate::store::{
    ErasedRows, ErasureStep, PortalTokens, PruneEvents, PrunedEvents, Retention, StoreResult,
};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};
use std::collections::HashSet;

/// The advisory lock key of retention ("herald" in ASCII, then 1).
const PRUNE_LOCK: i64 = 0x6865_7261_6c64_0001;

/// Takes the pruning lock for this transaction, if no other node holds it.
async fn try_prune_lock(conn: &mut PgConnection) -> StoreResult<bool> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(PRUNE_LOCK)
        .fetch_one(conn)
        .await?)
}

impl PgStore {
    async fn begin_pruning(&self) -> StoreResult<Option<Transaction<'static, Postgres>>> {
        let mut tx = self.pool.begin().await?;
        if try_prune_lock(&mut tx).await? {
            Ok(Some(tx))
        } else {
            Ok(None)
        }
    }
}

#[async_trait]
impl Retention for PgStore {
    async fn prune_events(&self, b: &PruneEvents) -> StoreResult<PrunedEvents> {
        let Some(mut tx) = self.begin_pruning().await? else {
            return Ok(PrunedEvents::default());
        };
        let scanned: Vec<(String, bool)> = sqlx::query_as(
            "SELECT e.id, e.created_at < $1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                   AND (d.status = 'pending' OR d.updated_at >= $2))
             FROM events e WHERE e.id > $3 AND e.id < $4 ORDER BY e.id LIMIT $5",
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
        let candidates: Vec<String> = scanned
            .into_iter()
            .filter_map(|(id, prunable)| prunable.then_some(id))
            .collect();
        if candidates.is_empty() {
            return Ok(PrunedEvents {
                next,
                ..PrunedEvents::default()
            });
        }
        // Lock the candidates' deliveries, then look again with the latest committed state.
        let deliveries: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT event_id, status, updated_at FROM deliveries WHERE event_id = ANY($1)
             ORDER BY id FOR UPDATE",
        )
        .bind(&candidates)
        .fetch_all(&mut *tx)
        .await?;
        let unfinished: HashSet<&str> = deliveries
            .iter()
            .filter(|(_, status, updated)| {
                status == "pending" || *updated >= b.finished_before.millis()
            })
            .map(|(event, _, _)| event.as_str())
            .collect();
        let doomed: Vec<&str> = candidates
            .iter()
            .map(String::as_str)
            .filter(|id| !unfinished.contains(id))
            .collect();
        let attempts = sqlx::query(
            "DELETE FROM attempts WHERE delivery_id IN
               (SELECT id FROM deliveries WHERE event_id = ANY($1))",
        )
        .bind(&doomed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let deliveries = sqlx::query("DELETE FROM deliveries WHERE event_id = ANY($1)")
            .bind(&doomed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let events = sqlx::query("DELETE FROM events WHERE id = ANY($1)")
            .bind(&doomed)
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
        let Some(mut tx) = self.begin_pruning().await? else {
            return Ok(0);
        };
        // A finished job cannot change any more, and its own webhook gets no new deliveries
        // (only the job's terminal event goes there), so what is read here stays true.
        let doomed: Vec<String> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j WHERE j.completed_at < $1 AND NOT EXISTS (
                 SELECT 1 FROM webhooks w JOIN deliveries d ON d.webhook_id = w.id
                 WHERE w.kind = 'job' AND w.job_id = j.id)
             ORDER BY j.completed_at LIMIT $2",
        )
        .bind(finished_before.millis())
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if doomed.is_empty() {
            return Ok(0);
        }
        sqlx::query("DELETE FROM webhooks WHERE kind = 'job' AND job_id = ANY($1)")
            .bind(&doomed)
            .execute(&mut *tx)
            .await?;
        let jobs = sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
            .bind(&doomed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(jobs)
    }

    async fn forget_idempotency_keys(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let Some(mut tx) = self.begin_pruning().await? else {
            return Ok(0);
        };
        let freed = sqlx::query(
            "UPDATE events SET idempotency_key = NULL, idempotency_fingerprint = NULL
             WHERE id IN (SELECT id FROM events WHERE idempotency_key IS NOT NULL AND created_at < $1
                          LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(limit as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(freed)
    }

    async fn prune_tasks(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64> {
        let pruned = sqlx::query(
            "DELETE FROM tasks WHERE id IN (
                 SELECT id FROM tasks WHERE finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(finished_before.millis())
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    async fn prune_portal(
        &self,
        tokens: PortalTokens,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        let pruned = sqlx::query(AssertSqlSafe(tokens.prune_sql(" FOR UPDATE SKIP LOCKED")))
            .bind(before.millis())
            .bind(limit as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(pruned)
    }

    async fn prune_stats(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let pruned = sqlx::query(
            "DELETE FROM webhook_stats WHERE ctid IN (
                 SELECT ctid FROM webhook_stats WHERE minute < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    async fn remove_lapsed_listeners(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        let Some(mut tx) = self.begin_pruning().await? else {
            return Ok(0);
        };
        let removed = super::listeners::remove_lapsed_listeners(&mut tx, now, limit).await?;
        tx.commit().await?;
        Ok(removed)
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

    fn watch_for_erasures(
        &self,
        on_mark: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        self.listen_for_erasures(on_mark, shutdown);
    }
}
