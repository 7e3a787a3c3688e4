//! The writer task: publishes, attempt results and claims' leases, written together in one
//! transaction per round and in as few round trips to sqlx's SQLite thread as the statements
//! allow.
//!
//! Each round trip (a "hop") wakes that thread and then this task again; on two cores those
//! wake-ups, not SQLite, were most of a write's cost. So a round sends its statements in
//! batches: the synchronous mode, `BEGIN`, every attempt result and the first lease (or the
//! events and their webhook lookup) in one hop, the deliveries and `COMMIT` in another.
//!
//! If a round with several requests fails, each is written again alone, so one bad request
//! fails alone.

use super::{event_from_row, publish_on};
use crate::domain::{AccountId, DeliveryStatus};
use crate::domain::{DeliveryId, Timestamp, Webhook};
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns};
use crate::store::seal::Sealer;
use crate::store::{
    AttemptRecord, ClaimedDelivery, Handoff, HealthPolicy, Intake, NewEvent, NextStep, Published,
    StoreResult, WebhookRef,
};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, Row, Sqlite, SqlitePool, Type};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Work for the writer besides publishes.
pub(super) enum QueueWrite {
    Record(RecordRequest),
    Lease(LeaseRequest),
}

/// Attempt results to write.
pub(super) struct RecordRequest {
    pub records: Vec<AttemptRecord>,
    pub health: HealthPolicy,
    pub reply: oneshot::Sender<StoreResult<()>>,
}

/// Deliveries a claim picked (on a reader connection) to lease to this node.
pub(super) struct LeaseRequest {
    pub picked: Vec<String>,
    pub lease: String,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub reply: oneshot::Sender<StoreResult<Vec<ClaimedDelivery>>>,
}

/// Most queue writes in one round.
const QUEUE_WRITES_PER_ROUND: usize = 16;

/// Statements sent to sqlx's SQLite thread in one go, with all their arguments.
///
/// The placeholders are plain `?`, bound in order across the statements, so each statement's
/// arguments must be added in the order its placeholders appear (a value used twice is added
/// twice). Numbered ones (`?3`) would not do: sqlx counts the gaps below a statement's numbers
/// as arguments used, and stops binding a later statement once that count passes the end.
pub(super) struct Hop {
    sql: String,
    args: SqliteArguments,
    /// Arguments added since the last statement.
    pending: usize,
}

impl Hop {
    pub fn new() -> Self {
        Self {
            sql: String::new(),
            args: SqliteArguments::default(),
            pending: 0,
        }
    }

    /// Adds the argument for the next `?` of the statement being built.
    pub fn arg<T>(&mut self, value: T) -> &'static str
    where
        T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + 'static,
    {
        self.args.add(value).expect("SQLite arguments encode");
        self.pending += 1;
        "?"
    }

    /// Adds a statement, whose `?`s take the arguments added since the last one.
    pub fn push(&mut self, statement: &str) {
        assert_eq!(
            statement.matches('?').count(),
            std::mem::take(&mut self.pending),
            "one argument per placeholder in {statement}"
        );
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
    }

