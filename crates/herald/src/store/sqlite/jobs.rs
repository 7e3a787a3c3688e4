//! Jobs on SQLite: a status change and its event in one transaction of the writer thread, which
//! writes one transaction at a time, so concurrent updates of a job each see the one before.

use super::publish::insert_event;
use super::webhooks::insert_webhook_on;
use super::{Commit, SqliteStore, scope};
use crate::domain::{AccountId, Job, JobPatch, Timestamp, Webhook};
use crate::store::rows::{JOB_COLUMNS, JobColumns, paginate};
use crate::store::{
    JobCreated, JobCursor, JobUpdate, Jobs, NewEvent, Page, PageRequest, StoreResult,
};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use sqlx::QueryBuilder;

#[async_trait]
impl Jobs for SqliteStore {
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated> {
        let (job, webhook, sealer) = (job.clone(), webhook.cloned(), self.sealer.clone());
        self.write_alone(Commit::Durable, move |tx| {
            let inserted = write_job(tx, &job, true)?;
            if !inserted {
                return Ok(JobCreated::Exists);
            }
            if let Some(w) = &webhook {
                insert_webhook_on(tx, w, &sealer)?;
            }
            let deliveries = insert_event(tx, &NewEvent::for_job(&job), Timestamp::now(), &sealer)?;
            Ok(JobCreated::Created { deliveries })
        })
        .await
    }

    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>> {
        let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = "));
        q.push_bind(id.to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<JobColumns> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(JobColumns::into_job).transpose()
    }

    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        let (account, id, patch) = (account.cloned(), id.to_owned(), patch.clone());
        let sealer = self.sealer.clone();
        self.write_alone(Commit::Durable, move |tx| {
            let Some(job) = fetch_job(tx, account.as_ref(), &id)? else {
                return Ok(JobUpdate::NotFound);
            };
            let (next, changed) = match job.apply(&patch, now) {
                Ok(applied) => applied,
                Err(conflict) => return Ok(JobUpdate::Refused(conflict)),
            };
            write_job(tx, &next, false)?;
            let (event, deliveries) = if changed {
                let e = NewEvent::for_job(&next);
                let deliveries = insert_event(tx, &e, now, &sealer)?;
                (Some(e.id), deliveries)
            } else {
                (None, 0)
            };
            Ok(JobUpdate::Updated {
                job: next,
                event,
                deliveries,
            })
        })
        .await
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
        let rows: Vec<JobColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(JobColumns::into_job)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |j| JobCursor::of(j).text()))
    }
}

/// The job, as the writer sees it.
fn fetch_job(
    conn: &rusqlite::Connection,
    account: Option<&AccountId>,
    id: &str,
) -> StoreResult<Option<Job>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)"
        ))?
        .query_row(
            (id, account.map(AccountId::as_str)),
            JobColumns::from_rusqlite,
        )
        .optional()?;
    row.map(JobColumns::into_job).transpose()
}

/// Inserts (false if the id is taken) or updates a job.
fn write_job(conn: &rusqlite::Connection, j: &Job, insert: bool) -> StoreResult<bool> {
    let sql = if insert {
        "INSERT INTO jobs (status, progress, input, result, error, webhook_url, created_at, updated_at,
         completed_at, id, account_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING"
    } else {
        "UPDATE jobs SET status = ?, progress = ?, input = ?, result = ?, error = ?, webhook_url = ?,
         created_at = ?, updated_at = ?, completed_at = ? WHERE id = ? AND account_id = ? AND kind = ?"
    };
    let done = conn.prepare_cached(sql)?.execute((
        j.status.as_str(),
        j.progress,
        j.input.as_ref().map(|r| r.get()),
        j.result.as_ref().map(|r| r.get()),
        j.error.as_ref().map(|r| r.get()),
        &j.webhook_url,
        j.created_at.millis(),
        j.updated_at.millis(),
        j.completed_at.map(Timestamp::millis),
        &j.id,
        j.account.as_str(),
        &j.kind,
    ))?;
    Ok(done == 1)
}
