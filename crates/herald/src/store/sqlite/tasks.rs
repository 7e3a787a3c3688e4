//! Background tasks on SQLite: their rows and batches are written on the writer thread like the
//! other rare writes, each a transaction of its own, so a batch's lease check, its re-queues
//! and the move of its cursor are one step. Counts are read on a reader.

use super::{Commit, SqliteStore, push_page, scope};
use crate::domain::{AccountId, RequeueFilter, Task, TaskId, Timestamp};
use crate::store::rows::paginate;
use crate::store::tasks::{Dialect, Sql, TASK_COLUMNS, TaskColumns, advance_task, bind_params};
use crate::store::{
    BatchOutcome, NewTask, Page, PageRequest, RequeueBatch, StoreResult, TaskLease, TaskQueue,
    Tasks,
};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use sqlx::query::QueryScalar;
use sqlx::{AssertSqlSafe, QueryBuilder};

#[async_trait]
impl Tasks for SqliteStore {
    async fn count_requeueable(&self, filter: &RequeueFilter) -> StoreResult<u64> {
        let sql = Sql::count_requeueable(Dialect::Sqlite, filter);
        let query: QueryScalar<'_, sqlx::Sqlite, i64, _> =
            sqlx::query_scalar(AssertSqlSafe(sql.text.clone()));
        let n = bind_params!(query, &sql.params)
            .fetch_one(&self.reader)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn create_task(&self, task: &NewTask) -> StoreResult<Task> {
        let stored = task.to_task();
        let row = stored.clone();
        self.write_alone(Commit::Durable, move |tx| {
            tx.prepare_cached(
                "INSERT INTO tasks (id, account_id, kind, params, state, counted, done,
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, 0, ?6, ?6)",
            )?
            .execute((
                row.id.as_str(),
                row.account.as_ref().map(AccountId::as_str),
                row.kind.as_str(),
                &row.params,
                row.counted as i64,
                row.created_at.millis(),
            ))?;
            Ok(())
        })
        .await?;
        Ok(stored)
    }

    async fn get_task(
        &self,
        account: Option<&AccountId>,
        id: &TaskId,
    ) -> StoreResult<Option<Task>> {
        let mut q = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = "));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<TaskColumns> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(TaskColumns::into_task).transpose()
    }

    async fn list_tasks(
        &self,
        account: Option<&AccountId>,
        page: &PageRequest,
    ) -> StoreResult<Page<Task>> {
        let mut q = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE TRUE"));
        scope(&mut q, "account_id", account);
        push_page(&mut q, "id", page);
        let rows: Vec<TaskColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(TaskColumns::into_task)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |t| t.id.to_string()))
    }
}

#[async_trait]
impl TaskQueue for SqliteStore {
    async fn lease_task(&self, lease: &TaskLease) -> StoreResult<Option<Task>> {
        let lease = lease.clone();
        self.write_alone(Commit::Relaxed, move |tx| {
            let row = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET state = 'running', lease_node = ?1, lease_token = ?2,
                       lease_until = ?3, updated_at = ?4
                     WHERE id = (SELECT id FROM tasks WHERE state IN ('queued', 'running')
                                   AND (state = 'queued' OR lease_until < ?4)
                                 ORDER BY id LIMIT 1)
                     RETURNING {TASK_COLUMNS}"
                ))?
                .query_row(
                    (
                        &lease.node,
                        &lease.token,
                        lease.until.millis(),
                        lease.now.millis(),
                    ),
                    TaskColumns::from_rusqlite,
                )
                .optional()?;
            row.map(TaskColumns::into_task).transpose()
        })
        .await
    }

    async fn requeue_batch(&self, batch: &RequeueBatch) -> StoreResult<BatchOutcome> {
        let batch = batch.clone();
        self.write_alone(Commit::Relaxed, move |tx| {
            let held: Option<(Option<String>, i64)> = tx
                .prepare_cached(
                    "SELECT cursor_id, done FROM tasks
                     WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                )?
                .query_row((batch.task.as_str(), &batch.token), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((cursor, done)) = held else {
                return Ok(BatchOutcome::Lost);
            };
            let pick = Sql::pick_requeueable(
                Dialect::Sqlite,
                &batch.filter,
                cursor.as_deref(),
                batch.limit,
            );
            let picked: Vec<String> = tx
                .prepare_cached(&pick.text)?
                .query_map(rusqlite::params_from_iter(&pick.params), |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let requeued = if picked.is_empty() {
                0
            } else {
                let ids = serde_json::to_string(&picked).expect("strings serialize");
                tx.prepare_cached(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, updated_at = ?1
                     WHERE id IN (SELECT value FROM json_each(?2))",
                )?
                .execute((batch.now.millis(), &ids))? as u64
            };
            let advance = advance_task(Dialect::Sqlite, &batch, &picked, requeued);
            tx.prepare_cached(&advance.text)?
                .execute(rusqlite::params_from_iter(&advance.params))?;
            Ok(BatchOutcome::Requeued {
                requeued,
                done: done.max(0) as u64 + requeued,
                finished: batch.advance(&picked).1,
            })
        })
        .await
    }

    async fn due_backlog(
        &self,
        filter: &RequeueFilter,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        let sql = Sql::due_backlog(Dialect::Sqlite, filter, now, limit);
        let query: QueryScalar<'_, sqlx::Sqlite, i64, _> =
            sqlx::query_scalar(AssertSqlSafe(sql.text.clone()));
        let n = bind_params!(query, &sql.params)
            .fetch_one(&self.reader)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn renew_task(
        &self,
        id: &TaskId,
        token: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (id, token) = (id.to_string(), token.to_owned());
        self.write_alone(Commit::Relaxed, move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_until = ?1, updated_at = ?2
                     WHERE id = ?3 AND lease_token = ?4 AND state = 'running'",
                )?
                .execute((until.millis(), now.millis(), &id, &token))?;
            Ok(n == 1)
        })
        .await
    }

    async fn fail_task(
        &self,
        id: &TaskId,
        token: &str,
        error: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (id, token, error) = (id.to_string(), token.to_owned(), error.to_owned());
        self.write_alone(Commit::Durable, move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET state = 'failed', error = ?1, finished_at = ?2, updated_at = ?2,
                       lease_node = NULL, lease_token = NULL, lease_until = NULL
                     WHERE id = ?3 AND lease_token = ?4 AND state = 'running'",
                )?
                .execute((&error, now.millis(), &id, &token))?;
            Ok(n == 1)
        })
        .await
    }
}
