//! The embedded SQLite backend: one file in the data directory, WAL mode.
//!
//! SQLite has one writer at a time. The hot writes (publishes, attempt results, leases) go to the
//! writer thread ([`writer`]), which drives a connection of its own; the rest go through a
//! single-connection sqlx pool, which the writer thread holds while it writes, so the two take
//! turns (no lock contention, no `SQLITE_BUSY` storms). Reads use a pool of their own. Both
//! drivers link the same SQLite library: two copies in one process would clear each other's
//! POSIX locks on the file. A lock file beside
//! the database keeps a second `herald serve` off it, which is what makes releasing every lease at
//! start-up safe: any lease found then belonged to a process that died.

mod accounts;
mod claim;
mod deliveries;
mod events;
mod gauges;
mod hop;
mod jobs;
mod publish;
mod queue;
mod record;
mod retention;
mod webhooks;
mod writer;

use super::group_commit::{self, PublishRequest};
use super::rows::{WEBHOOK_SECRETS_QUERY, WebhookSecretColumns};
use super::seal::{Column, Sealer};
use super::{Intake, PageRequest, StoreError, StoreResult};
use crate::domain::AccountId;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::QueueWrite;

/// Who writes, as errors name it.
const WRITER: &str = "SQLite writer";
/// Who writes publishes: the same thread.
const PUBLISHER: &str = WRITER;

/// The SQLite store of this process.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Publishes go to the writer thread ([`writer`]).
    publisher: mpsc::Sender<PublishRequest>,
    /// So do attempt results and claims' leases, which ride along in its transactions.
    queue: mpsc::Sender<QueueWrite>,
    /// Where the publisher hands new deliveries to this node's dispatcher, once it is set.
    intake: Arc<OnceLock<(Arc<dyn Intake>, Duration)>>,
    /// Whether the writer connection is in `synchronous = NORMAL` (see [`set_synchronous`]).
    relaxed: Arc<AtomicBool>,
    /// Seals the secret columns on write, opens them on read.
    sealer: Sealer,
    /// Disconnected once the writer thread has stopped.
    writer_stopped: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    _lock: Option<std::fs::File>,
}

impl Drop for SqliteStore {
    /// Stops the writer thread before the lock file is let go, so that a store opened on the
    /// same file next (a restart in this process) never finds it still writing. A round in hand
    /// takes milliseconds; the wait is bounded in case it cannot finish.
    fn drop(&mut self) {
        self.publisher = mpsc::channel(1).0;
        self.queue = mpsc::channel(1).0;
        if let Ok(stopped) = self.writer_stopped.get_mut() {
            let _ = stopped.recv_timeout(Duration::from_secs(2));
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, takes the single-process lock, runs migrations,
    /// seals or checks the stored secrets (see [`Sealer::reseal`]), and releases leases left by a
    /// crashed predecessor.
    pub async fn open(url: &str, sealer: Sealer) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged event survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .foreign_keys(true);
        let lock = lock_beside(options.get_filename())?;
        // The writer thread opens the same file again (see `writer`).
        let path = options.get_filename().to_owned();
        // No ping before each acquire: it would be one more hop to sqlx's worker thread per
        // transaction, and an embedded database has no connection to lose.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            // Room for statement batches (see `hop::Hop`), and for a query's rows without
            // sqlx's thread waiting on this side.
            .connect_with(
                options
                    .clone()
                    .statement_cache_capacity(512)
                    .row_buffer_size(1024),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        reseal_stored_secrets(&writer, &sealer).await?;
        // The same row buffer as the writer's: with sqlx's default (50) its worker thread
        // stops every 50 rows until this side has taken them, and a claim's scan of 1,024
        // candidates took 10 ms instead of 3 (the drain, bound by claims one after another:
        // 18,000 deliveries/s, and 24,000 with this).
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true).row_buffer_size(1024))
            .await?;
        sqlx::query(
            "UPDATE deliveries SET lease = NULL, locked_until = NULL WHERE lease IS NOT NULL",
        )
        .execute(&writer)
        .await?;
        let (publisher, requests) = group_commit::channel();
        let intake = Arc::new(OnceLock::new());
        // A new connection starts in `FULL`, as the options above set.
        let relaxed = Arc::new(AtomicBool::new(false));
        let (queue, queued) = mpsc::channel(64);
        let writer_stopped = writer::spawn(
            &path,
            writer.clone(),
            requests,
            queued,
            intake.clone(),
            sealer.clone(),
        )?;
        Ok(Self {
            publisher,
            queue,
            intake,
            relaxed,
            writer,
            reader,
            sealer,
            writer_stopped: std::sync::Mutex::new(writer_stopped),
            _lock: lock,
        })
    }
}

