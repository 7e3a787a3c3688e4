//! Jobs on PostgreSQL: a status change and its event in one transaction, under the job's row
//! lock.

use super::webhooks::insert_webhook_on;
use super::{PgStore, publish::insert_event, scope};
use crate::domain::{AccountId, Job, JobPatch, Timestamp, Webhook};
use crate::store::rows::{JOB_COLUMNS, JobColumns, paginate};
use crate::store::{
    JobCreated, JobCursor, JobUpdate, Jobs, NewEvent, Page, PageRequest, StoreResult,
};
use async_trait::async_trait;
use sqlx::QueryBuilder;

#[async_trait]
impl Jobs for PgStore {
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated> {
        let mut tx = self.pool.begin().await?;
        let inserted = write_job(&mut tx, job, true).await?;
        if !inserted {
            return Ok(JobCreated::Exists);
        }
        if let Some(w) = webhook {
            insert_webhook_on(&mut tx, w, &self.sealer).await?;
        }
        let deliveries = insert_event(&mut tx, &NewEvent::for_job(job), Timestamp::now()).await?;
        tx.commit().await?;
        Ok(JobCreated::Created { deliveries })
    }

    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>> {
        let mut conn = self.pool.acquire().await?;
        fetch_job(&mut conn, account, id, false).await
    }

    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: concurrent updates of one job queue here, and each sees the one before.
        let Some(job) = fetch_job(&mut tx, account, id, true).await? else {
            return Ok(JobUpdate::NotFound);
        };
        let (next, changed) = match job.apply(patch, now) {
            Ok(applied) => applied,
            Err(conflict) => return Ok(JobUpdate::Refused(conflict)),
        };
        write_job(&mut tx, &next, false).await?;
        let (event, deliveries) = if changed {
            let e = NewEvent::for_job(&next);
            let deliveries = insert_event(&mut tx, &e, now).await?;
            (Some(e.id), deliveries)
        } else {
            (None, 0)
        };
        tx.commit().await?;
        Ok(JobUpdate::Updated {
            job: next,
            event,
            deliveries,
        })
    }

    async fn list_jobs(&self, account: &AccountId, page: &PageRequest) -> StoreResult<Page<Job>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = "
        ));
        q.push_bind(account.as_str().to_owned());
        if let Some(after) = page.after.as_deref().and_then(JobCursor::parse) {
            q.push(" AND (created_at, id) < (")
                .push_bind(after.created_at.millis())
                .push(", ")
                .push_bind(after.id)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows: Vec<JobColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(JobColumns::into_job)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |j| JobCursor::of(j).text()))
    }
}

async fn fetch_job(
    conn: &mut sqlx::PgConnection,
    account: Option<&AccountId>,
    id: &str,
    for_update: bool,
) -> StoreResult<Option<Job>> {
    let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = "));
    q.push_bind(id.to_owned());
    scope(&mut q, "account_id", account);
    if for_update {
        q.push(" FOR UPDATE");
    }
    let row: Option<JobColumns> = q.build_query_as().fetch_optional(conn).await?;
    row.map(JobColumns::into_job).transpose()
}

/// Inserts (false if the id is taken) or updates a job.
async fn write_job(conn: &mut sqlx::PgConnection, j: &Job, insert: bool) -> StoreResult<bool> {
    let sql = if insert {
        "INSERT INTO jobs (status, progress, input, result, error, webhook_url, created_at, updated_at,
         completed_at, id, account_id, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING"
    } else {
        "UPDATE jobs SET status = $1, progress = $2, input = $3, result = $4, error = $5, webhook_url = $6,
         created_at = $7, updated_at = $8, completed_at = $9 WHERE id = $10 AND account_id = $11 AND kind = $12"
    };
    let done = sqlx::query(sql)
        .bind(j.status.as_str())
        .bind(j.progress)
        .bind(j.input.as_ref().map(|r| r.get()))
        .bind(j.result.as_ref().map(|r| r.get()))
        .bind(j.error.as_ref().map(|r| r.get()))
        .bind(&j.webhook_url)
        .bind(j.created_at.millis())
        .bind(j.updated_at.millis())
        .bind(j.completed_at.map(Timestamp::millis))
        .bind(&j.id)
        .bind(j.account.as_str())
        .bind(&j.kind)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
