//! The embedded SQLite backend: one file in the data directory, WAL mode.
//!
//! SQLite has one writer at a time, so the store has one: the writer thread ([`writer`]), which
//! drives a connection of its own and makes every write, the hot ones (publishes, attempt
//! results, leases) in group-committed rounds. Reads go to a pool of read-only sqlx connections.
//! Both drivers link the same SQLite library: two copies in one process would clear each
//! other's POSIX locks on the file. A lock file beside the database keeps a second `herald serve`
//! off it, which is what makes releasing every lease at start-up safe: any lease found then
//! belonged to a process that died.
//!
//! Opening the store migrates the database, checks its stored secrets and releases those leases
//! (and background tasks') on a connection of its own, closed before the writer thread starts.

/// The schema's migrations, carried in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

mod accounts;
mod batch;
mod checkpointer;
mod claim;
mod deliveries;
mod erasure;
mod events;
mod gauges;
mod jobs;
mod listeners;
mod operator;
mod portal;
mod publish;
mod queue;
mod ready;
mod record;
mod replay;
mod retention;
mod stats;
mod tasks;
mod webhooks;
mod writer;

use super::group_commit::{self, PublishRequest};
use super::rows::{WEBHOOK_SECRETS_QUERY, WebhookSecretColumns};
use super::seal::{Column, Sealer};
use super::{IntakeSlot, PageRequest, StoreError, StoreResult};
use crate::domain::AccountId;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::{Alone, Commit, Write};

/// Who writes, as errors name it.
const WRITER: &str = "SQLite writer";
/// Who writes publishes: the same thread.
const PUBLISHER: &str = WRITER;

/// The SQLite store of this process.
pub struct SqliteStore {
    reader: SqlitePool,
    /// Publishes go to the writer thread ([`writer`])…
    publisher: mpsc::Sender<PublishRequest>,
    /// …and so does every other write.
    queue: mpsc::Sender<Write>,
    /// Where the publisher hands new deliveries to this node's dispatcher, once it is set.
    intake: IntakeSlot,
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
    /// seals or checks the stored secrets (see [`Sealer::reseal`]), releases leases left by a
    /// crashed predecessor, and starts the writer thread.
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
        let mut setup = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut setup).await?;
        reseal_stored_secrets(&mut setup, &sealer).await?;
        // Only pending deliveries are ever leased: this walks `deliveries_due`, not the table.
        sqlx::query(
            "UPDATE deliveries SET lease = NULL, locked_until = NULL
             WHERE status = 'pending' AND lease IS NOT NULL",
        )
        .execute(&mut setup)
        .await?;
        // Likewise a task's: the next start's runner takes it up where its last batch left it.
        sqlx::query("UPDATE tasks SET lease_until = 0 WHERE state = 'running'")
            .execute(&mut setup)
            .await?;
        setup.close().await?;
        // No ping before each acquire: it would be one more round trip to sqlx's worker thread
        // per query, and an embedded database has no connection to lose. A row buffer as large
        // as a claim's scan: with sqlx's default its worker thread stops every few dozen rows
        // until this side has taken them, and the scans of claims back to back bound the drain.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone().read_only(true).row_buffer_size(1024))
            .await?;
        let (publisher, requests) = group_commit::channel();
        let (queue, queued) = mpsc::channel(64);
        let intake = IntakeSlot::default();
        let writer_stopped = writer::spawn(
            options.get_filename(),
            requests,
            queued,
            intake.clone(),
            sealer.clone(),
        )?;
        Ok(Self {
            reader,
            publisher,
            queue,
            intake,
            sealer,
            writer_stopped: std::sync::Mutex::new(writer_stopped),
            _lock: lock,
        })
    }

    /// Hands a write to the writer thread and waits for its answer.
    async fn write<T>(
        &self,
        write: Write,
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

    /// Runs `write` on the writer thread in a transaction of its own, committed as `commit`
    /// says, and answers what it returns.
    async fn write_alone<T: Send + 'static>(
        &self,
        commit: Commit,
        write: impl FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (alone, answer) = Alone::new(commit, write);
        self.write(Write::Alone(alone), answer).await
    }
}

/// The start-up pass over the stored secrets, in one transaction: with a key, plaintext values
/// are sealed and sealed ones must open; without one, a sealed value stops the start.
async fn reseal_stored_secrets(conn: &mut SqliteConnection, sealer: &Sealer) -> StoreResult<()> {
    let mut tx = conn.begin().await?;
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
