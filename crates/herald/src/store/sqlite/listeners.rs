//! Listener webhooks (`herald listen --forward-to`) on SQLite: opened, resumed and renewed by the
//! node holding their stream, each a small transaction of the writer thread.

use super::webhooks::insert_webhook_on;
use super::{Commit, SqliteStore};
use crate::domain::{AccountId, Timestamp, Webhook, WebhookId};
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns};
use crate::store::{Listeners, StoreResult};
use async_trait::async_trait;
use rusqlite::OptionalExtension;

#[async_trait]
impl Listeners for SqliteStore {
    async fn open_listener(&self, w: &Webhook, node: &str, until: Timestamp) -> StoreResult<()> {
        let (w, sealer, node) = (w.clone(), self.sealer.clone(), node.to_owned());
        self.write_alone(Commit::Durable, move |tx| {
            insert_webhook_on(tx, &w, &sealer)?;
            tx.prepare_cached(
                "UPDATE webhooks SET listener_node = ?, listener_until = ? WHERE id = ?",
            )?
            .execute((&node, until.millis(), w.id.as_str()))?;
            Ok(())
        })
        .await
    }

    async fn resume_listener(
        &self,
        account: &AccountId,
        id: &WebhookId,
        node: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>> {
        let (account, id, node) = (account.to_string(), id.to_string(), node.to_owned());
        let row = self
            .write_alone(Commit::Durable, move |tx| {
                let row = tx
                    .prepare_cached(&format!(
                        "UPDATE webhooks SET listener_node = ?1, listener_until = ?2
                         WHERE id = ?3 AND account_id = ?4 AND kind = 'listener' AND deleted_at IS NULL
                         RETURNING {WEBHOOK_COLUMNS}"
                    ))?
                    .query_row(
                        (&node, until.millis(), &id, &account),
                        WebhookColumns::from_rusqlite,
                    )
                    .optional()?;
                if row.is_some() {
                    tx.prepare_cached(
                        "UPDATE deliveries SET next_attempt_at = ?1, updated_at = ?1
                         WHERE webhook_id = ?2 AND status = 'pending' AND next_attempt_at > ?1",
                    )?
                    .execute((now.millis(), &id))?;
                }
                Ok(row)
            })
            .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn renew_listeners(
        &self,
        ids: &[WebhookId],
        node: &str,
        until: Timestamp,
    ) -> StoreResult<Vec<WebhookId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(ids).expect("ids serialize");
        let node = node.to_owned();
        // Relaxed: a renewal lost in a power cut is made again at the next one, well within the
        // lease.
        let held: Vec<String> = self
            .write_alone(Commit::Relaxed, move |tx| {
                let held = tx
                    .prepare_cached(
                        "UPDATE webhooks SET listener_until = ?1
                         WHERE id IN (SELECT value FROM json_each(?2)) AND listener_node = ?3
                           AND kind = 'listener' AND deleted_at IS NULL
                         RETURNING id",
                    )?
                    .query_map((until.millis(), &ids, &node), |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(held)
            })
            .await?;
        Ok(held.into_iter().map(WebhookId::from_trusted).collect())
    }
}

/// In a retention transaction: deletes up to `limit` listener webhooks whose lease lapsed
/// before `now`, and cancels their pending deliveries (as deleting a webhook does).
pub(super) fn remove_lapsed_listeners(
    tx: &rusqlite::Connection,
    now: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    let lapsed: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM webhooks WHERE kind = 'listener' AND deleted_at IS NULL AND listener_until < ?
             ORDER BY listener_until LIMIT ?",
        )?
        .query_map((now.millis(), limit as i64), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if lapsed.is_empty() {
        return Ok(0);
    }
    let ids = serde_json::to_string(&lapsed).expect("strings serialize");
    tx.prepare_cached(
        "UPDATE webhooks SET deleted_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
    )?
    .execute((now.millis(), &ids))?;
    tx.prepare_cached(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL, locked_until = NULL,
         updated_at = ?1 WHERE webhook_id IN (SELECT value FROM json_each(?2)) AND status = 'pending'",
    )?
    .execute((now.millis(), &ids))?;
    Ok(lapsed.len() as u64)
}