    pub async fn execute(self, conn: &mut sqlx::SqliteConnection) -> StoreResult<()> {
        if !self.sql.is_empty() {
            sqlx::query_with(AssertSqlSafe(self.sql), self.args)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Runs the statements; the rows are those of the (one) statement that returns rows.
    pub async fn fetch_all(self, conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<SqliteRow>> {
        Ok(sqlx::query_with(AssertSqlSafe(self.sql), self.args)
            .fetch_all(conn)
            .await?)
    }
}

/// The writer task: waits for work, takes everything waiting (up to a round's limits), writes
/// it in one round and answers each request.
pub(super) async fn run(
    writer: SqlitePool,
    relaxed: Arc<AtomicBool>,
    mut requests: mpsc::Receiver<PublishRequest>,
    mut queue: mpsc::Receiver<QueueWrite>,
    intake: Arc<OnceLock<(Arc<dyn Intake>, Duration)>>,
    sealer: Sealer,
) {
    let mut publishes = Vec::with_capacity(GROUP_COMMIT);
    let mut writes = Vec::with_capacity(QUEUE_WRITES_PER_ROUND);
    loop {
        tokio::select! {
            n = requests.recv_many(&mut publishes, GROUP_COMMIT) => {
                if n == 0 {
                    return;
                }
                while writes.len() < QUEUE_WRITES_PER_ROUND && let Ok(w) = queue.try_recv() {
                    writes.push(w);
                }
            }
            n = queue.recv_many(&mut writes, QUEUE_WRITES_PER_ROUND) => {
                if n == 0 {
                    return;
                }
                while publishes.len() < GROUP_COMMIT && let Ok(r) = requests.try_recv() {
                    publishes.push(r);
                }
            }
        }
        let round = Round {
            writer: &writer,
            relaxed: &relaxed,
            intake: &intake,
            sealer: &sealer,
        };
        match round.write(&publishes, &writes).await {
            Ok(done) => answer(&mut publishes, &mut writes, done),
            Err(e) if publishes.len() + writes.len() > 1 => {
                tracing::warn!(error = %e, "a combined write failed; writing its parts one by one");
                for w in writes.drain(..) {
                    let one = [w];
                    let done = round.write(&[], &one).await;
                    let [w] = one;
                    answer_alone(w, done);
                }
                for p in std::mem::take(&mut publishes) {
                    let mut one = vec![p];
                    let done = round.write(&one, &[]).await;
                    match done {
                        Ok(done) => answer(&mut one, &mut Vec::new(), done),
                        Err(e) => group_commit::answer(&mut one, Err(e)),
                    }
                }
            }
            // A single request: its own error.
            Err(e) => match writes.pop() {
                Some(w) => answer_alone(w, Err(e)),
                None => group_commit::answer(&mut publishes, Err(e)),
            },
        }
    }
}

/// What a committed round answers.
struct Done {
    published: Vec<StoreResult<Published>>,
    /// One per [`QueueWrite`], in order: the leased deliveries (empty for a record).
    leased: Vec<StoreResult<Vec<ClaimedDelivery>>>,
}

fn answer(publishes: &mut Vec<PublishRequest>, writes: &mut Vec<QueueWrite>, done: Done) {
    group_commit::answer(publishes, Ok(done.published));
    for (w, leased) in writes.drain(..).zip(done.leased) {
        answer_alone(
            w,
            leased.map(|l| Done {
                published: Vec::new(),
                leased: vec![Ok(l)],
            }),
        );
    }
}

fn answer_alone(write: QueueWrite, done: StoreResult<Done>) {
    match write {
        QueueWrite::Record(r) => {
            let _ = r.reply.send(done.map(|_| ()));
        }
        QueueWrite::Lease(l) => {
            let result = done.and_then(|mut d| d.leased.pop().unwrap_or_else(|| Ok(Vec::new())));
            let _ = l.reply.send(result);
        }
    }
}

/// The writer connection during a round. The round's transaction is begun and ended by raw
/// statements, which sqlx does not track: a round that ends neither committed nor rolled back
/// (a failed `ROLLBACK`, a panic) closes the connection instead of giving it back to the pool
/// inside an open transaction, where the next writer's acknowledged writes would never commit.
struct RoundConn {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    settled: bool,
}

impl Drop for RoundConn {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.close_on_drop();
        }
    }
}

struct Round<'a> {
    writer: &'a SqlitePool,
    relaxed: &'a AtomicBool,
    intake: &'a OnceLock<(Arc<dyn Intake>, Duration)>,
    sealer: &'a Sealer,
}

