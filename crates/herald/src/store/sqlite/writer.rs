//! The writer thread: publishes, attempt results and claims' leases, written together in one
//! transaction per round, on a SQLite connection of its own driven right here.
//!
//! sqlx's SQLite driver runs every query on a thread of its own and sends each statement's
//! result and each row back through a channel; on two cores, those wake-ups, not SQLite, were
//! most of a round's time (a round was 2.7 ms for 16 events, the SQLite thread busy a quarter
//! of it). So the rounds run on this thread with rusqlite, every statement prepared once and
//! taken from the connection's cache: the only wake-ups left are the request that starts a
//! round and the answers that end it.
//!
//! The other writes (webhooks, accounts, jobs, retention) stay on sqlx's single writer
//! connection. The two never write at once: the writer thread holds that connection, unused,
//! from its pool while it has rounds to write (up to [`TURN`] at a time), so they take turns as
//! before, in the pool's fair order, with no `SQLITE_BUSY`. This relies on that pool having one
//! connection and on every other write going through it.
//!
//! If a round with several requests fails, each is written again alone, so one bad request
//! fails alone.

use super::hop::Hop;
use crate::domain::{AccountId, DeliveryStatus, Event};
use crate::domain::{DeliveryId, Timestamp, Webhook};
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::rows::{self, WEBHOOK_COLUMNS, WebhookColumns, corrupt};
use crate::store::seal::Sealer;
use crate::store::{
    AttemptRecord, ClaimedDelivery, Handoff, HealthPolicy, Intake, NewEvent, NextStep, Published,
    StoreError, StoreResult, WebhookRef,
};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
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

/// The writer thread's connection to the database file.
struct Conn {
    path: PathBuf,
    conn: rusqlite::Connection,
}

impl Conn {
    fn open(path: &Path) -> StoreResult<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As sqlx's connections: foreign keys enforced, the same busy timeout (a checkpoint
        // by a reader can still hold a lock briefly), FULL unless a round says otherwise, and
        // temporary tables in memory (some rounds' statements need one, and on disk each cost
        // a file created and deleted: e2e with one webhook, 13,400 deliveries/s against 13,100).
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(128);
        Ok(Self {
            path: path.to_owned(),
            conn,
        })
    }

    /// After a round that failed: makes sure no transaction is left open, opening the
    /// connection again if a `ROLLBACK` cannot end it.
    fn settle(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        let _ = self.conn.execute_batch("ROLLBACK");
        if !self.conn.is_autocommit() {
            match Self::open(&self.path) {
                Ok(fresh) => *self = fresh,
                Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite writer connection"),
            }
        }
    }
}

/// Starts the writer thread on `path`. It stops when the store drops its request channels,
/// after the round in hand; the returned receiver is disconnected once it has.
pub(super) fn spawn(
    path: &Path,
    turn: SqlitePool,
    requests: mpsc::Receiver<PublishRequest>,
    queue: mpsc::Receiver<QueueWrite>,
    intake: Arc<OnceLock<(Arc<dyn Intake>, Duration)>>,
    sealer: Sealer,
) -> StoreResult<std::sync::mpsc::Receiver<()>> {
    if path.to_string_lossy().starts_with("file:") || path.as_os_str() == ":memory:" {
        return Err(StoreError::Unsupported(
            "the SQLite store needs a database file, not an in-memory database".into(),
        ));
    }
    let conn = Conn::open(path)?;
    let (stopped_tx, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("herald-sqlite-writer".into())
        .spawn(move || {
            let _stopped = stopped_tx;
            // A runtime of its own, for the channels and the turn's pool; it has nothing else
            // to run, so the synchronous SQLite calls block no one.
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(run(conn, turn, requests, queue, intake, sealer));
                }
                Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer's runtime"),
            }
        })
        .map_err(|e| StoreError::Unsupported(format!("cannot start the SQLite writer: {e}")))?;
    Ok(stopped)
}

/// Longest time the writer keeps sqlx's connection across back-to-back rounds before letting
/// the other writers have it. Giving it back costs a round trip to sqlx's thread (the pool pings
/// a connection it gets back), so it is not given back after every round under load.
const TURN: Duration = Duration::from_millis(10);

/// Moves whatever is waiting, up to a round's limits, into the batches.
fn take_waiting(
    requests: &mut mpsc::Receiver<PublishRequest>,
    queue: &mut mpsc::Receiver<QueueWrite>,
    publishes: &mut Vec<PublishRequest>,
    writes: &mut Vec<QueueWrite>,
) {
    while publishes.len() < GROUP_COMMIT
        && let Ok(r) = requests.try_recv()
    {
        publishes.push(r);
    }
    while writes.len() < QUEUE_WRITES_PER_ROUND
        && let Ok(w) = queue.try_recv()
    {
        writes.push(w);
    }
}

