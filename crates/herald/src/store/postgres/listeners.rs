//! Listener webhooks (`herald listen --forward-to`) on PostgreSQL: opened, resumed and renewed by
//! the node holding their stream. Several nodes share the table: a resume on another node takes
//! the webhook over (`listener_node`), and the previous holder learns it at its next renewal.

use super::PgStore;
use super::webhooks::insert_webhook_on;
use crate::domain::{AccountId, Timestamp, Webhook, WebhookId};
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns};
use crate::store::{Listeners, StoreResult};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;

#[async_trait]
impl Listeners for PgStore {
    async fn open_listener(&self, w: &Webhook, node: &str, until: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_webhook_on(&mut tx, w, &self.sealer).await?;
        sqlx::query("UPDATE webhooks SET listener_node = $1, listener_until = $2 WHERE id = $3")
            .bind(node)
            .bind(until.millis())
            .bind(w.id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn resume_listener(
        &self,
        account: &AccountId,
        id: &WebhookId,
        node: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>> {
        let mut tx = self.pool.begin().await?;
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE webhooks SET listener_node = $1, listener_until = $2
             WHERE id = $3 AND account_id = $4 AND kind = 'listener' AND deleted_at IS NULL
             RETURNING {WEBHOOK_COLUMNS}"
        )))
        .bind(node)
        .bind(until.millis())
        .bind(id.as_str())
        .bind(account.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1, updated_at = $1
                 WHERE webhook_id = $2 AND status = 'pending' AND next_attempt_at > $1",
            )
            .bind(now.millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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
        let ids: Vec<&str> = ids.iter().map(WebhookId::as_str).collect();
        let held: Vec<String> = sqlx::query_scalar(
            "UPDATE webhooks SET listener_until = $1
             WHERE id = ANY($2) AND listener_node = $3 AND kind = 'listener' AND deleted_at IS NULL
             RETURNING id",
        )
        .bind(until.millis())
        .bind(&ids)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        Ok(held.into_iter().map(WebhookId::from_trusted).collect())
    }
}

/// In a retention transaction: deletes up to `limit` listener webhooks whose lease lapsed
/// before `now`, and cancels their pending deliveries (as deleting a webhook does).
pub(super) async fn remove_lapsed_listeners(
    tx: &mut sqlx::PgConnection,
    now: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    let lapsed: Vec<String> = sqlx::query_scalar(
        "UPDATE webhooks SET deleted_at = $1 WHERE id IN (
           SELECT id FROM webhooks WHERE kind = 'listener' AND deleted_at IS NULL AND listener_until < $1
           ORDER BY listener_until LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(now.millis())
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await?;
    if lapsed.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL,
         locked_until = NULL, updated_at = $1 WHERE webhook_id = ANY($2) AND status = 'pending'",
    )
    .bind(now.millis())
    .bind(&lapsed)
    .execute(&mut *tx)
    .await?;
    Ok(lapsed.len() as u64)
}
