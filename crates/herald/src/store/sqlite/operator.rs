//! The operator's webhook on SQLite ([`crate::store::operator`]).

use super::webhooks::insert_webhook_or;
use super::{Commit, SqliteStore};
use crate::domain::{Timestamp, Webhook, WebhookId};
use crate::store::operator::{ACCOUNT, ACCOUNT_NAME, INSERT_ACCOUNT, UPSERT_WEBHOOK, WEBHOOK};
use crate::store::{OperatorWebhook, StoreResult, Webhooks};
use async_trait::async_trait;

#[async_trait]
impl OperatorWebhook for SqliteStore {
    async fn set_operator_webhook(
        &self,
        webhook: Option<&Webhook>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let Some(w) = webhook.cloned() else {
            let id = WebhookId::from_trusted(WEBHOOK.to_owned());
            self.delete_webhook(None, &id, now).await?;
            return Ok(());
        };
        let sealer = self.sealer.clone();
        self.write_alone(Commit::Durable, move |tx| {
            tx.prepare_cached(INSERT_ACCOUNT)?
                .execute((ACCOUNT, ACCOUNT_NAME, now.millis()))?;
            insert_webhook_or(tx, &w, &sealer, UPSERT_WEBHOOK)
        })
        .await
    }
}