impl Round<'_> {
    /// One transaction: durable (fsync at commit) when it holds publishes, else relaxed (see
    /// `SqliteStore::relaxed_begin`). Rolled back on any error.
    async fn write(
        &self,
        publishes: &[PublishRequest],
        writes: &[QueueWrite],
    ) -> StoreResult<Done> {
        let mut conn = RoundConn {
            conn: self.writer.acquire().await?,
            settled: false,
        };
        let mut handoff = self
            .intake
            .get()
            .filter(|_| !publishes.is_empty())
            .map(|(intake, lease)| Handoff::new(intake.clone(), Timestamp::now(), *lease));
        let result = self
            .write_on(&mut conn.conn, publishes, writes, handoff.as_mut())
            .await;
        match &result {
            Ok(_) => {
                conn.settled = true;
                if let Some(handoff) = handoff {
                    handoff.finish();
                }
            }
            // A failed ROLLBACK (also when no transaction had begun) leaves `settled` false:
            // the connection is then closed, never pooled inside a transaction.
            Err(_) => {
                conn.settled = sqlx::query("ROLLBACK")
                    .execute(&mut *conn.conn)
                    .await
                    .is_ok();
            }
        }
        result
    }

    async fn write_on(
        &self,
        conn: &mut sqlx::SqliteConnection,
        publishes: &[PublishRequest],
        writes: &[QueueWrite],
        handoff: Option<&mut Handoff>,
    ) -> StoreResult<Done> {
        let durable = !publishes.is_empty();
        let mut hop = Hop::new();
        // The mode is set in the hop itself; `relaxed` may only err towards NORMAL (see
        // `set_synchronous`).
        if durable {
            hop.push("PRAGMA synchronous = FULL");
        } else {
            self.relaxed.store(true, Ordering::Release);
            hop.push("PRAGMA synchronous = NORMAL");
        }
        hop.push("BEGIN IMMEDIATE");
        let records: Vec<&RecordRequest> = writes
            .iter()
            .filter_map(|w| match w {
                QueueWrite::Record(r) => Some(r),
                QueueWrite::Lease(_) => None,
            })
            .collect();
        for r in &records {
            push_record(&mut hop, &r.records, &r.health);
        }
        let leases: Vec<&LeaseRequest> = writes
            .iter()
            .filter_map(|w| match w {
                QueueWrite::Lease(l) => Some(l),
                QueueWrite::Record(_) => None,
            })
            .collect();
        let events: Vec<&NewEvent> = publishes.iter().flat_map(|r| &r.events).collect();
        let (keyed, plain): (Vec<&NewEvent>, Vec<&NewEvent>) = events
            .iter()
            .copied()
            .partition(|e| e.idempotency.is_some());
        let now = Timestamp::now();

        // The first hop ends with the one statement that returns rows, if any.
        let mut leased = Vec::with_capacity(leases.len());
        let mut hooks = None;
        if let Some(first) = leases.first() {
            push_lease(&mut hop, first);
            let rows = hop.fetch_all(conn).await?;
            leased.push(self.claimed(&rows, &first.lease)?);
        } else if keyed.is_empty() && !plain.is_empty() {
            super::push_insert_events(&mut hop, &plain, now);
            super::push_webhook_lookup(&mut hop, &plain);
            hooks = Some(hop.fetch_all(conn).await?);
        } else {
            hop.execute(conn).await?;
        }
        if durable {
            self.relaxed.store(false, Ordering::Release);
        }

        for r in &records {
            disable_unhealthy(conn, &r.records, &r.health, self.sealer).await?;
        }
        for l in leases.iter().skip(1) {
            let mut hop = Hop::new();
            push_lease(&mut hop, l);
            let rows = hop.fetch_all(conn).await?;
            leased.push(self.claimed(&rows, &l.lease)?);
        }

        // Events with an idempotency key, one by one, each under a savepoint: only a key can
        // refuse one event alone, and it does so before writing anything.
        let mut keyed_results = Vec::with_capacity(keyed.len());
        for event in &keyed {
            sqlx::query("SAVEPOINT publish").execute(&mut *conn).await?;
            let result = publish_on(conn, event, self.sealer).await;
            if result.is_err() {
                sqlx::query("ROLLBACK TO publish")
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query("RELEASE publish").execute(&mut *conn).await?;
            keyed_results.push(result);
        }

        let mut last = Hop::new();
        let mut counts = Vec::new();
        if !plain.is_empty() {
            let rows = match hooks {
                Some(rows) => rows,
                None => {
                    let mut hop = Hop::new();
                    super::push_insert_events(&mut hop, &plain, now);
                    super::push_webhook_lookup(&mut hop, &plain);
                    hop.fetch_all(conn).await?
                }
            };
            let webhooks = rows
                .iter()
                .map(|row| {
                    let columns: WebhookColumns = sqlx::FromRow::from_row(row)?;
                    columns.into_webhook(self.sealer)
                })
                .collect::<StoreResult<Vec<_>>>()?;
            counts = super::plan_deliveries(&mut last, &plain, &webhooks, now, handoff);
        }
        last.push("COMMIT");
        last.execute(conn).await?;

        let mut keyed_results = keyed_results.into_iter();
        let mut counts = counts.into_iter();
        let published = events
            .iter()
            .map(|e| {
                if e.idempotency.is_some() {
                    return keyed_results.next().expect("one result per keyed event");
                }
                let (deliveries, handed_over) = counts.next().unwrap_or((0, 0));
                Ok(Published {
                    event: e.to_event(),
                    deliveries,
                    handed_over,
                    replayed: false,
                })
            })
            .collect();
        let mut leased = leased.into_iter();
        let leased = writes
            .iter()
            .map(|w| match w {
                QueueWrite::Lease(_) => Ok(leased.next().expect("one per lease")),
                QueueWrite::Record(_) => Ok(Vec::new()),
            })
            .collect();
        Ok(Done { published, leased })
    }

    /// The leased deliveries from their rows. Each webhook is decoded (and its secrets
    /// opened) once per claim, not once per delivery: a claim is mostly a few webhooks' backlog.
    fn claimed(&self, rows: &[SqliteRow], lease: &str) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut webhooks: HashMap<String, Webhook> = HashMap::new();
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let webhook = match webhooks.get(&id) {
                    Some(w) => w.clone(),
                    None => {
                        let columns: WebhookColumns = sqlx::FromRow::from_row(row)?;
                        let w = columns.into_webhook(self.sealer)?;
                        webhooks.insert(id, w.clone());
                        w
                    }
                };
                Ok(ClaimedDelivery {
                    delivery_id: DeliveryId::from_trusted(row.get("d_id")),
                    lease: lease.to_owned(),
                    attempt_number: row.get::<i64, _>("d_attempts_made") as u32 + 1,
                    event: event_from_row(row, "e_")?,
                    webhook,
                })
            })
            .collect()
    }
}

