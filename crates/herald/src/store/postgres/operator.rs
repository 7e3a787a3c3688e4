//! The operator's webhook on PostgreSQL ([`crate::store::operator`]). Nodes starting together
//! each write it; the upsert makes that one row whatever the order.

use super::PgStore;
use super::webhooks::insert_webhook_or;
use crate::domain::{Timestamp, Webhook, WebhookId};
use crate::store::operator::{ACCOUNT, ACCOUNT_NAME, INSERT_ACCOUNT, UPSERT_WEBHOOK, WEBHOOK};
use crate::store::{OperatorWebhook, StoreResult, Webhooks};
use async_trait::async_trait;

#[async_trait]
impl OperatorWebhook for PgStore {
    async fn set_operator_webhook(
        &self,
        webhook: Option<&Webhook>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let Some(w) = webhook else {
            let id = WebhookId::from_trusted(WEBHOOK.to_owned());
            self.delete_webhook(None, &id, now).await?;
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_ACCOUNT)
            .bind(ACCOUNT)
            .bind(ACCOUNT_NAME)
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
        insert_webhook_or(&mut tx, w, &self.sealer, UPSERT_WEBHOOK).await?;
        tx.commit().await?;
        Ok(())
    }
}
