//! Background tasks' storage, shared by both backends: the task row's columns, the requests
//! and answers of [`super::Tasks`] and [`super::TaskQueue`], and the SQL that finds the
//! deliveries a [`RequeueFilter`] takes, written once with each backend's placeholders.
//!
//! A task is worked by one runner at a time, under a lease (node, token, until) on its row.
//! Each batch is one transaction that checks the lease is still its runner's, re-queues the
//! next deliveries after the task's cursor (in id order), and moves the cursor and `done` past
//! them: so a runner that lost its lease changes nothing, and one that takes the task up after
//! a crash starts after the last committed batch, never re-queuing a delivery twice.

use super::StoreResult;
use super::rows::{columns, corrupt};
use crate::domain::{AccountId, RequeueFilter, Task, TaskId, TaskKind, TaskState, Timestamp};

columns! {
    /// The columns of a task, read by name (its lease and cursor stay in the store).
    TaskColumns, TASK_COLUMNS {
        id: String,
        account_id: Option<String>,
        kind: String,
        params: String,
        state: String,
        counted: i64,
        done: i64,
        created_at: i64,
        updated_at: i64,
        finished_at: Option<i64>,
        error: Option<String>,
    }
}

impl TaskColumns {
    pub fn into_task(self) -> StoreResult<Task> {
        Ok(Task {
            id: TaskId::from_trusted(self.id),
            account: self.account_id.map(AccountId::from_trusted),
            kind: TaskKind::parse(&self.kind).ok_or_else(|| corrupt("task kind", &self.kind))?,
            params: self.params,
            state: TaskState::parse(&self.state)
                .ok_or_else(|| corrupt("task state", &self.state))?,
            counted: self.counted.max(0) as u64,
            done: self.done.max(0) as u64,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            finished_at: self.finished_at.map(Timestamp::from_millis),
            error: self.error,
        })
    }
}

/// A re-queue task to store, `queued`.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: TaskId,
    /// The account it belongs to (and that may read it); `None` for the operator's.
    pub account: Option<AccountId>,
    pub kind: TaskKind,
    pub filter: RequeueFilter,
    /// Deliveries the filter took when it was made.
    pub counted: u64,
    pub now: Timestamp,
}

/// A runner asking for a task: `node` holds it under `token` until `until`.
#[derive(Clone, Debug)]
pub struct TaskLease {
    pub node: String,
    pub token: String,
    pub now: Timestamp,
    pub until: Timestamp,
}

/// One batch of a re-queue task, under the lease `token`.
#[derive(Clone, Debug)]
pub struct RequeueBatch {
    pub task: TaskId,
    pub token: String,
    pub filter: RequeueFilter,
    /// Most deliveries re-queued in this batch.
    pub limit: usize,
    pub now: Timestamp,
    /// The lease runs on to this.
    pub lease_until: Timestamp,
}

/// What a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The task is no longer this runner's (its lease lapsed and another took it, or it
    /// finished): nothing was written.
    Lost,
    Requeued {
        /// Re-queued by this batch.
        requeued: u64,
        /// By the task so far.
        done: u64,
        /// The batch came up short: nothing is left, and the task has succeeded.
        finished: bool,
    },
}

impl RequeueBatch {
    /// Of the deliveries a batch picked (in id order), where the cursor goes and whether the
    /// task is finished (the batch came up short).
    pub fn advance<'a>(&self, picked: &'a [String]) -> (Option<&'a str>, bool) {
        (picked.last().map(String::as_str), picked.len() < self.limit)
    }
}

/// How a backend writes its placeholders.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dialect {
    /// `?1`, `?2`, …
    Sqlite,
    /// `$1`, `$2`, …
    Postgres,
}

/// One bound value.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// A statement and its arguments, numbered in the order they are bound.
#[derive(Clone, Debug)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<Param>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
            dialect,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Binds the next argument where its placeholder goes.
    pub fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => self.text.push_str(&format!("?{n}")),
            Dialect::Postgres => self.text.push_str(&format!("${n}")),
        }
        self
    }

    fn bind_text(&mut self, value: &str) -> &mut Self {
        self.bind(Param::Text(value.to_owned()))
    }

    /// `FROM deliveries d … WHERE …`: the deliveries `filter` takes after `cursor`, their
    /// webhook not deleted.
    fn requeueable(&mut self, filter: &RequeueFilter, cursor: Option<&str>) -> &mut Self {
        let (lower, upper) = filter.id_range(cursor);
        self.push(
            " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.deleted_at IS NULL
              WHERE d.id > ",
        )
        .bind_text(&lower)
        .push(" AND d.id < ")
        .bind_text(&upper)
        .push(" AND d.status = ")
        .bind_text(filter.status.as_str());
        self.scope(filter)
    }

    /// The filter's account and webhook, if it names them.
    fn scope(&mut self, filter: &RequeueFilter) -> &mut Self {
        if let Some(a) = &filter.account {
            self.push(" AND d.account_id = ").bind_text(a.as_str());
        }
        if let Some(w) = &filter.webhook {
            self.push(" AND d.webhook_id = ").bind_text(w.as_str());
        }
        self
    }

    /// Counts the deliveries `filter` takes now (one `BIGINT`).
    pub fn count_requeueable(dialect: Dialect, filter: &RequeueFilter) -> Self {
        let mut sql = Self::new(dialect, "SELECT COUNT(*)");
        sql.requeueable(filter, None);
        sql
    }

    /// The ids of the next `limit` deliveries `filter` takes after `cursor`, in id order.
    pub fn pick_requeueable(
        dialect: Dialect,
        filter: &RequeueFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Self {
        let mut sql = Self::new(dialect, "SELECT d.id");
        sql.requeueable(filter, cursor)
            .push(" ORDER BY d.id LIMIT ")
            .bind(Param::Int(limit as i64));
        sql
    }

    /// Counts, up to `limit`, the deliveries in the filter's scope (its account, its webhook)
    /// waiting for a claim: pending, due, unleased, of an active webhook (a disabled one's wait
    /// for its enabling, and are nobody's backlog).
    pub fn due_backlog(
        dialect: Dialect,
        filter: &RequeueFilter,
        now: Timestamp,
        limit: usize,
    ) -> Self {
        let mut sql = Self::new(
            dialect,
            "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
              WHERE d.status = 'pending' AND w.status = 'active' AND d.next_attempt_at <= ",
        );
        sql.bind(Param::Int(now.millis()))
            .push(" AND (d.locked_until IS NULL OR d.locked_until <= ")
            .bind(Param::Int(now.millis()))
            .push(")")
            .scope(filter)
            .push(" LIMIT ")
            .bind(Param::Int(limit as i64))
            .push(") backlog");
        sql
    }
}

