//! The writer thread: the one writer of the database while the store is open. It drives a
//! SQLite connection of its own, right here, and every write of the store comes to it.
//!
//! Publishes and the queue's writes (attempt results, claims' leases, releases) are group
//! committed: whatever has queued is written together, one transaction for the publishes and
//! one for the queue's writes per round, as one set-based statement per kind where it can. A
//! publish waits for one of the queue's writes at most: their transaction ends after the write
//! in hand once a publish waits (the rare writes of their own, below, run whole).
//!
//! sqlx's SQLite driver runs every query on a thread of its own and sends each statement's
//! result and each row back through a channel; on few cores those wake-ups, not SQLite, were
//! most of a round's time (docs/BENCHMARKS.md). So rounds run here with rusqlite, every
//! statement prepared once and taken from the connection's cache: the only wake-ups left are
//! the request that starts a round and the answers that end it.
//!
//! The other writes (accounts, webhooks, jobs, manual retries, retention) are rare; each is a
//! transaction of its own ([`Alone`]), run between rounds. One connection writing is what keeps
//! SQLite's single-writer rule without `SQLITE_BUSY`: readers (the store's sqlx pool) are
//! read-only connections and never wait on it.
//!
//! If a transaction with several requests fails, each is written again alone, so one bad
//! request fails alone.

use super::checkpointer::{Checkpoints, WRITER_CHECKPOINT_PAGES};
use super::claim::{self, LeaseRequest};
use super::publish;
use super::queue::{self, ReleaseRequest};
use super::record::{self, RecordRequest};
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::seal::Sealer;
use crate::store::{Claim, IntakeSlot, StoreError, StoreResult};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Work for the writer besides publishes.
pub(super) enum Write {
    Record(RecordRequest),
    Lease(LeaseRequest),
    Release(ReleaseRequest),
    Alone(Alone),
}

/// How a transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Commit {
    /// With an fsync (`synchronous = FULL`): anything acknowledged to a caller survives a power
    /// cut, not only a crash.
    Durable,
    /// Without one (`synchronous = NORMAL`): for the queue's own bookkeeping (leases, attempt
    /// results) and retention, which a power cut can at worst undo, repeating an attempt
    /// (at-least-once) or a prune. A later durable commit makes these durable too, since WAL is
    /// synced in order.
    Relaxed,
}

impl Commit {
    fn begin(self) -> &'static str {
        match self {
            Self::Durable => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
            Self::Relaxed => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
        }
    }
}

/// A write in a transaction of its own: statements run on the writer's connection, and the
/// answer sent once the transaction has committed (or failed).
pub(super) struct Alone(Box<dyn FnOnce(&mut Conn) + Send>);

impl Alone {
    /// `write` runs in one transaction, committed as `commit` says; it has the answer.
    pub fn new<T: Send + 'static>(
        commit: Commit,
        write: impl FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    ) -> (Self, oneshot::Receiver<StoreResult<T>>) {
        let (reply, answer) = oneshot::channel();
        let run = move |conn: &mut Conn| {
            let _ = reply.send(conn.transaction(commit, write));
        };
        (Self(Box::new(run)), answer)
    }
}

/// Most queue writes in one round.
const QUEUE_WRITES_PER_ROUND: usize = 16;

/// The writer thread's connection to the database file.
pub(super) struct Conn {
    path: PathBuf,
    conn: rusqlite::Connection,
    /// The checkpointer beside this connection, told of each commit.
    checkpoints: Option<Checkpoints>,
}

impl Conn {
    /// The writer's connection, with the checkpointer beside it where one can start.
    fn open(path: &Path) -> StoreResult<Self> {
        let checkpoints = Checkpoints::start(path);
        Ok(Self {
            path: path.to_owned(),
            conn: connect(path, checkpoints.is_some())?,
            checkpoints,
        })
    }

    /// Runs `write` in a transaction, committed as `commit` says, or rolled back if it fails.
    fn transaction<T>(
        &mut self,
        commit: Commit,
        write: impl FnOnce(&rusqlite::Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let result = self
            .conn
            .execute_batch(commit.begin())
            .map_err(StoreError::from)
            .and_then(|()| write(&self.conn))
            .and_then(|done| {
                self.conn.execute_batch("COMMIT")?;
                if let Some(checkpoints) = &self.checkpoints {
                    checkpoints.committed();
                }
                Ok(done)
            });
        if result.is_err() {
            self.settle();
        }
        result
    }

    /// After a transaction that failed: makes sure none is left open, opening the connection
    /// again if a `ROLLBACK` cannot end it.
    fn settle(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        let _ = self.conn.execute_batch("ROLLBACK");
        if !self.conn.is_autocommit() {
            match connect(&self.path, self.checkpoints.is_some()) {
                Ok(fresh) => self.conn = fresh,
                Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite writer connection"),
            }
        }
    }
}

/// Opens a connection for the writer. Foreign keys enforced, a busy timeout (a checkpoint by
/// another connection can still hold a lock briefly), FULL unless a transaction says otherwise,
/// and temporary tables in memory: some rounds' statements need one, and on disk each would
/// cost a file created and deleted. With the checkpointer `beside`, its own commits checkpoint
/// only a log grown past [`WRITER_CHECKPOINT_PAGES`].
fn connect(path: &Path, beside: bool) -> StoreResult<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
    )?;
    if beside {
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
    }
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Starts the writer thread on `path`. It stops when the store drops its request channels,
/// after the round in hand; the returned receiver is disconnected once it has.
pub(super) fn spawn(
    path: &Path,
    requests: mpsc::Receiver<PublishRequest>,
    queue: mpsc::Receiver<Write>,
    intake: IntakeSlot,
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
            // A runtime of its own, for the channels; it has nothing else to run, so the
            // synchronous SQLite calls block no one.
            match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime.block_on(run(conn, requests, queue, intake, sealer)),
                Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer's runtime"),
            }
        })
        .map_err(StoreError::WriterThread)?;
    Ok(stopped)
}