/// The writer loop: waits for work, takes everything waiting (up to a round's limits), writes
/// it in one round and answers each request.
async fn run(
    mut conn: Conn,
    turn: SqlitePool,
    mut requests: mpsc::Receiver<PublishRequest>,
    mut queue: mpsc::Receiver<QueueWrite>,
    intake: Arc<OnceLock<(Arc<dyn Intake>, Duration)>>,
    sealer: Sealer,
) {
    let mut publishes = Vec::with_capacity(GROUP_COMMIT);
    let mut writes = Vec::with_capacity(QUEUE_WRITES_PER_ROUND);
    // sqlx's writer connection, held while rounds write: the other writers' turn.
    let mut held: Option<(sqlx::pool::PoolConnection<sqlx::Sqlite>, Instant)> = None;
    loop {
        take_waiting(&mut requests, &mut queue, &mut publishes, &mut writes);
        if publishes.is_empty() && writes.is_empty() {
            // Idle: the other writers may go.
            held = None;
            tokio::select! {
                n = requests.recv_many(&mut publishes, GROUP_COMMIT) => {
                    if n == 0 {
                        return;
                    }
                }
                n = queue.recv_many(&mut writes, QUEUE_WRITES_PER_ROUND) => {
                    if n == 0 {
                        return;
                    }
                }
            }
            take_waiting(&mut requests, &mut queue, &mut publishes, &mut writes);
        }
        if held
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= TURN)
        {
            // Busy for a while: let a waiting writer in (the pool serves waiters in order).
            held = None;
        }
        if held.is_none() {
            match turn.acquire().await {
                Ok(conn) => held = Some((conn, Instant::now())),
                Err(e) => {
                    let e = StoreError::from(e);
                    for w in writes.drain(..) {
                        answer_alone(w, Err(StoreError::GroupCommitFailed));
                    }
                    group_commit::answer(&mut publishes, Err(e));
                    continue;
                }
            }
        }
        let mut round = Round {
            conn: &mut conn,
            intake: &intake,
            sealer: &sealer,
        };
        match round.write(&publishes, &writes) {
            Ok(done) => answer(&mut publishes, &mut writes, done),
            Err(e) if publishes.len() + writes.len() > 1 => {
                tracing::warn!(error = %e, "a combined write failed; writing its parts one by one");
                for w in writes.drain(..) {
                    let one = [w];
                    let done = round.write(&[], &one);
                    let [w] = one;
                    answer_alone(w, done);
                }
                for p in std::mem::take(&mut publishes) {
                    let mut one = vec![p];
                    let done = round.write(&one, &[]);
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

struct Round<'a> {
    conn: &'a mut Conn,
    intake: &'a OnceLock<(Arc<dyn Intake>, Duration)>,
    sealer: &'a Sealer,
}

impl Round<'_> {
    /// One transaction: durable (fsync at commit) when it holds publishes, else relaxed (see
    /// `SqliteStore::relaxed_begin`). Rolled back on any error.
    fn write(&mut self, publishes: &[PublishRequest], writes: &[QueueWrite]) -> StoreResult<Done> {
        let mut handoff = self
            .intake
            .get()
            .filter(|_| !publishes.is_empty())
            .map(|(intake, lease)| Handoff::new(intake.clone(), Timestamp::now(), *lease));
        let result = self.write_on(publishes, writes, handoff.as_mut());
        match &result {
            Ok(_) => {
                if let Some(handoff) = handoff {
                    handoff.finish();
                }
            }
            Err(_) => self.conn.settle(),
        }
        result
    }

    fn write_on(
        &self,
        publishes: &[PublishRequest],
        writes: &[QueueWrite],
        handoff: Option<&mut Handoff>,
    ) -> StoreResult<Done> {
        let conn = &self.conn.conn;
        conn.execute_batch(if publishes.is_empty() {
            "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
        } else {
            "PRAGMA synchronous = FULL; BEGIN IMMEDIATE"
        })?;
        let mut records = Vec::new();
        let mut leased = Vec::new();
        for w in writes {
            if let QueueWrite::Record(r) = w {
                let mut hop = Hop::new();
                push_record(&mut hop, &r.records, &r.health);
                hop.run(conn)?;
                records.push(r);
            }
        }
        for r in &records {
            disable_unhealthy(conn, &r.records, &r.health, self.sealer)?;
        }
        for w in writes {
            if let QueueWrite::Lease(l) = w {
                let mut hop = Hop::new();
                push_lease(&mut hop, l);
                leased.push(self.claimed(hop, &l.lease)?);
            }
        }

        let events: Vec<&NewEvent> = publishes.iter().flat_map(|r| &r.events).collect();
        let (keyed, plain): (Vec<&NewEvent>, Vec<&NewEvent>) = events
            .iter()
            .copied()
            .partition(|e| e.idempotency.is_some());
        let now = Timestamp::now();
        // Events with an idempotency key, one by one, each under a savepoint: only a key can
        // refuse one event alone, and it does so before writing anything.
        let mut keyed_results = Vec::with_capacity(keyed.len());
        for event in &keyed {
            conn.execute_batch("SAVEPOINT publish")?;
            let result = publish_keyed(conn, event, now, self.sealer);
            if result.is_err() {
                conn.execute_batch("ROLLBACK TO publish")?;
            }
            conn.execute_batch("RELEASE publish")?;
            keyed_results.push(result);
        }
        let counts = insert_events(conn, &plain, now, handoff, self.sealer)?;
        conn.execute_batch("COMMIT")?;

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

    /// Runs a lease's statements and reads the leased deliveries from its rows. Each webhook is
    /// decoded (and its secrets opened) once per claim, not once per delivery: a claim is
    /// mostly a few webhooks' backlog.
    fn claimed(&self, hop: Hop, lease: &str) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut webhooks: HashMap<String, Webhook> = HashMap::new();
        hop.query(&self.conn.conn, |row| {
            let id: String = row.get("id")?;
            let webhook = match webhooks.get(&id) {
                Some(w) => w.clone(),
                None => {
                    let w = webhook_columns(row)?.into_webhook(self.sealer)?;
                    webhooks.insert(id, w.clone());
                    w
                }
            };
            Ok(ClaimedDelivery {
                delivery_id: DeliveryId::from_trusted(row.get("d_id")?),
                lease: lease.to_owned(),
                attempt_number: row.get::<_, i64>("d_attempts_made")? as u32 + 1,
                event: event_columns(row, "e_")?,
                webhook,
            })
        })
    }
}

/// A webhook row of [`WEBHOOK_COLUMNS`], read by name.
fn webhook_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookColumns> {
    Ok(WebhookColumns {
        id: row.get("id")?,
        account_id: row.get("account_id")?,
        url: row.get("url")?,
        events: row.get("events")?,
        secret: row.get("secret")?,
        description: row.get("description")?,
        retry: row.get("retry")?,
        status: row.get("status")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        kind: row.get("kind")?,
        job_id: row.get("job_id")?,
        signing: row.get("signing")?,
        format: row.get("format")?,
        previous_secret: row.get("previous_secret")?,
        previous_secret_until: row.get("previous_secret_until")?,
        disabled_reason: row.get("disabled_reason")?,
        failing_since: row.get("failing_since")?,
    })
}

/// An event from columns named `{prefix}id`, `{prefix}account_id`, `{prefix}type`, ….
fn event_columns(row: &rusqlite::Row<'_>, prefix: &str) -> StoreResult<Event> {
    let col = |c: &str| format!("{prefix}{c}");
    rows::event(
        row.get(col("id").as_str())?,
        row.get(col("account_id").as_str())?,
        row.get(col("type").as_str())?,
        row.get(col("timestamp").as_str())?,
        row.get(col("data").as_str())?,
    )
    .map_err(|e| corrupt("event", e))
}

/// Stores events (none with an idempotency key to check) and enqueues a delivery for every
/// webhook that gets each. Returns, for each event in order, its number of deliveries and how
/// many of those went to `handoff`.
fn insert_events(
    conn: &rusqlite::Connection,
    events: &[&NewEvent],
    now: Timestamp,
    handoff: Option<&mut Handoff>,
    sealer: &Sealer,
) -> StoreResult<Vec<(u32, u32)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut hop = Hop::new();
    super::push_insert_events(&mut hop, events, now);
    super::push_webhook_lookup(&mut hop, events);
    let webhooks = hop.query(conn, |row| webhook_columns(row)?.into_webhook(sealer))?;
    let mut hop = Hop::new();
    let counts = super::plan_deliveries(&mut hop, events, &webhooks, now, handoff);
    hop.run(conn)?;
    Ok(counts)
}

/// Publishes an event with an idempotency key: the earlier event under the same key, if it is
/// still valid and the request is the same, else a new one.
fn publish_keyed(
    conn: &rusqlite::Connection,
    new: &NewEvent,
    now: Timestamp,
    sealer: &Sealer,
) -> StoreResult<Published> {
    use rusqlite::OptionalExtension;
    let idem = new.idempotency.as_ref().expect("a keyed event");
    let earlier: Option<(String, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT id, idempotency_fingerprint, created_at FROM events WHERE account_id = ? AND idempotency_key = ?",
        )?
        .query_row((new.account.as_str(), &idem.key), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((id, fingerprint, created_at)) = earlier {
        if created_at >= idem.valid_since.millis() {
            if fingerprint.as_deref() != Some(&idem.fingerprint) {
                return Err(StoreError::IdempotencyConflict);
            }
            let mut statement = conn.prepare_cached(
                "SELECT id, account_id, type, timestamp, data FROM events WHERE id = ?",
            )?;
            let mut rows = statement.query([&id])?;
            let row = rows
                .next()?
                .ok_or_else(|| corrupt("event", "the idempotency key's event is gone"))?;
            let event = event_columns(row, "")?;
            let deliveries: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE event_id = ?")?
                .query_row([&id], |r| r.get(0))?;
            return Ok(Published {
                event,
                deliveries: deliveries as u32,
                handed_over: 0,
                replayed: true,
            });
        }
        // The earlier use has expired: the key is free again.
        conn.prepare_cached("UPDATE events SET idempotency_key = NULL WHERE id = ?")?
            .execute([&id])?;
    }
    let counts = insert_events(conn, &[new], now, None, sealer)?;
    Ok(Published {
        event: new.to_event(),
        deliveries: counts[0].0,
        handed_over: 0,
        replayed: false,
    })
}

/// Leases the picked deliveries, if still pending, due and free (they were read outside this
/// transaction), and reads them back with their events and webhooks.
fn push_lease(hop: &mut Hop, l: &LeaseRequest) {
    let lease = hop.arg(l.lease.clone());
    let until = hop.arg(l.lease_until.millis());
    let ids = hop.arg(serde_json::to_string(&l.picked).expect("strings serialize"));
    let now = hop.arg(l.now.millis());
    let due = hop.arg(l.now.millis());
    // Still due too: a late result of an expired lease may have set a later retry meanwhile.
    hop.push(&format!(
        "UPDATE deliveries SET lease = {lease}, locked_until = {until}
         WHERE id IN (SELECT value FROM json_each({ids}))
           AND status = 'pending' AND (locked_until IS NULL OR locked_until <= {now})
           AND next_attempt_at <= {due}"
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
         FROM jsonb_each({attempts})"
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
                      value->>4 AS next_at FROM jsonb_each({outcomes})) AS o
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
             FROM (SELECT value->>0 AS id, value->>1 AS since FROM jsonb_each({started})) AS s
             WHERE webhooks.id = s.id AND webhooks.failing_since IS NULL"
        ));
    }
}