impl SqliteStore {
    /// The writer, set to fsync every commit: for anything acknowledged to a caller.
    async fn durable_conn(&self) -> StoreResult<PoolConnection<Sqlite>> {
        let mut conn = self.writer.acquire().await?;
        set_synchronous(&mut conn, &self.relaxed, false).await?;
        Ok(conn)
    }

    async fn durable_begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(Transaction::begin(self.durable_conn().await?, None).await?)
    }

    /// A transaction whose commit may be lost in a power cut (not in a process crash): for the
    /// queue's own bookkeeping — leases, attempt results — which at worst repeats an attempt
    /// (at-least-once), and never for an acknowledged event. A later durable commit makes these
    /// durable too, since WAL is synced in order.
    async fn relaxed_begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        let mut conn = self.writer.acquire().await?;
        set_synchronous(&mut conn, &self.relaxed, true).await?;
        Ok(Transaction::begin(conn, None).await?)
    }

    /// Queues a write for the writer task and waits for its answer.
    async fn write<T>(
        &self,
        write: QueueWrite,
        answer: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.queue
            .send(write)
            .await
            .map_err(|_| StoreError::WriterStopped(WRITER))?;
        answer
            .await
            .map_err(|_| StoreError::WriterStopped(WRITER))?
    }
}

/// Sets the writer's `synchronous` mode: `NORMAL` when `relaxed`, else `FULL`, skipping the
/// statement when the connection is known to be in that mode already. `relaxed_now` may only
/// err towards `NORMAL` (a stale "relaxed" costs one extra statement; a stale "durable" would
/// skip an fsync), so it is set before switching to `NORMAL` and after switching to `FULL`.
async fn set_synchronous(
    conn: &mut sqlx::SqliteConnection,
    relaxed_now: &AtomicBool,
    relaxed: bool,
) -> StoreResult<()> {
    if relaxed_now.load(Ordering::Acquire) == relaxed {
        return Ok(());
    }
    if relaxed {
        relaxed_now.store(true, Ordering::Release);
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        relaxed_now.store(false, Ordering::Release);
    }
    Ok(())
}

/// The start-up pass over the stored secrets, in one transaction: with a key, plaintext values
/// are sealed and sealed ones must open; without one, a sealed value stops the start.
async fn reseal_stored_secrets(writer: &SqlitePool, sealer: &Sealer) -> StoreResult<()> {
    let mut tx = writer.begin().await?;
    let mut resealed = 0;
    let webhooks: Vec<WebhookSecretColumns> = sqlx::query_as(WEBHOOK_SECRETS_QUERY)
        .fetch_all(&mut *tx)
        .await?;
    for row in webhooks {
        if let Some(new) = row.resealed(sealer)? {
            sqlx::query(
                "UPDATE webhooks SET secret = ?, previous_secret = ?, signing = ? WHERE id = ?",
            )
            .bind(&new.secret)
            .bind(&new.previous_secret)
            .bind(&new.signing)
            .bind(&new.id)
            .execute(&mut *tx)
            .await?;
            resealed += 1;
        }
    }
    let accounts: Vec<(String, String)> =
        sqlx::query_as("SELECT id, signing_secret FROM accounts WHERE signing_secret IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
    for (id, stored) in accounts {
        if let Some(new) = sealer.reseal(Column::AccountSigningSecret, &id, &stored)? {
            sqlx::query("UPDATE accounts SET signing_secret = ? WHERE id = ?")
                .bind(new)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            resealed += 1;
        }
    }
    tx.commit().await?;
    if resealed > 0 {
        tracing::info!(
            rows = resealed,
            "encrypted the secrets stored in plaintext with HERALD_SECRETS_KEY"
        );
    }
    Ok(())
}

/// Holds an exclusive lock on `<db>.lock` for the life of the process.
fn lock_beside(db: &Path) -> StoreResult<Option<std::fs::File>> {
    let name = db.to_string_lossy();
    if name.is_empty() || name == ":memory:" {
        return Ok(None);
    }
    let path = PathBuf::from(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            database: db.to_owned(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::LockFile { path, source }),
    }
}

fn push_page(q: &mut QueryBuilder<Sqlite>, id_column: &str, page: &PageRequest) {
    if let Some(after) = &page.after {
        q.push(format!(" AND {id_column} < "))
            .push_bind(after.clone());
    }
    q.push(format!(" ORDER BY {id_column} DESC LIMIT "))
        .push_bind(i64::from(page.limit) + 1);
}

fn scope(q: &mut QueryBuilder<Sqlite>, column: &str, account: Option<&AccountId>) {
    if let Some(a) = account {
        q.push(format!(" AND {column} = "))
            .push_bind(a.as_str().to_owned());
    }
}
