//! Published events, read back, on PostgreSQL.

use super::{PgStore, push_page, scope};
use crate::domain::{AccountId, Event, EventId};
use crate::store::rows::{EVENT_COLUMNS, event_from_row, paginate};
use crate::store::{EventQuery, Events, Page, PageRequest, StoreResult};
use async_trait::async_trait;
use sqlx::QueryBuilder;

#[async_trait]
impl Events for PgStore {
    async fn get_event(
        &self,
        account: Option<&AccountId>,
        id: &EventId,
    ) -> StoreResult<Option<Event>> {
        let mut q = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = "));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row = q.build().fetch_optional(&self.pool).await?;
        row.map(|r| event_from_row(&r, "")).transpose()
    }

    async fn list_events(
        &self,
        query: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let mut q = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE TRUE"));
        scope(&mut q, "account_id", query.account.as_ref());
        if let Some(t) = &query.event_type {
            q.push(" AND type = ").push_bind(t.clone());
        }
        if let Some(since) = query.since {
            q.push(" AND timestamp >= ").push_bind(since.millis());
        }
        if let Some(until) = query.until {
            q.push(" AND timestamp < ").push_bind(until.millis());
        }
        if let Some(job) = &query.job {
            q.push(" AND job_id = ").push_bind(job.clone());
        }
        push_page(&mut q, "id", page);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| event_from_row(r, ""))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |e| e.id.to_string()))
    }
}
