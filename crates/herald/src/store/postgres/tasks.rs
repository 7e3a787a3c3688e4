//! Background tasks on PostgreSQL: a runner leases a task with `FOR UPDATE SKIP LOCKED`, so the
//! runners of several nodes never wait on each other; a batch locks its task's row, checks the
//! lease is still its own, and re-queues, moves the cursor and notifies the nodes in one
//! transaction.

use super::{CHANNEL, PgStore, push_page, scope};
use crate::domain::{AccountId, RequeueFilter, Task, TaskId, Timestamp};
use crate::store::rows::paginate;
use crate::store::tasks::{Dialect, Sql, TASK_COLUMNS, TaskColumns, advance_task, bind_params};
use crate::store::{
    BatchOutcome, NewTask, Page, PageRequest, RequeueBatch, StoreResult, TaskLease, TaskQueue,
    Tasks,
};
use async_trait::async_trait;
use sqlx::query::QueryScalar;
use sqlx::{AssertSqlSafe, QueryBuilder};

#[async_trait]
impl Tasks for PgStore {
    async fn count_requeueable(&self, filter: &RequeueFilter) -> StoreResult<u64> {
        let sql = Sql::count_requeueable(Dialect::Postgres, filter);
        let query: QueryScalar<'_, sqlx::Postgres, i64, _> =
            sqlx::query_scalar(AssertSqlSafe(sql.text.clone()));
        let n = bind_params!(query, &sql.params)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn create_task(&self, task: &NewTask) -> StoreResult<Task> {
        let t = task.to_task();
        sqlx::query(
            "INSERT INTO tasks (id, account_id, kind, params, state, counted, done,
             created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $6)",
        )
        .bind(t.id.as_str())
        .bind(t.account.as_ref().map(AccountId::as_str))
        .bind(t.kind.as_str())
        .bind(&t.params)
        .bind(t.counted as i64)
        .bind(t.created_at.millis())
        .execute(&self.pool)
        .await?;
        Ok(t)
    }

    async fn get_task(
        &self,
        account: Option<&AccountId>,
        id: &TaskId,
    ) -> StoreResult<Option<Task>> {
        let mut q = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = "));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<TaskColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
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
        let rows: Vec<TaskColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(TaskColumns::into_task)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |t| t.id.to_string()))
    }
}

#[async_trait]
impl TaskQueue for PgStore {
    async fn lease_task(&self, lease: &TaskLease) -> StoreResult<Option<Task>> {
        let row: Option<TaskColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE tasks SET state = 'running', lease_node = $1, lease_token = $2,
               lease_until = $3, updated_at = $4
             WHERE id = (SELECT id FROM tasks WHERE state IN ('queued', 'running')
                           AND (state = 'queued' OR lease_until < $4)
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               AND (state = 'queued' OR lease_until < $4)
             RETURNING {TASK_COLUMNS}"
        )))
        .bind(&lease.node)
        .bind(&lease.token)
        .bind(lease.until.millis())
        .bind(lease.now.millis())
        .fetch_optional(&self.pool)
        .await?;
        row.map(TaskColumns::into_task).transpose()
    }

    async fn requeue_batch(&self, batch: &RequeueBatch) -> StoreResult<BatchOutcome> {
        let mut tx = self.relaxed_begin().await?;
        // The task's row, locked: a second runner's batch waits here, then finds the lease gone.
        let held: Option<(Option<String>, i64)> = sqlx::query_as(
            "SELECT cursor_id, done FROM tasks
             WHERE id = $1 AND lease_token = $2 AND state = 'running' FOR UPDATE",
        )
        .bind(batch.task.as_str())
        .bind(&batch.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((cursor, done)) = held else {
            return Ok(BatchOutcome::Lost);
        };
        let pick = Sql::pick_requeueable(
            Dialect::Postgres,
            &batch.filter,
            cursor.as_deref(),
            batch.limit,
        );
        let query: QueryScalar<'_, sqlx::Postgres, String, _> =
            sqlx::query_scalar(AssertSqlSafe(pick.text.clone()));
        let picked: Vec<String> = bind_params!(query, &pick.params)
            .fetch_all(&mut *tx)
            .await?;
        let mut requeued = 0;
        if !picked.is_empty() {
            // The status is checked again under the rows' locks: a delivery retried meanwhile
            // (by hand, or by another task) is already queued and is left alone.
            requeued = sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1
                 WHERE id = ANY($2) AND status = $3",
            )
            .bind(batch.now.millis())
            .bind(&picked)
            .bind(batch.filter.status.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let advance = advance_task(Dialect::Postgres, batch, &picked, requeued);
        bind_params!(
            sqlx::query(AssertSqlSafe(advance.text.clone())),
            &advance.params
        )
        .execute(&mut *tx)
        .await?;
        if requeued > 0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(BatchOutcome::Requeued {
            requeued,
            done: done.max(0) as u64 + requeued,
            finished: batch.advance(&picked).1,
        })
    }

    async fn due_backlog(
        &self,
        filter: &RequeueFilter,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        let sql = Sql::due_backlog(Dialect::Postgres, filter, now, limit);
        let query: QueryScalar<'_, sqlx::Postgres, i64, _> =
            sqlx::query_scalar(AssertSqlSafe(sql.text.clone()));
        let n = bind_params!(query, &sql.params)
            .fetch_one(&self.pool)
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
        let done = sqlx::query(
            "UPDATE tasks SET lease_until = $1, updated_at = $2
             WHERE id = $3 AND lease_token = $4 AND state = 'running'",
        )
        .bind(until.millis())
        .bind(now.millis())
        .bind(id.as_str())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail_task(
        &self,
        id: &TaskId,
        token: &str,
        error: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET state = 'failed', error = $1, finished_at = $2, updated_at = $2,
               lease_node = NULL, lease_token = NULL, lease_until = NULL
             WHERE id = $3 AND lease_token = $4 AND state = 'running'",
        )
        .bind(error)
        .bind(now.millis())
        .bind(id.as_str())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
