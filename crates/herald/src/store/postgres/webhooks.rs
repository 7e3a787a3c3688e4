//! Webhooks on PostgreSQL.

use super::{PgStore, push_page, scope};
use crate::domain::{AccountId, Timestamp, Webhook, WebhookId, WebhookStatus};
use crate::store::rows::{
    WEBHOOK_COLUMNS, WebhookColumns, WebhookValues, paginate, webhook_column_count,
};
use crate::store::seal::Sealer;
use crate::store::{Page, PageRequest, StoreResult, WebhookFlow, Webhooks};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder};

#[async_trait]
impl Webhooks for PgStore {
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
        let mut conn = self.pool.acquire().await?;
        insert_webhook_on(&mut conn, w, &self.sealer).await
    }

    async fn callback_webhook(&self, account: &AccountId) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn set_callback_webhook(&self, w: &Webhook) -> StoreResult<Webhook> {
        let mut tx = self.pool.begin().await?;
        // Serialise concurrent PUTs of one account on its row.
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(w.account_id.as_str())
            .execute(&mut *tx)
            .await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL",
        )
        .bind(w.account_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(id) => {
                // The row keeps its own id, which its sealed columns are bound to.
                let current = Webhook {
                    id: WebhookId::from_trusted(id),
                    ..w.clone()
                };
                let v = WebhookValues::of(&current, &self.sealer);
                sqlx::query(
                    "UPDATE webhooks SET url = $1, signing = $2, format = $3, updated_at = $4, secret = $5,
                     previous_secret = $6, previous_secret_until = $7 WHERE id = $8",
                )
                .bind(w.url.as_str())
                .bind(&v.signing)
                .bind(w.format.as_str())
                .bind(w.updated_at.millis())
                .bind(&v.secret)
                .bind(&v.previous_secret)
                .bind(v.previous_secret_until)
                .bind(current.id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => insert_webhook_on(&mut tx, w, &self.sealer).await?,
        }
        let row: WebhookColumns = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(w.account_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut q = QueryBuilder::new("UPDATE webhooks SET status = ");
        q.push_bind(status.as_str())
            .push(", disabled_reason = ")
            .push_bind(reason.map(str::to_owned))
            .push(", failing_since = NULL, failures_in_a_row = 0, probe_at = NULL, updated_at = ")
            .push_bind(now.millis())
            .push(" WHERE deleted_at IS NULL AND id = ")
            .push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        q.push(format!(" RETURNING {WEBHOOK_COLUMNS}"));
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
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
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
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
        let rows: Vec<WebhookColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(|r| r.into_webhook(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |w| w.id.to_string()))
    }

    async fn update_webhook(&self, w: &Webhook) -> StoreResult<bool> {
        let v = WebhookValues::of(w, &self.sealer);
        let done = sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, secret = $3, description = $4, retry = $5,
             status = $6, updated_at = $7, signing = $8, format = $9, previous_secret = $10,
             previous_secret_until = $11, disabled_reason = $12, rate_limit = $15, ordering = $16
             WHERE id = $13 AND account_id = $14 AND deleted_at IS NULL",
        )
        .bind(w.url.as_str())
        .bind(&v.events)
        .bind(&v.secret)
        .bind(&w.description)
        .bind(&v.retry)
        .bind(w.status.as_str())
        .bind(w.updated_at.millis())
        .bind(&v.signing)
        .bind(w.format.as_str())
        .bind(&v.previous_secret)
        .bind(v.previous_secret_until)
        .bind(&w.disabled_reason)
        .bind(w.id.as_str())
        .bind(w.account_id.as_str())
        .bind(&v.rate_limit)
        .bind(w.ordering.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn webhook_flow(
        &self,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<Option<WebhookFlow>> {
        let row: Option<crate::store::flow::FlowColumns> =
            sqlx::query_as(crate::store::flow::WEBHOOK_FLOW)
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.at(now)))
    }

    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new("UPDATE webhooks SET deleted_at = ");
        q.push_bind(now.millis())
            .push(" WHERE deleted_at IS NULL AND id = ")
            .push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        if q.build().execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL,
             locked_until = NULL, updated_at = $1 WHERE webhook_id = $2 AND status = 'pending'",
        )
        .bind(now.millis())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

pub(super) async fn insert_webhook_on(
    conn: &mut sqlx::PgConnection,
    w: &Webhook,
    sealer: &Sealer,
) -> StoreResult<()> {
    insert_webhook_or(conn, w, sealer, "").await
}

/// Stores a new webhook, its secrets sealed, with `on_conflict` (an `ON CONFLICT` clause, or
/// nothing) deciding what happens when its id is taken.
pub(super) async fn insert_webhook_or(
    conn: &mut sqlx::PgConnection,
    w: &Webhook,
    sealer: &Sealer,
    on_conflict: &str,
) -> StoreResult<()> {
    let v = WebhookValues::of(w, sealer);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ({}) {on_conflict}",
        (1..=webhook_column_count())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
    .bind(w.id.as_str())
    .bind(w.account_id.as_str())
    .bind(w.url.as_str())
    .bind(&v.events)
    .bind(&v.secret)
    .bind(&w.description)
    .bind(&v.retry)
    .bind(w.status.as_str())
    .bind(w.created_at.millis())
    .bind(w.updated_at.millis())
    .bind(w.kind.as_str())
    .bind(&w.job_id)
    .bind(&v.signing)
    .bind(w.format.as_str())
    .bind(&v.previous_secret)
    .bind(v.previous_secret_until)
    .bind(&w.disabled_reason)
    .bind(w.failing_since.map(Timestamp::millis))
    .bind(&v.rate_limit)
    .bind(w.ordering.as_str())
    // A new webhook is neither paused nor probing (`paused_until`, `probe_at`).
    .bind(None::<i64>)
    .bind(None::<i64>)
    .execute(conn)
    .await?;
    Ok(())
}