/// Leases the picked deliveries, if still pending and free (they were read outside this
/// transaction), and reads them back with their events and webhooks.
fn push_lease(hop: &mut Hop, l: &LeaseRequest) {
    let lease = hop.arg(l.lease.clone());
    let until = hop.arg(l.lease_until.millis());
    let ids = hop.arg(serde_json::to_string(&l.picked).expect("strings serialize"));
    let now = hop.arg(l.now.millis());
    hop.push(&format!(
        "UPDATE deliveries SET lease = {lease}, locked_until = {until}
         WHERE id IN (SELECT value FROM json_each({ids}))
           AND status = 'pending' AND (locked_until IS NULL OR locked_until <= {now})"
    ));
    let lease = hop.arg(l.lease.clone());
    hop.push(&format!(
        "SELECT d.id AS d_id, d.attempts_made AS d_attempts_made,
                e.id AS e_id, e.account_id AS e_account_id, e.type AS e_type, e.timestamp AS e_timestamp, e.data AS e_data,
                {}
         FROM deliveries d JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.lease = {lease} ORDER BY d.next_attempt_at",
        WEBHOOK_COLUMNS
            .split(", ")
            .map(|c| format!("w.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

/// The attempts, their deliveries' new state, and the webhooks' failure records (cleared by a
/// success, started by the first failure since).
fn push_record(hop: &mut Hop, records: &[AttemptRecord], health: &HealthPolicy) {
    let attempts: Vec<_> = records
        .iter()
        .map(|r| {
            let a = &r.attempt;
            (
                a.id.as_str(),
                r.delivery_id.as_str(),
                a.number,
                a.started_at.millis(),
                a.duration_ms,
                a.status_code,
                a.error_kind.map(|k| k.as_str()),
                a.error.as_deref(),
                a.response_body.as_deref(),
                a.node.as_deref(),
            )
        })
        .collect();
    let attempts = hop.arg(serde_json::to_string(&attempts).expect("attempts serialize"));
    hop.push(&format!(
        "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, status_code, error_kind, error,
         response_body, node)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7,
                value->>8, value->>9
         FROM json_each({attempts})"
    ));
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| {
            let (status, next_at) = match r.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
                NextStep::Failed => (DeliveryStatus::Failed, None),
                NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(t.millis())),
            };
            (
                r.delivery_id.as_str(),
                r.lease.as_str(),
                status.as_str(),
                r.attempt.number,
                next_at,
            )
        })
        .collect();
    let now = hop.arg(health.now.millis());
    let outcomes = hop.arg(serde_json::to_string(&outcomes).expect("outcomes serialize"));
    // Only while the lease is still ours: a lease that ran out may have been taken again.
    hop.push(&format!(
        "UPDATE deliveries SET status = o.status, attempts_made = o.number, next_attempt_at = o.next_at,
                lease = NULL, locked_until = NULL, updated_at = {now}
         FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS status, value->>3 AS number,
                      value->>4 AS next_at FROM json_each({outcomes})) AS o
         WHERE deliveries.id = o.id AND deliveries.lease = o.lease"
    ));
    let changes = crate::store::failure_record_changes(records);
    if !changes.cleared.is_empty() {
        let cleared = hop.arg(serde_json::to_string(&changes.cleared).expect("ids serialize"));
        hop.push(&format!(
            "UPDATE webhooks SET failing_since = NULL
             WHERE id IN (SELECT value FROM json_each({cleared})) AND failing_since IS NOT NULL"
        ));
    }
    if !changes.started.is_empty() {
        let started = hop.arg(serde_json::to_string(&changes.started).expect("ids serialize"));
        hop.push(&format!(
            "UPDATE webhooks SET failing_since = s.since
             FROM (SELECT value->>0 AS id, value->>1 AS since FROM json_each({started})) AS s
             WHERE webhooks.id = s.id AND webhooks.failing_since IS NULL"
        ));
    }
}