/// Disables the webhooks these results show gone (410) or failing for longer than the policy
/// allows, each with a `webhook.disabled` event. Only a webhook whose last attempt here failed
/// can be newly failing for too long (a success clears its record), so a batch of successes
/// costs nothing here.
fn disable_unhealthy(
    conn: &rusqlite::Connection,
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
    if !gone.is_empty() {
        let ids = serde_json::to_string(&gone).expect("strings serialize");
        let found = select_webhooks(
            conn,
            "SELECT id, account_id, url FROM webhooks
             WHERE status = 'active' AND id IN (SELECT value FROM json_each(?))",
            [ids],
        )?;
        disable(conn, found, "gone", health, sealer)?;
    }
    if !failing.is_empty() {
        // After the gone ones: a webhook disabled above is no longer active here.
        let ids = serde_json::to_string(&failing).expect("strings serialize");
        let found = select_webhooks(
            conn,
            "SELECT id, account_id, url FROM webhooks
             WHERE status = 'active' AND id IN (SELECT value FROM json_each(?)) AND failing_since <= ?",
            (ids, failing_before),
        )?;
        disable(conn, found, "failing", health, sealer)?;
    }
    Ok(())
}

/// The (id, account, url) of the webhooks `sql` selects.
fn select_webhooks(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<(String, String, String)>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Disables each webhook with a `webhook.disabled` event saying why.
fn disable(
    conn: &rusqlite::Connection,
    webhooks: Vec<(String, String, String)>,
    reason: &str,
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    for (id, account, url) in webhooks {
        conn.prepare_cached(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = ?, updated_at = ? WHERE id = ?",
        )?
        .execute((reason, health.now.millis(), &id))?;
        tracing::warn!(webhook_id = %id, reason, "webhook disabled");
        let who = WebhookRef {
            id,
            account: AccountId::from_trusted(account),
            url,
        };
        let event = NewEvent::webhook_disabled(&who, reason, health.now);
        insert_events(conn, &[&event], health.now, None, sealer)?;
    }
    Ok(())
}
