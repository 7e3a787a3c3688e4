//! Jobs on SQLite: a status change and its event in one transaction on the single writer.

use super::webhooks::insert_webhook_on;
use super::{SqliteStore, publish::insert_event_sqlx, scope};
use crate::domain::{AccountId, Job, JobPatch, Timestamp, Webhook};
use crate::store::rows::{JOB_COLUMNS, JobColumns};
use crate::store::{JobCreated, JobUpdate, Jobs, NewEvent, StoreResult};
use async_trait::async_trait;
use sqlx::QueryBuilder;

#[async_trait]
impl Jobs for SqliteStore {
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated> {
        let mut tx = self.durable_begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
            .bind(&job.id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(JobCreated::Exists);
        }
        write_job(&mut tx, job, true).await?;
        if let Some(w) = webhook {
            insert_webhook_on(&mut tx, w, &self.sealer).await?;
        }
        let deliveries = insert_event_sqlx(
            &mut tx,
            &NewEvent::for_job(job),
            Timestamp::now(),
            &self.sealer,
        )
        .await?;
        tx.commit().await?;
        Ok(JobCreated::Created { deliveries })
    }

    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>> {
        let mut conn = self.reader.acquire().await?;
        fetch_job(&mut conn, account, id).await
    }

    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        // The single writer connection serialises updates: the read below sees every earlier one.
        let mut tx = self.durable_begin().await?;
        let Some(job) = fetch_job(&mut tx, account, id).await? else {
            return Ok(JobUpdate::NotFound);
        };
        let (next, changed) = match job.apply(patch, now) {
            Ok(applied) => applied,
            Err(conflict) => return Ok(JobUpdate::Refused(conflict)),
        };
        write_job(&mut tx, &next, false).await?;
        let (event, deliveries) = if changed {
            let e = NewEvent::for_job(&next);
            let deliveries = insert_event_sqlx(&mut tx, &e, now, &self.sealer).await?;
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
}

async fn fetch_job(
    conn: &mut sqlx::SqliteConnection,
    account: Option<&AccountId>,
    id: &str,
) -> StoreResult<Option<Job>> {
    let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = "));
    q.push_bind(id.to_owned());
    scope(&mut q, "account_id", account);
    let row: Option<JobColumns> = q.build_query_as().fetch_optional(conn).await?;
    row.map(JobColumns::into_job).transpose()
}

async fn write_job(conn: &mut sqlx::SqliteConnection, j: &Job, insert: bool) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO jobs (status, progress, input, result, error, webhook_url, created_at, updated_at, completed_at,
         id, account_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "UPDATE jobs SET status = ?, progress = ?, input = ?, result = ?, error = ?, webhook_url = ?, created_at = ?,
         updated_at = ?, completed_at = ? WHERE id = ? AND account_id = ? AND kind = ?"
    };
    sqlx::query(sql)
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
    Ok(())
}
