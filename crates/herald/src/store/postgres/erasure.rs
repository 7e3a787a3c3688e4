//! Erasing an account on PostgreSQL (see [`crate::store::erasure`]). The mark notifies every
//! node (`NOTIFY herald_erasure`), which drops the account from its caches and stops its
//! attempts of the account's deliveries. Each batch is a short transaction of its own under a
//! transaction-level advisory lock that it gives up at once if another node holds it, so one
//! node erases at a time; a batch of deliveries locks them first (`SKIP LOCKED`), in the order
//! retention does, so the two never wait on each other in a cycle.

use super::PgStore;
use crate::domain::{AccountId, Timestamp};
use crate::store::StoreResult;
use crate::store::erasure::{
    DISABLED_REASON, ErasedRows, ErasureMark, ErasureStep, SMALL_TABLES, account_ids,
};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The channel on which a mark is announced to every node.
const ERASURE_CHANNEL: &str = "herald_erasure";

/// The advisory lock key of erasure ("herald" in ASCII, then 2; retention's is 1).
const ERASE_LOCK: i64 = 0x6865_7261_6c64_0002;

impl PgStore {
    /// [`crate::store::Accounts::begin_erasure`] on PostgreSQL.
    pub(super) async fn mark_for_erasure(
        &self,
        id: &AccountId,
        now: Timestamp,
    ) -> StoreResult<ErasureMark> {
        let mut tx = self.pool.begin().await?;
        // The row lock makes two DELETEs at once take turns: the second finds the mark.
        let marked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT erasing_since FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        match marked {
            None => return Ok(ErasureMark::NoSuchAccount),
            Some(Some(_)) => return Ok(ErasureMark::AlreadyMarked),
            Some(None) => {}
        }
        sqlx::query("UPDATE accounts SET erasing_since = $1 WHERE id = $2")
            .bind(now.millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = $1, updated_at = $2,
                    deleted_at = COALESCE(deleted_at, $2)
             WHERE account_id = $3 AND (deleted_at IS NULL OR status = 'active')",
        )
        .bind(DISABLED_REASON)
        .bind(now.millis())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        delete_small_rows(&mut tx, id.as_str()).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ERASURE_CHANNEL)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ErasureMark::Marked)
    }

    /// [`crate::store::Retention::accounts_being_erased`] on PostgreSQL.
    pub(super) async fn erasing_accounts(&self) -> StoreResult<Vec<AccountId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM accounts WHERE erasing_since IS NOT NULL ORDER BY erasing_since",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(account_ids(ids))
    }

    /// [`crate::store::Retention::erase_batch`] on PostgreSQL.
    pub(super) async fn erase(
        &self,
        account: &AccountId,
        step: ErasureStep,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Option<ErasedRows>> {
        let mut tx = self.relaxed_begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ERASE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let (account, limit) = (account.as_str(), limit as i64);
        let erased = match step {
            ErasureStep::Deliveries => erase_deliveries(&mut tx, account, now, limit).await?,
            other => ErasedRows {
                rows: sqlx::query(batch_statement(other))
                    .bind(account)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                attempts: 0,
            },
        };
        tx.commit().await?;
        Ok(Some(erased))
    }

    /// [`crate::store::Retention::finish_erasure`] on PostgreSQL.
    pub(super) async fn erase_account_row(&self, account: &AccountId) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        delete_small_rows(&mut tx, account.as_str()).await?;
        sqlx::query(
            "DELETE FROM accounts WHERE id = $1 AND erasing_since IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM deliveries WHERE account_id = $1)
               AND NOT EXISTS (SELECT 1 FROM events WHERE account_id = $1)
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE account_id = $1)
               AND NOT EXISTS (SELECT 1 FROM webhooks WHERE account_id = $1)
               AND NOT EXISTS (SELECT 1 FROM api_keys WHERE account_id = $1)",
        )
        .bind(account.as_str())
        .execute(&mut *tx)
        .await?;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE id = $1")
            .bind(account.as_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(left == 0)
    }

    /// [`crate::store::Retention::watch_for_erasures`] on PostgreSQL: LISTEN on the marks'
    /// channel; after a lost connection `on_mark` is called too, as a mark may have been missed.
    pub(super) fn listen_for_erasures(
        &self,
        on_mark: Arc<dyn Fn() + Send + Sync>,
        shutdown: CancellationToken,
    ) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                let listening = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(ERASURE_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                let mut listener = match listening.await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN for erasures failed; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                };
                // Marks made while this node was not listening.
                on_mark();
                loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(_) => on_mark(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN for erasures lost; reconnecting");
                                break;
                            }
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
    }
}

/// One batch of the account's ($1) rows of `step` (at most $2), but deliveries.
fn batch_statement(step: ErasureStep) -> &'static str {
    match step {
        ErasureStep::Deliveries => unreachable!("deliveries go with their attempts"),
        ErasureStep::Events => {
            "DELETE FROM events WHERE id IN (
               SELECT e.id FROM events e WHERE e.account_id = $1
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
               LIMIT $2 FOR UPDATE SKIP LOCKED)"
        }
        ErasureStep::Jobs => {
            "DELETE FROM jobs WHERE id IN (
               SELECT id FROM jobs WHERE account_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        }
        ErasureStep::StatsRows => {
            "DELETE FROM webhook_stats WHERE ctid IN (
               SELECT s.ctid FROM webhooks w JOIN webhook_stats s ON s.webhook_id = w.id
               WHERE w.account_id = $1 LIMIT $2 FOR UPDATE OF s SKIP LOCKED)"
        }
        ErasureStep::Webhooks => {
            "DELETE FROM webhooks WHERE id IN (
               SELECT w.id FROM webhooks w WHERE w.account_id = $1
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id)
                 AND NOT EXISTS (SELECT 1 FROM webhook_stats s WHERE s.webhook_id = w.id)
               LIMIT $2 FOR UPDATE SKIP LOCKED)"
        }
        ErasureStep::ApiKeys => {
            "DELETE FROM api_keys WHERE id IN (
               SELECT id FROM api_keys WHERE account_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        }
    }
}

/// A batch of the account's deliveries not under a lease, locked first, with their attempts.
async fn erase_deliveries(
    tx: &mut PgConnection,
    account: &str,
    now: Timestamp,
    limit: i64,
) -> StoreResult<ErasedRows> {
    let doomed: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM deliveries WHERE account_id = $1
           AND (locked_until IS NULL OR locked_until <= $2)
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(account)
    .bind(now.millis())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if doomed.is_empty() {
        return Ok(ErasedRows::default());
    }
    let attempts = sqlx::query("DELETE FROM attempts WHERE delivery_id = ANY($1)")
        .bind(&doomed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let rows = sqlx::query("DELETE FROM deliveries WHERE id = ANY($1)")
        .bind(&doomed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(ErasedRows { rows, attempts })
}

/// In a publish's transaction: which of `accounts` are being erased.
pub(super) async fn erasing_among(
    conn: &mut PgConnection,
    accounts: &[&str],
) -> StoreResult<HashSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE id = ANY($1) AND erasing_since IS NOT NULL",
    )
    .bind(accounts)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Deletes the account's rows of [`SMALL_TABLES`].
async fn delete_small_rows(tx: &mut sqlx::PgConnection, account: &str) -> StoreResult<()> {
    for table in SMALL_TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE account_id = $1"
        )))
        .bind(account)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
