//! Erasing an account on SQLite (see [`crate::store::erasure`]): the mark and every batch are
//! transactions of the writer thread, so a publish or an attempt result waits for one batch at
//! most, and nothing can slip between a batch's look and its delete.

use super::{Commit, SqliteStore};
use crate::domain::{AccountId, Timestamp};
use crate::store::StoreResult;
use crate::store::erasure::{
    DISABLED_REASON, ErasedRows, ErasureMark, ErasureStep, SMALL_TABLES, account_ids,
};
use rusqlite::OptionalExtension;
use std::collections::HashSet;

impl SqliteStore {
    /// [`crate::store::Accounts::begin_erasure`] on SQLite.
    pub(super) async fn mark_for_erasure(
        &self,
        id: &AccountId,
        now: Timestamp,
    ) -> StoreResult<ErasureMark> {
        let id = id.to_string();
        self.write_alone(Commit::Durable, move |tx| {
            let marked: Option<Option<i64>> = tx
                .prepare_cached("SELECT erasing_since FROM accounts WHERE id = ?")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            match marked {
                None => return Ok(ErasureMark::NoSuchAccount),
                Some(Some(_)) => return Ok(ErasureMark::AlreadyMarked),
                Some(None) => {}
            }
            tx.prepare_cached("UPDATE accounts SET erasing_since = ?1 WHERE id = ?2")?
                .execute((now.millis(), &id))?;
            tx.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?1 WHERE account_id = ?2 AND revoked_at IS NULL",
            )?
            .execute((now.millis(), &id))?;
            tx.prepare_cached(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = ?1, updated_at = ?2,
                        deleted_at = COALESCE(deleted_at, ?2)
                 WHERE account_id = ?3 AND (deleted_at IS NULL OR status = 'active')",
            )?
            .execute((DISABLED_REASON, now.millis(), &id))?;
            delete_small_rows(tx, &id)?;
            Ok(ErasureMark::Marked)
        })
        .await
    }

    /// [`crate::store::Retention::accounts_being_erased`] on SQLite.
    pub(super) async fn erasing_accounts(&self) -> StoreResult<Vec<AccountId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM accounts WHERE erasing_since IS NOT NULL ORDER BY erasing_since",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(account_ids(ids))
    }

    /// [`crate::store::Retention::erase_batch`] on SQLite.
    pub(super) async fn erase(
        &self,
        account: &AccountId,
        step: ErasureStep,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Option<ErasedRows>> {
        let account = account.to_string();
        self.write_alone(Commit::Relaxed, move |tx| {
            let limit = limit as i64;
            let rows = |sql: &str| -> StoreResult<u64> {
                Ok(tx.prepare_cached(sql)?.execute((&account, limit))? as u64)
            };
            let erased = match step {
                ErasureStep::Deliveries => {
                    let doomed: Vec<String> = tx
                        .prepare_cached(
                            "SELECT id FROM deliveries WHERE account_id = ?1
                               AND (locked_until IS NULL OR locked_until <= ?2) LIMIT ?3",
                        )?
                        .query_map((&account, now.millis(), limit), |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    if doomed.is_empty() {
                        return Ok(Some(ErasedRows::default()));
                    }
                    let ids = serde_json::to_string(&doomed).expect("strings serialize");
                    let attempts = tx
                        .prepare_cached(
                            "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?))",
                        )?
                        .execute([&ids])?;
                    let deliveries = tx
                        .prepare_cached(
                            "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))",
                        )?
                        .execute([&ids])?;
                    ErasedRows {
                        rows: deliveries as u64,
                        attempts: attempts as u64,
                    }
                }
                ErasureStep::Events => ErasedRows {
                    rows: rows(
                        "DELETE FROM events WHERE id IN (
                           SELECT e.id FROM events e WHERE e.account_id = ?1
                             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                           LIMIT ?2)",
                    )?,
                    attempts: 0,
                },
                ErasureStep::Jobs => ErasedRows {
                    rows: rows(
                        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE account_id = ?1 LIMIT ?2)",
                    )?,
                    attempts: 0,
                },
                ErasureStep::StatsRows => ErasedRows {
                    rows: rows(
                        "DELETE FROM webhook_stats WHERE rowid IN (
                           SELECT s.rowid FROM webhooks w JOIN webhook_stats s ON s.webhook_id = w.id
                           WHERE w.account_id = ?1 LIMIT ?2)",
                    )?,
                    attempts: 0,
                },
                ErasureStep::Webhooks => ErasedRows {
                    rows: rows(
                        "DELETE FROM webhooks WHERE id IN (
                           SELECT w.id FROM webhooks w WHERE w.account_id = ?1
                             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id)
                             AND NOT EXISTS (SELECT 1 FROM webhook_stats s WHERE s.webhook_id = w.id)
                           LIMIT ?2)",
                    )?,
                    attempts: 0,
                },
                ErasureStep::ApiKeys => ErasedRows {
                    rows: rows(
                        "DELETE FROM api_keys WHERE id IN (SELECT id FROM api_keys WHERE account_id = ?1 LIMIT ?2)",
                    )?,
                    attempts: 0,
                },
            };
            Ok(Some(erased))
        })
        .await
    }

    /// [`crate::store::Retention::finish_erasure`] on SQLite.
    pub(super) async fn erase_account_row(&self, account: &AccountId) -> StoreResult<bool> {
        let account = account.to_string();
        self.write_alone(Commit::Relaxed, move |tx| {
            delete_small_rows(tx, &account)?;
            tx.prepare_cached(
                "DELETE FROM accounts WHERE id = ?1 AND erasing_since IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM deliveries WHERE account_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM events WHERE account_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM jobs WHERE account_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM webhooks WHERE account_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM api_keys WHERE account_id = ?1)",
            )?
            .execute([&account])?;
            let left: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM accounts WHERE id = ?")?
                .query_row([&account], |r| r.get(0))?;
            Ok(left == 0)
        })
        .await
    }
}

/// Deletes the account's rows of [`SMALL_TABLES`].
fn delete_small_rows(tx: &rusqlite::Connection, account: &str) -> StoreResult<()> {
    for table in SMALL_TABLES {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE account_id = ?"))?
            .execute([account])?;
    }
    Ok(())
}

/// In a publish's transaction: which of `accounts` are being erased.
pub(super) fn erasing_among(
    conn: &rusqlite::Connection,
    accounts: &[&str],
) -> StoreResult<HashSet<String>> {
    let ids = serde_json::to_string(accounts).expect("strings serialize");
    Ok(conn
        .prepare_cached(
            "SELECT id FROM accounts
             WHERE id IN (SELECT value FROM json_each(?)) AND erasing_since IS NOT NULL",
        )?
        .query_map([ids], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}
