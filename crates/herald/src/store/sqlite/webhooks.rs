//! Webhooks on SQLite.

use super::{Commit, SqliteStore, push_page, scope};
use crate::domain::{AccountId, Timestamp, Webhook, WebhookId, WebhookStatus};
use crate::store::rows::{
    WEBHOOK_COLUMNS, WebhookColumns, WebhookValues, paginate, webhook_column_count,
};
use crate::store::seal::Sealer;
use crate::store::{Page, PageRequest, StoreResult, WebhookFlow, Webhooks};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use sqlx::{AssertSqlSafe, QueryBuilder};

#[async_trait]
impl Webhooks for SqliteStore {
    async fn webhook_stats(
        &self,
        id: &WebhookId,
        since: Timestamp,
    ) -> StoreResult<crate::store::stats::AttemptStats> {
        Ok(crate::store::stats::AttemptStats::sum(
            self.stats_since(id, since).await?,
        ))
    }

    async fn insert_webhook(&self, w: &Webhook) -> StoreResult<()> {
        let (w, sealer) = (w.clone(), self.sealer.clone());
        self.write_alone(Commit::Durable, move |tx| {
            insert_webhook_on(tx, &w, &sealer)
        })
        .await
    }

    async fn callback_webhook(&self, account: &AccountId) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(account.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn set_callback_webhook(&self, w: &Webhook) -> StoreResult<Webhook> {
        let (w, sealer) = (w.clone(), self.sealer.clone());
        let row = self
            .write_alone(Commit::Durable, move |tx| {
                let existing: Option<String> = tx
                    .prepare_cached(
                        "SELECT id FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL",
                    )?
                    .query_row([w.account_id.as_str()], |r| r.get(0))
                    .optional()?;
                match existing {
                    Some(id) => {
                        // The row keeps its own id, which its sealed columns are bound to.
                        let current = Webhook {
                            id: WebhookId::from_trusted(id),
                            ..w.clone()
                        };
                        let v = WebhookValues::of(&current, &sealer);
                        tx.prepare_cached(
                            "UPDATE webhooks SET url = ?, signing = ?, format = ?, updated_at = ?, secret = ?,
                             previous_secret = ?, previous_secret_until = ? WHERE id = ?",
                        )?
                        .execute((
                            w.url.as_str(),
                            &v.signing,
                            w.format.as_str(),
                            w.updated_at.millis(),
                            &v.secret,
                            &v.previous_secret,
                            v.previous_secret_until,
                            current.id.as_str(),
                        ))?;
                    }
                    None => insert_webhook_on(tx, &w, &sealer)?,
                }
                let row = tx
                    .prepare_cached(&format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL"
                    ))?
                    .query_row([w.account_id.as_str()], WebhookColumns::from_rusqlite)?;
                Ok(row)
            })
            .await?;
        row.into_webhook(&self.sealer)
    }