/// Moves a task past a batch, in the batch's transaction: its cursor to the last delivery
/// picked, `done` up by those re-queued, and either its lease renewed or, when the batch came
/// up short, the task succeeded and its lease let go.
pub(crate) fn advance_task(
    dialect: Dialect,
    batch: &RequeueBatch,
    picked: &[String],
    requeued: u64,
) -> Sql {
    let (cursor, finished) = batch.advance(picked);
    let now = batch.now.millis();
    let mut sql = Sql::new(dialect, "UPDATE tasks SET done = done + ");
    sql.bind(Param::Int(requeued as i64))
        .push(", updated_at = ")
        .bind(Param::Int(now));
    if let Some(cursor) = cursor {
        sql.push(", cursor_id = ").bind_text(cursor);
    }
    if finished {
        sql.push(
            ", state = 'succeeded', lease_node = NULL, lease_token = NULL, lease_until = NULL, \
             finished_at = ",
        )
        .bind(Param::Int(now));
    } else {
        sql.push(", lease_until = ")
            .bind(Param::Int(batch.lease_until.millis()));
    }
    sql.push(" WHERE id = ")
        .bind_text(batch.task.as_str())
        .push(" AND lease_token = ")
        .bind_text(&batch.token);
    sql
}

/// Binds a [`Sql`]'s arguments to an sqlx query of either backend, in order.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                $crate::store::tasks::Param::Int(i) => query.bind(*i),
                $crate::store::tasks::Param::Text(t) => query.bind(t.clone()),
            };
        }
        query
    }};
}
pub(crate) use bind_params;

impl NewTask {
    /// The task as it is stored: queued, nothing done.
    pub fn to_task(&self) -> Task {
        Task {
            id: self.id.clone(),
            account: self.account.clone(),
            kind: self.kind,
            params: self.filter.to_json(),
            state: TaskState::Queued,
            counted: self.counted,
            done: 0,
            created_at: self.now,
            updated_at: self.now,
            finished_at: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryStatus, WebhookId};
    use std::time::Duration;

    fn filter(webhook: Option<WebhookId>) -> RequeueFilter {
        let now = Timestamp::now();
        RequeueFilter {
            account: Some(AccountId::generate()),
            webhook,
            status: DeliveryStatus::Failed,
            since: now.minus(Duration::from_secs(60)),
            until: now,
        }
    }

    #[test]
    fn placeholders_are_numbered_in_the_order_arguments_are_bound() {
        let f = filter(Some(WebhookId::generate()));
        let sqlite = Sql::pick_requeueable(Dialect::Sqlite, &f, None, 10);
        let pg = Sql::pick_requeueable(Dialect::Postgres, &f, None, 10);
        assert_eq!(
            sqlite.params.len(),
            6,
            "bounds, status, account, webhook, limit"
        );
        for n in 1..=6 {
            assert!(sqlite.text.contains(&format!("?{n}")), "{}", sqlite.text);
            assert!(pg.text.contains(&format!("${n}")), "{}", pg.text);
        }
        assert!(!sqlite.text.contains("?7") && !pg.text.contains('?'));
        assert_eq!(
            sqlite.text.replace('?', "$"),
            pg.text,
            "only the dialect differs"
        );
        let unscoped = Sql::count_requeueable(
            Dialect::Sqlite,
            &RequeueFilter {
                account: None,
                webhook: None,
                ..f
            },
        );
        assert_eq!(unscoped.params.len(), 3);
        assert!(!unscoped.text.contains("account_id"));
    }

    #[test]
    fn a_short_batch_finishes_the_task_and_the_cursor_is_the_last_picked() {
        let batch = RequeueBatch {
            task: TaskId::generate(),
            token: "t".into(),
            filter: filter(None),
            limit: 3,
            now: Timestamp::now(),
            lease_until: Timestamp::now(),
        };
        let ids: Vec<String> = ["dlv_a", "dlv_b", "dlv_c"].map(String::from).to_vec();
        assert_eq!(batch.advance(&ids), (Some("dlv_c"), false));
        assert_eq!(batch.advance(&ids[..2]), (Some("dlv_b"), true));
        assert_eq!(batch.advance(&[]), (None, true));
        let finishing = advance_task(Dialect::Sqlite, &batch, &ids[..1], 1);
        assert!(finishing.text.contains("'succeeded'") && finishing.text.contains("cursor_id"));
        let going_on = advance_task(Dialect::Sqlite, &batch, &ids, 3);
        assert!(!going_on.text.contains("'succeeded'") && going_on.text.contains("lease_until"));
    }
}
