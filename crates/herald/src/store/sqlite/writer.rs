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

use super::claim::{self, LeaseRequest};
use super::publish;
use super::record::{self, RecordRequest};
use crate::domain::Timestamp;
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::seal::Sealer;
use crate::store::{
    ClaimedDelivery, Handoff, Intake, NewEvent, Published, StoreError, StoreResult,
};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Work for the writer besides publishes.
pub(super) enum QueueWrite {
    Record(RecordRequest),
    Lease(LeaseRequest),
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
        .map_err(StoreError::WriterThread)?;
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
                record::write(conn, &r.records, &r.health)?;
                records.push(r);
            }
        }
        for r in &records {
            record::disable_unhealthy(conn, &r.records, &r.health, self.sealer)?;
        }
        for w in writes {
            if let QueueWrite::Lease(l) = w {
                leased.push(claim::lease(conn, l, self.sealer)?);
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
            let result = publish::publish_keyed(conn, event, now, self.sealer);
            if result.is_err() {
                conn.execute_batch("ROLLBACK TO publish")?;
            }
            conn.execute_batch("RELEASE publish")?;
            keyed_results.push(result);
        }
        let counts = publish::insert_events(conn, &plain, now, handoff, self.sealer)?;
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
}