/// Moves whatever is waiting, up to a round's limits, into the batches.
fn take_waiting(
    requests: &mut mpsc::Receiver<PublishRequest>,
    queue: &mut mpsc::Receiver<Write>,
    publishes: &mut Vec<PublishRequest>,
    writes: &mut Vec<Write>,
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
/// the writes of their own one by one, then the publishes in a round, then the queue's writes in
/// another, cut short once a publish waits (see [`queue_round`]), and answers each request.
async fn run(
    mut conn: Conn,
    mut requests: mpsc::Receiver<PublishRequest>,
    mut queue: mpsc::Receiver<Write>,
    intake: IntakeSlot,
    sealer: Sealer,
) {
    let mut publishes = Vec::with_capacity(GROUP_COMMIT);
    let mut writes = Vec::with_capacity(QUEUE_WRITES_PER_ROUND);
    loop {
        take_waiting(&mut requests, &mut queue, &mut publishes, &mut writes);
        if publishes.is_empty() && writes.is_empty() {
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
        for alone in writes.extract_if(.., |w| matches!(w, Write::Alone(_))) {
            if let Write::Alone(Alone(write)) = alone {
                write(&mut conn);
            }
        }
        if !publishes.is_empty() {
            publish_round(&mut conn, &intake, &sealer, &mut publishes);
        }
        if !writes.is_empty() {
            queue_round(&mut conn, &sealer, &mut writes, || !requests.is_empty());
        }
    }
}

/// The publishes waiting, in one durable transaction, each answered; if it fails and holds
/// several, each is written again alone. Deliveries handed to the dispatcher are handed over
/// once it has committed.
fn publish_round(
    conn: &mut Conn,
    intake: &IntakeSlot,
    sealer: &Sealer,
    publishes: &mut Vec<PublishRequest>,
) {
    let mut write = |publishes: &[PublishRequest]| {
        let mut handoff = intake.handoff();
        let to_intake = handoff.as_mut();
        let published = conn.transaction(Commit::Durable, |conn| {
            publish::write_group(conn, publishes, to_intake, sealer)
        })?;
        if let Some(handoff) = handoff {
            handoff.finish();
        }
        Ok(published)
    };
    match write(publishes) {
        Err(e) if publishes.len() > 1 => {
            tracing::warn!(error = %e, "a group of publishes failed; writing them one by one");
            for p in std::mem::take(publishes) {
                let mut one = vec![p];
                let outcome = write(&one);
                group_commit::answer(&mut one, outcome);
            }
        }
        outcome => group_commit::answer(publishes, outcome),
    }
}

/// The queue's writes (attempt results, releases, claims' leases) in one relaxed transaction,
/// in the order they came, each answered once it has committed. The transaction ends after the
/// write in hand once a publish waits (`publish_waiting`), the rest left for the next round, so
/// a publish waits for one of the queue's writes at most: a retry backlog's results and leases
/// come in many (docs/architecture.md §6). If the transaction fails and held several writes,
/// each is written again alone, until a publish waits; if it failed before its first write
/// (it could not begin), that write has the error and its sender tries again.
fn queue_round(
    conn: &mut Conn,
    sealer: &Sealer,
    writes: &mut Vec<Write>,
    publish_waiting: impl Fn() -> bool,
) {
    let mut tried = 0;
    let outcome = conn.transaction(Commit::Relaxed, |conn| {
        let mut leased = Vec::new();
        for w in writes.iter() {
            tried += 1;
            leased.push(write_one(conn, w, sealer)?);
            if publish_waiting() {
                break;
            }
        }
        Ok(leased)
    });
    match outcome {
        Ok(leased) => {
            for (w, leased) in writes.drain(..leased.len()).zip(leased) {
                answer(w, Ok(leased));
            }
        }
        Err(e) if tried > 1 => {
            tracing::warn!(error = %e, "a round of queue writes failed; writing them one by one");
            for _ in 0..tried {
                let w = writes.remove(0);
                let outcome = conn.transaction(Commit::Relaxed, |conn| write_one(conn, &w, sealer));
                answer(w, outcome);
                if publish_waiting() {
                    break;
                }
            }
        }
        Err(e) => answer(writes.remove(0), Err(e)),
    }
}

/// One of the queue's writes, in the round's transaction: what it leased (nothing but for a
/// lease).
fn write_one(conn: &rusqlite::Connection, write: &Write, sealer: &Sealer) -> StoreResult<Claim> {
    match write {
        Write::Record(r) => {
            record::write(conn, &r.records, &r.health, sealer)?;
            record::disable_unhealthy(conn, &r.records, &r.health, sealer)?;
        }
        Write::Release(r) => queue::release(conn, &r.releases)?,
        Write::Lease(l) => return claim::lease(conn, l, sealer),
        Write::Alone(_) => unreachable!("written before the round"),
    }
    Ok(Claim::default())
}

/// Answers one of the queue's writes.
fn answer(write: Write, outcome: StoreResult<Claim>) {
    match write {
        Write::Record(r) => {
            let _ = r.reply.send(outcome.map(drop));
        }
        Write::Release(r) => {
            let _ = r.reply.send(outcome.map(drop));
        }
        Write::Lease(l) => {
            let _ = l.reply.send(outcome);
        }
        Write::Alone(_) => unreachable!("written before the round"),
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