/// Disables the webhooks these results show gone (410) or failing for longer than the policy
/// allows, each with a `webhook.disabled` event. Only a webhook whose last attempt here failed
/// can be newly failing for too long (a success clears its record), so a batch of successes
/// costs nothing here.
async fn disable_unhealthy(
    conn: &mut sqlx::SqliteConnection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    let gone: Vec<&str> = records
        .iter()
        .filter(|r| r.gone)
        .map(|r| r.webhook_id.as_str())
        .collect();
    let failing: Vec<String> = crate::store::failure_record_changes(records)
        .started
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let failing_before = health.now.minus(health.disable_after).millis();
    let checks: [(&str, Vec<&str>, &str); 2] = [
        (
            "gone",
            gone,
            "SELECT id, account_id, url FROM webhooks WHERE status = 'active' AND id IN (SELECT value FROM json_each(?))",
        ),
        (
            "failing",
            failing.iter().map(String::as_str).collect(),
            "SELECT id, account_id, url FROM webhooks WHERE status = 'active' AND id IN (SELECT value FROM json_each(?))
             AND failing_since <= ?",
        ),
    ];
    for (reason, ids, sql) in checks {
        if ids.is_empty() {
            continue;
        }
        let disabled: Vec<(String, String, String)> = sqlx::query_as(sql)
            .bind(serde_json::to_string(&ids).expect("strings serialize"))
            .bind(failing_before)
            .fetch_all(&mut *conn)
            .await?;
        for (id, account, url) in disabled {
            sqlx::query(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = ?, updated_at = ? WHERE id = ?",
            )
            .bind(reason)
            .bind(health.now.millis())
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            tracing::warn!(webhook_id = %id, reason, "webhook disabled");
            let who = WebhookRef {
                id,
                account: AccountId::from_trusted(account),
                url,
            };
            super::insert_event(
                conn,
                &NewEvent::webhook_disabled(&who, reason, health.now),
                health.now,
                sealer,
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hop_runs_every_statement_and_returns_the_select_rows() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&mut *conn)
            .await
            .unwrap();
        for round in 0..3 {
            for with_first in [true, false, true] {
                let mut hop = Hop::new();
                hop.push("BEGIN IMMEDIATE");
                if with_first {
                    let a = hop.arg(format!("a{round}"));
                    hop.push(&format!(
                        "INSERT INTO t (x) SELECT value FROM json_each(json_array({a}))"
                    ));
                }
                let b = hop.arg(format!("b{round}"));
                let b2 = hop.arg(format!("c{round}"));
                let b3 = hop.arg(format!("d{round}"));
                hop.push(&format!("INSERT INTO t (x) VALUES ({b}), ({b2}), ({b3})"));
                let c = hop.arg(format!("b{round}"));
                hop.push(&format!("SELECT x FROM t WHERE x = {c}"));
                let rows = hop.fetch_all(&mut conn).await.unwrap();
                let mut last = Hop::new();
                last.push("COMMIT");
                last.execute(&mut conn).await.unwrap();
                assert!(!rows.is_empty(), "round {round} with_first {with_first}");
            }
        }
    }
}