    async fn set_webhook_status(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        status: WebhookStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>> {
        let account = account.map(|a| a.to_string());
        let (id, reason) = (id.to_string(), reason.map(str::to_owned));
        let row = self
            .write_alone(Commit::Durable, move |tx| {
                let row = tx
                    .prepare_cached(&format!(
                        "UPDATE webhooks SET status = ?1, disabled_reason = ?2, failing_since = NULL, failures_in_a_row = 0, probe_at = NULL, updated_at = ?3
                         WHERE deleted_at IS NULL AND id = ?4 AND (?5 IS NULL OR account_id = ?5)
                         RETURNING {WEBHOOK_COLUMNS}"
                    ))?
                    .query_row(
                        (status.as_str(), &reason, now.millis(), &id, &account),
                        WebhookColumns::from_rusqlite,
                    )
                    .optional()?;
                Ok(row)
            })
            .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn get_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
    ) -> StoreResult<Option<Webhook>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND id = "
        ));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn list_webhooks(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<Webhook>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND kind <> 'job' AND account_id = "
        ));
        q.push_bind(account.as_str().to_owned());
        push_page(&mut q, "id", page);
        let rows: Vec<WebhookColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(|r| r.into_webhook(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |w| w.id.to_string()))
    }

    async fn update_webhook(&self, w: &Webhook) -> StoreResult<bool> {
        let v = WebhookValues::of(w, &self.sealer);
        let w = w.clone();
        self.write_alone(Commit::Durable, move |tx| {
            let updated = tx
                .prepare_cached(
                    "UPDATE webhooks SET url = ?, events = ?, secret = ?, description = ?, retry = ?, status = ?,
                     updated_at = ?, signing = ?, format = ?, previous_secret = ?, previous_secret_until = ?,
                     disabled_reason = ?, rate_limit = ?, ordering = ? WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
                )?
                .execute(rusqlite::params![
                    w.url.as_str(),
                    &v.events,
                    &v.secret,
                    &w.description,
                    &v.retry,
                    w.status.as_str(),
                    w.updated_at.millis(),
                    &v.signing,
                    w.format.as_str(),
                    &v.previous_secret,
                    v.previous_secret_until,
                    &w.disabled_reason,
                    &v.rate_limit,
                    w.ordering.as_str(),
                    w.id.as_str(),
                    w.account_id.as_str(),
                ])?;
            Ok(updated == 1)
        })
        .await
    }

    async fn webhook_flow(
        &self,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<Option<WebhookFlow>> {
        let row: Option<crate::store::flow::FlowColumns> =
            sqlx::query_as(crate::store::flow::WEBHOOK_FLOW)
                .bind(id.as_str())
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|r| r.at(now)))
    }

    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (account, id) = (account.map(|a| a.to_string()), id.to_string());
        self.write_alone(Commit::Durable, move |tx| {
            let deleted = tx
                .prepare_cached(
                    "UPDATE webhooks SET deleted_at = ?1
                     WHERE deleted_at IS NULL AND id = ?2 AND (?3 IS NULL OR account_id = ?3)",
                )?
                .execute((now.millis(), &id, &account))?;
            if deleted == 0 {
                return Ok(false);
            }
            tx.prepare_cached(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL, locked_until = NULL,
                 updated_at = ? WHERE webhook_id = ? AND status = 'pending'",
            )?
            .execute((now.millis(), &id))?;
            Ok(true)
        })
        .await
    }
}

/// Stores a new webhook, its secrets sealed.
pub(super) fn insert_webhook_on(
    conn: &rusqlite::Connection,
    w: &Webhook,
    sealer: &Sealer,
) -> StoreResult<()> {
    insert_webhook_or(conn, w, sealer, "")
}

/// Stores a new webhook, its secrets sealed, with `on_conflict` (an `ON CONFLICT` clause, or
/// nothing) deciding what happens when its id is taken.
pub(super) fn insert_webhook_or(
    conn: &rusqlite::Connection,
    w: &Webhook,
    sealer: &Sealer,
    on_conflict: &str,
) -> StoreResult<()> {
    let v = WebhookValues::of(w, sealer);
    conn.prepare_cached(&format!(
        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ({}) {on_conflict}",
        vec!["?"; webhook_column_count()].join(", ")
    ))?
    .execute(rusqlite::params![
        w.id.as_str(),
        w.account_id.as_str(),
        w.url.as_str(),
        &v.events,
        &v.secret,
        &w.description,
        &v.retry,
        w.status.as_str(),
        w.created_at.millis(),
        w.updated_at.millis(),
        w.kind.as_str(),
        &w.job_id,
        &v.signing,
        w.format.as_str(),
        &v.previous_secret,
        v.previous_secret_until,
        &w.disabled_reason,
        w.failing_since.map(Timestamp::millis),
        &v.rate_limit,
        w.ordering.as_str(),
        // A new webhook is neither paused nor probing (`paused_until`, `probe_at`).
        None::<i64>,
        None::<i64>,
    ])?;
    Ok(())
}
