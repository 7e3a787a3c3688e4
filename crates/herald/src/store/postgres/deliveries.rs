//! Deliveries and their attempts on PostgreSQL.

use super::{CHANNEL, PgStore, push_page, scope};
use crate::domain::{AccountId, Attempt, Delivery, DeliveryId, Timestamp};
use crate::store::rows::{
    ATTEMPT_COLUMNS, AttemptColumns, DELIVERY_COLUMNS, DeliveryColumns, paginate,
};
use crate::store::{
    Deliveries, DeliveryQuery, Page, PageRequest, ReplayMissing, ReplayPage, RetryRequest,
    StoreResult,
};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};

#[async_trait]
impl Deliveries for PgStore {
    async fn replay_missing(&self, request: &ReplayMissing) -> StoreResult<ReplayPage> {
        self.replay_page(request).await
    }

    async fn get_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = "
        ));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<DeliveryColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
        row.map(DeliveryColumns::into_delivery).transpose()
    }

    async fn list_deliveries(
        &self,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE TRUE"
        ));
        scope(&mut q, "account_id", query.account.as_ref());
        if let Some(w) = &query.webhook {
            q.push(" AND webhook_id = ")
                .push_bind(w.as_str().to_owned());
        }
        if let Some(e) = &query.event {
            q.push(" AND event_id = ").push_bind(e.as_str().to_owned());
        }
        if let Some(s) = query.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(t) = &query.event_type {
            q.push(" AND event_type = ").push_bind(t.clone());
        }
        if let Some(since) = query.since {
            q.push(" AND created_at >= ").push_bind(since.millis());
        }
        if let Some(until) = query.until {
            q.push(" AND created_at < ").push_bind(until.millis());
        }
        push_page(&mut q, "id", page);
        let rows: Vec<DeliveryColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(DeliveryColumns::into_delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |d| d.id.to_string()))
    }

    async fn list_attempts(&self, delivery: &DeliveryId) -> StoreResult<Vec<Attempt>> {
        let rows: Vec<AttemptColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY started_at, number"
        )))
        .bind(delivery.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AttemptColumns::into_attempt).collect())
    }

    async fn retry_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
        now: Timestamp,
    ) -> StoreResult<RetryRequest> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new(
            "SELECT d.lease, w.deleted_at FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.id = ",
        );
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "d.account_id", account);
        q.push(" FOR UPDATE OF d");
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(RetryRequest::NotFound);
        };
        if row.get::<Option<i64>, _>("deleted_at").is_some() {
            return Ok(RetryRequest::Refused(
                "the delivery's webhook has been deleted".to_owned(),
            ));
        }
        // An attempt in flight right now already is the new attempt; leave it be.
        if row.get::<Option<String>, _>("lease").is_none() {
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1
                 WHERE id = $2",
            )
            .bind(now.millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        let delivery: DeliveryColumns = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RetryRequest::Scheduled(delivery.into_delivery()?))
    }
}
