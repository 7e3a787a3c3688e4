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

use super::group_commit::{self, PublishRequest};
use super::rows::{
    self, AttemptColumns, DeliveryColumns, JOB_COLUMNS, JobColumns, WEBHOOK_COLUMNS,
    WEBHOOK_SECRETS_QUERY, WebhookColumns, WebhookSecretColumns, WebhookValues, corrupt, paginate,
};
use super::seal::{Column, Sealer};
use super::{
    Accounts, AttemptRecord, ClaimRequest, ClaimedDelivery, Deliveries, DeliveryQuery, EventQuery,
    Events, Handoff, HealthPolicy, Intake, JobCreated, JobUpdate, Jobs, NewApiKey, NewEvent, Page,
    PageRequest, PruneEvents, PrunedEvents, Published, Publisher, Queue, QueueDepth, QueueGauges,
    Release, Retention, RetryRequest, StoreError, StoreResult, Webhooks,
};
use crate::domain::{
    Account, AccountId, Attempt, Delivery, DeliveryId, Event, EventId, Job, JobPatch,
    SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind, WebhookStatus,
};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod hop;
mod retention;
mod writer;

use hop::Hop;
use writer::{LeaseRequest, QueueWrite, RecordRequest};

/// Who writes, as errors name it.
const WRITER: &str = "SQLite writer";
const PUBLISHER: &str = WRITER;

const DELIVERY_COLUMNS: &str = "id, account_id, event_id, event_type, webhook_id, status, attempts_made, next_attempt_at, created_at, updated_at";

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
fn lock_beside(db: &std::path::Path) -> StoreResult<Option<std::fs::File>> {
    let name = db.to_string_lossy();
    if name.is_empty() || name == ":memory:" {
        return Ok(None);
    }
    let path = format!("{name}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unsupported(format!("cannot open lock file {path}: {e}")))?;
    file.try_lock().map_err(|_| {
        StoreError::Unsupported(format!(
            "another Herald process is using {name} (lock file {path} is held)"
        ))
    })?;
    Ok(Some(file))
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

#[async_trait]
impl Accounts for SqliteStore {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.durable_begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)")
            .bind(account.id.as_str())
            .bind(&account.name)
            .bind(account.created_at.millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, key_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.account_id.as_str())
        .bind(&key.hash)
        .bind(key.created_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
        let mut q = QueryBuilder::new("SELECT id, name, created_at FROM accounts WHERE 1 = 1");
        push_page(&mut q, "id", page);
        let rows = q.build().fetch_all(&self.reader).await?;
        let items = rows
            .iter()
            .map(account_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<(AccountId, String)>> {
        let row = sqlx::query(
            "SELECT account_id, key_hash FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| {
            (
                AccountId::from_trusted(r.get("account_id")),
                r.get("key_hash"),
            )
        }))
    }

    async fn account_signing_secret(&self, account: &AccountId) -> StoreResult<SigningSecret> {
        let fresh = SigningSecret::generate();
        let mut conn = self.durable_conn().await?;
        sqlx::query(
            "UPDATE accounts SET signing_secret = ? WHERE id = ? AND signing_secret IS NULL",
        )
        .bind(self.sealer.seal(
            Column::AccountSigningSecret,
            account.as_str(),
            fresh.expose(),
        ))
        .bind(account.as_str())
        .execute(&mut *conn)
        .await?;
        let stored: String = sqlx::query_scalar("SELECT signing_secret FROM accounts WHERE id = ?")
            .bind(account.as_str())
            .fetch_one(&mut *conn)
            .await?;
        let text = self
            .sealer
            .open(Column::AccountSigningSecret, account.as_str(), &stored)?;
        SigningSecret::parse(&text).map_err(|e| corrupt("account signing secret", e))
    }
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn insert_webhook(&self, w: &Webhook) -> StoreResult<()> {
        let mut conn = self.durable_conn().await?;
        insert_webhook_on(&mut conn, w, &self.sealer).await
    }

    async fn callback_webhook(&self, account: &AccountId) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(account.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn set_callback_webhook(&self, w: &Webhook) -> StoreResult<Webhook> {
        let mut tx = self.durable_begin().await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL",
        )
        .bind(w.account_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(id) => {
                // The row keeps its own id, which its sealed columns are bound to.
                let current = Webhook {
                    id: WebhookId::from_trusted(id),
                    ..w.clone()
                };
                let v = WebhookValues::of(&current, &self.sealer);
                sqlx::query(
                    "UPDATE webhooks SET url = ?, signing = ?, format = ?, updated_at = ?, secret = ?,
                     previous_secret = ?, previous_secret_until = ? WHERE id = ?",
                )
                .bind(w.url.as_str())
                .bind(&v.signing)
                .bind(w.format.as_str())
                .bind(w.updated_at.millis())
                .bind(&v.secret)
                .bind(&v.previous_secret)
                .bind(v.previous_secret_until)
                .bind(current.id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => insert_webhook_on(&mut tx, w, &self.sealer).await?,
        }
        let row: WebhookColumns = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ? AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(w.account_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_webhook(&self.sealer)
    }

    async fn set_webhook_status(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        status: WebhookStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>> {
        let mut q = QueryBuilder::new("UPDATE webhooks SET status = ");
        q.push_bind(status.as_str())
            .push(", disabled_reason = ")
            .push_bind(reason.map(str::to_owned))
            .push(", failing_since = NULL, updated_at = ")
            .push_bind(now.millis())
            .push(" WHERE deleted_at IS NULL AND id = ")
            .push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let mut conn = self.durable_conn().await?;
        q.build().execute(&mut *conn).await?;
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND deleted_at IS NULL"
        )))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let webhook = row.map(|r| r.into_webhook(&self.sealer)).transpose()?;
        Ok(webhook.filter(|w| account.is_none_or(|a| *a == w.account_id)))
    }

    async fn get_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
    ) -> StoreResult<Option<Webhook>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND id = "
        ));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn list_webhooks(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<Webhook>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND kind <> 'job' AND account_id = "
        ));
        q.push_bind(account.as_str().to_owned());
        push_page(&mut q, "id", page);
        let rows: Vec<WebhookColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(|r| r.into_webhook(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |w| w.id.to_string()))
    }

    async fn update_webhook(&self, w: &Webhook) -> StoreResult<bool> {
        let v = WebhookValues::of(w, &self.sealer);
        let mut conn = self.durable_conn().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET url = ?, events = ?, secret = ?, description = ?, retry = ?, status = ?, updated_at = ?,
             signing = ?, format = ?, previous_secret = ?, previous_secret_until = ?, disabled_reason = ?
             WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
        )
        .bind(w.url.as_str())
        .bind(&v.events)
        .bind(&v.secret)
        .bind(&w.description)
        .bind(&v.retry)
        .bind(w.status.as_str())
        .bind(w.updated_at.millis())
        .bind(&v.signing)
        .bind(w.format.as_str())
        .bind(&v.previous_secret)
        .bind(v.previous_secret_until)
        .bind(&w.disabled_reason)
        .bind(w.id.as_str())
        .bind(w.account_id.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.durable_begin().await?;
        let mut q = QueryBuilder::new("UPDATE webhooks SET deleted_at = ");
        q.push_bind(now.millis())
            .push(" WHERE deleted_at IS NULL AND id = ")
            .push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        if q.build().execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL, locked_until = NULL,
             updated_at = ? WHERE webhook_id = ? AND status = 'pending'",
        )
        .bind(now.millis())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl Jobs for SqliteStore {
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated> {
        let mut tx = self.durable_begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
            .bind(&job.id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(JobCreated::Exists);
        }
        write_job(&mut tx, job, true).await?;
        if let Some(w) = webhook {
            insert_webhook_on(&mut tx, w, &self.sealer).await?;
        }
        let deliveries = insert_event(
            &mut tx,
            &NewEvent::for_job(job),
            Timestamp::now(),
            &self.sealer,
        )
        .await?;
        tx.commit().await?;
        Ok(JobCreated::Created { deliveries })
    }

    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>> {
        let mut conn = self.reader.acquire().await?;
        fetch_job(&mut conn, account, id).await
    }

    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        // The single writer connection serialises updates: the read below sees every earlier one.
        let mut tx = self.durable_begin().await?;
        let Some(job) = fetch_job(&mut tx, account, id).await? else {
            return Ok(JobUpdate::NotFound);
        };
        let (next, changed) = match job.apply(patch, now) {
            Ok(applied) => applied,
            Err(conflict) => return Ok(JobUpdate::Refused(conflict)),
        };
        write_job(&mut tx, &next, false).await?;
        let (event, deliveries) = if changed {
            let e = NewEvent::for_job(&next);
            let deliveries = insert_event(&mut tx, &e, now, &self.sealer).await?;
            (Some(e.id), deliveries)
        } else {
            (None, 0)
        };
        tx.commit().await?;
        Ok(JobUpdate::Updated {
            job: next,
            event,
            deliveries,
        })
    }
}

#[async_trait]
impl Publisher for SqliteStore {
    async fn publish_events(
        &self,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<StoreResult<Published>>> {
        group_commit::submit(&self.publisher, PUBLISHER, events).await
    }
}

#[async_trait]
impl Events for SqliteStore {
    async fn get_event(
        &self,
        account: Option<&AccountId>,
        id: &EventId,
    ) -> StoreResult<Option<Event>> {
        let mut q = QueryBuilder::new(
            "SELECT id, account_id, type, timestamp, data FROM events WHERE id = ",
        );
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row = q.build().fetch_optional(&self.reader).await?;
        row.map(|r| event_from_row(&r, "")).transpose()
    }

    async fn list_events(
        &self,
        query: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let mut q = QueryBuilder::new(
            "SELECT id, account_id, type, timestamp, data FROM events WHERE 1 = 1",
        );
        scope(&mut q, "account_id", query.account.as_ref());
        if let Some(t) = &query.event_type {
            q.push(" AND type = ").push_bind(t.clone());
        }
        if let Some(since) = query.since {
            q.push(" AND timestamp >= ").push_bind(since.millis());
        }
        if let Some(until) = query.until {
            q.push(" AND timestamp < ").push_bind(until.millis());
        }
        push_page(&mut q, "id", page);
        let rows = q.build().fetch_all(&self.reader).await?;
        let items = rows
            .iter()
            .map(|r| event_from_row(r, ""))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |e| e.id.to_string()))
    }
}

#[async_trait]
impl Deliveries for SqliteStore {
    async fn get_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = "
        ));
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        let row: Option<DeliveryColumns> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(DeliveryColumns::into_delivery).transpose()
    }

    async fn list_deliveries(
        &self,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"
        ));
        scope(&mut q, "account_id", query.account.as_ref());
        if let Some(w) = &query.webhook {
            q.push(" AND webhook_id = ")
                .push_bind(w.as_str().to_owned());
        }
        if let Some(e) = &query.event {
            q.push(" AND event_id = ").push_bind(e.as_str().to_owned());
        }
        if let Some(s) = query.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        push_page(&mut q, "id", page);
        let rows: Vec<DeliveryColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(DeliveryColumns::into_delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |d| d.id.to_string()))
    }

    async fn list_attempts(&self, delivery: &DeliveryId) -> StoreResult<Vec<Attempt>> {
        let rows: Vec<AttemptColumns> = sqlx::query_as(
            "SELECT id, number, started_at, duration_ms, status_code, error_kind, error, response_body, node
             FROM attempts WHERE delivery_id = ? ORDER BY started_at, number",
        )
        .bind(delivery.as_str())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(AttemptColumns::into_attempt).collect())
    }

    async fn retry_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
        now: Timestamp,
    ) -> StoreResult<RetryRequest> {
        let mut tx = self.durable_begin().await?;
        let mut q = QueryBuilder::new(
            "SELECT d.status, d.lease, w.deleted_at FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ",
        );
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "d.account_id", account);
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(RetryRequest::NotFound);
        };
        if row.get::<Option<i64>, _>("deleted_at").is_some() {
            return Ok(RetryRequest::Refused(
                "the delivery's webhook has been deleted".to_owned(),
            ));
        }
        // An attempt in flight right now already is the new attempt; leave it be.
        let in_flight = row.get::<Option<String>, _>("lease").is_some();
        if !in_flight {
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ? WHERE id = ?",
            )
            .bind(now.millis())
            .bind(now.millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let delivery: DeliveryColumns = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?"
        )))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RetryRequest::Scheduled(delivery.into_delivery()?))
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn claim_due(&self, req: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        // Candidates are read on a reader connection: the scan never holds up the writer.
        let mut conn = self.reader.acquire().await?;
        let window = req.limit * 4;
        let candidates: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.id, d.webhook_id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
               AND (d.locked_until IS NULL OR d.locked_until <= ?1) AND w.status = 'active'
             ORDER BY d.next_attempt_at LIMIT ?2",
        )
        .bind(req.now.millis())
        .bind(window as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut picked: Vec<(String, String)> = {
            let ids = super::pick_within_caps(&candidates, req);
            candidates
                .iter()
                .filter(|(d, _)| ids.contains(d))
                .cloned()
                .collect()
        };
        if candidates.len() == window && picked.len() < req.limit {
            // The due window is crowded by webhooks at their cap (a slow endpoint's backlog):
            // look webhook by webhook, so that backlog never hides the others' due work.
            claim_per_webhook(&mut conn, req, &mut picked).await?;
        }
        drop(conn);
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let request = LeaseRequest {
            picked: picked.into_iter().map(|(d, _)| d).collect(),
            lease: uuid::Uuid::new_v4().simple().to_string(),
            now: req.now,
            lease_until: req.lease_until,
            reply,
        };
        self.write(QueueWrite::Lease(request), answer).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let request = RecordRequest {
            records: records.to_vec(),
            health: *health,
            reply,
        };
        self.write(QueueWrite::Record(request), answer).await
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        let mut tx = self.relaxed_begin().await?;
        for r in releases {
            sqlx::query("UPDATE deliveries SET lease = NULL, locked_until = NULL WHERE id = ? AND lease = ?")
                .bind(r.delivery_id.as_str())
                .bind(&r.lease)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due_at(&self, scan_limit: usize) -> StoreResult<Option<Timestamp>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT next_attempt_at, locked_until FROM deliveries WHERE status = 'pending'
             ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(scan_limit.max(1) as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows::earliest_claimable(&rows).map(Timestamp::from_millis))
    }

    fn set_intake(&self, intake: Arc<dyn Intake>, lease: Duration) {
        let _ = self.intake.set((intake, lease));
    }
}

#[async_trait]
impl Retention for SqliteStore {
    async fn prune_events(&self, batch: &PruneEvents) -> StoreResult<PrunedEvents> {
        self.prune_events_batch(batch).await
    }

    async fn prune_jobs(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.prune_jobs_batch(finished_before, limit).await
    }

    async fn forget_idempotency_keys(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.forget_idempotency_keys_batch(before, limit).await
    }
}

#[async_trait]
impl QueueGauges for SqliteStore {
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth> {
        // One pass over the pending rows (the partial index `deliveries_due`), on a reader.
        let row = sqlx::query(
            "SELECT
               COALESCE(SUM(next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)), 0) AS due,
               COALESCE(SUM(next_attempt_at > ?1), 0) AS scheduled,
               MIN(CASE WHEN next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)
                        THEN next_attempt_at END) AS oldest_due
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now.millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(QueueDepth {
            due: row.try_get::<i64, _>("due")?.max(0) as u64,
            scheduled: row.try_get::<i64, _>("scheduled")?.max(0) as u64,
            oldest_due: row
                .try_get::<Option<i64>, _>("oldest_due")?
                .map(Timestamp::from_millis),
        })
    }
}

fn account_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Account> {
    Ok(Account {
        id: AccountId::from_trusted(r.try_get("id")?),
        name: r.try_get("name")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

/// Reads an event from columns named `{prefix}id`, `{prefix}account_id`, `{prefix}type`, ….
fn event_from_row(r: &sqlx::sqlite::SqliteRow, prefix: &str) -> StoreResult<Event> {
    let col = |c: &str| format!("{prefix}{c}");
    rows::event(
        r.try_get(col("id").as_str())?,
        r.try_get(col("account_id").as_str())?,
        r.try_get(col("type").as_str())?,
        r.try_get(col("timestamp").as_str())?,
        r.try_get(col("data").as_str())?,
    )
    .map_err(|e| corrupt("event", e))
}

async fn insert_webhook_on(
    conn: &mut sqlx::SqliteConnection,
    w: &Webhook,
    sealer: &Sealer,
) -> StoreResult<()> {
    let v = WebhookValues::of(w, sealer);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(w.id.as_str())
    .bind(w.account_id.as_str())
    .bind(w.url.as_str())
    .bind(&v.events)
    .bind(&v.secret)
    .bind(&w.description)
    .bind(&v.retry)
    .bind(w.status.as_str())
    .bind(w.created_at.millis())
    .bind(w.updated_at.millis())
    .bind(w.kind.as_str())
    .bind(&w.job_id)
    .bind(&v.signing)
    .bind(w.format.as_str())
    .bind(&v.previous_secret)
    .bind(v.previous_secret_until)
    .bind(&w.disabled_reason)
    .bind(w.failing_since.map(Timestamp::millis))
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores an event and one pending delivery per webhook that gets it; returns how many.
async fn insert_event(
    conn: &mut sqlx::SqliteConnection,
    e: &NewEvent,
    now: Timestamp,
    sealer: &Sealer,
) -> StoreResult<u32> {
    let counts = insert_events(conn, &[e], now, None, sealer).await?;
    Ok(counts[0].0)
}

/// Stores events and enqueues a delivery for every webhook that gets each, in two round trips
/// to sqlx's SQLite thread whatever the number of events. Returns, for each event in order, its
/// number of deliveries and how many of those went to `handoff`.
async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    events: &[&NewEvent],
    now: Timestamp,
    handoff: Option<&mut Handoff>,
    sealer: &Sealer,
) -> StoreResult<Vec<(u32, u32)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut hop = Hop::new();
    push_insert_events(&mut hop, events, now);
    push_webhook_lookup(&mut hop, events);
    let webhooks = hop
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let columns: WebhookColumns = sqlx::FromRow::from_row(row)?;
            columns.into_webhook(sealer)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let mut hop = Hop::new();
    let counts = plan_deliveries(&mut hop, events, &webhooks, now, handoff);
    hop.execute(conn).await?;
    Ok(counts)
}

/// The insert of `events` (none with an idempotency key to check).
fn push_insert_events(hop: &mut Hop, events: &[&NewEvent], now: Timestamp) {
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.id.as_str(),
                e.account.as_str(),
                &e.event_type,
                e.timestamp.millis(),
                e.data.get(),
                e.idempotency.as_ref().map(|i| (&i.key, &i.fingerprint)),
                e.job.as_ref().map(|j| j.id.as_str()),
            )
        })
        .collect();
    let now = hop.arg(now.millis());
    let rows = hop.arg(serde_json::to_string(&rows).expect("strings serialize"));
    hop.push(&format!(
        "INSERT INTO events (id, account_id, type, timestamp, data, idempotency_key, idempotency_fingerprint,
         created_at, job_id)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>'$[5][0]', value->>'$[5][1]',
                {now}, value->>6
         FROM jsonb_each({rows})"
    ));
}

/// The lookup of every webhook that may get one of `events`: the active webhooks of their
/// accounts, a job's webhook only for its own job's events; rows of [`WEBHOOK_COLUMNS`].
fn push_webhook_lookup(hop: &mut Hop, events: &[&NewEvent]) {
    let mut accounts: Vec<&str> = events.iter().map(|e| e.account.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let jobs: Vec<&str> = events
        .iter()
        .filter_map(|e| e.job.as_ref().map(|j| j.id.as_str()))
        .collect();
    let accounts = hop.arg(serde_json::to_string(&accounts).expect("strings serialize"));
    let jobs = hop.arg(serde_json::to_string(&jobs).expect("strings serialize"));
    hop.push(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks
         WHERE account_id IN (SELECT value FROM json_each({accounts})) AND status = 'active' AND deleted_at IS NULL
           AND (kind <> 'job' OR job_id IN (SELECT value FROM json_each({jobs})))
         ORDER BY id"
    ));
}

/// Chooses the webhooks that get each event from the looked-up `hooks`, and adds the insert
/// of their deliveries to `hop` (those `handoff` reserves are written leased to this node).
/// Returns, for each event, its number of deliveries and how many were handed over.
fn plan_deliveries(
    hop: &mut Hop,
    events: &[&NewEvent],
    hooks: &[Webhook],
    now: Timestamp,
    mut handoff: Option<&mut Handoff>,
) -> Vec<(u32, u32)> {
    let mut counts = Vec::with_capacity(events.len());
    let mut deliveries = Vec::new();
    for e in events {
        let (mut n, mut handed) = (0u32, 0u32);
        for hook in hooks {
            // The lookup covered the whole group: a job's webhook is only ever a candidate for
            // its own job's events, as when events are written one by one.
            let other_job = hook.kind == WebhookKind::Job
                && e.job.as_ref().map(|j| j.id.as_str()) != hook.job_id.as_deref();
            if hook.account_id != e.account
                || other_job
                || !e.is_for(
                    hook.id.as_str(),
                    hook.kind,
                    hook.job_id.as_deref(),
                    &hook.events,
                )
            {
                continue;
            }
            let id = DeliveryId::generate();
            let mut leased = None;
            if let Some(h) = handoff.as_deref_mut()
                && h.reserve(&hook.id)
            {
                h.add(id.clone(), e.to_event(), hook.clone());
                leased = Some((h.lease.clone(), h.lease_until.millis()));
                handed += 1;
            }
            deliveries.push((
                id.to_string(),
                e.account.as_str(),
                e.id.as_str(),
                &e.event_type,
                hook.id.as_str(),
                leased,
            ));
            n += 1;
        }
        counts.push((n, handed));
    }
    if !deliveries.is_empty() {
        let now_ms = now.millis();
        let (now, now2, now3) = (hop.arg(now_ms), hop.arg(now_ms), hop.arg(now_ms));
        let rows = hop.arg(serde_json::to_string(&deliveries).expect("strings serialize"));
        hop.push(&format!(
            "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status, attempts_made,
             next_attempt_at, created_at, updated_at, lease, locked_until)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, 'pending', 0, {now}, {now2}, {now3},
                    value->>'$[5][0]', value->>'$[5][1]'
             FROM jsonb_each({rows})"
        ));
    }
    counts
}

async fn fetch_job(
    conn: &mut sqlx::SqliteConnection,
    account: Option<&AccountId>,
    id: &str,
) -> StoreResult<Option<Job>> {
    let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = "));
    q.push_bind(id.to_owned());
    scope(&mut q, "account_id", account);
    let row: Option<JobColumns> = q.build_query_as().fetch_optional(conn).await?;
    row.map(JobColumns::into_job).transpose()
}

async fn write_job(conn: &mut sqlx::SqliteConnection, j: &Job, insert: bool) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO jobs (status, progress, input, result, error, webhook_url, created_at, updated_at, completed_at,
         id, account_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "UPDATE jobs SET status = ?, progress = ?, input = ?, result = ?, error = ?, webhook_url = ?, created_at = ?,
         updated_at = ?, completed_at = ? WHERE id = ? AND account_id = ? AND kind = ?"
    };
    sqlx::query(sql)
        .bind(j.status.as_str())
        .bind(j.progress)
        .bind(j.input.as_ref().map(|r| r.get()))
        .bind(j.result.as_ref().map(|r| r.get()))
        .bind(j.error.as_ref().map(|r| r.get()))
        .bind(&j.webhook_url)
        .bind(j.created_at.millis())
        .bind(j.updated_at.millis())
        .bind(j.completed_at.map(Timestamp::millis))
        .bind(&j.id)
        .bind(j.account.as_str())
        .bind(&j.kind)
        .execute(conn)
        .await?;
    Ok(())
}

/// Most webhooks one claim looks at one by one.
const MAX_WEBHOOKS_PER_CLAIM: i64 = 1000;

/// Adds to `picked`, up to the limit, due deliveries of webhooks with room, looked up webhook by
/// webhook through `deliveries_pending_by_webhook`. The webhooks with pending work are listed
/// by a loose index scan (one index seek each), in random order for fairness.
async fn claim_per_webhook(
    conn: &mut sqlx::SqliteConnection,
    req: &ClaimRequest,
    picked: &mut Vec<(String, String)>,
) -> StoreResult<()> {
    let mut hooks: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE hooks(id, n) AS (
           SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' ORDER BY webhook_id LIMIT 1), 1
           UNION ALL
           SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' AND webhook_id > hooks.id
                   ORDER BY webhook_id LIMIT 1), n + 1
           FROM hooks WHERE hooks.id IS NOT NULL AND n < ?1)
         SELECT id FROM hooks WHERE id IS NOT NULL",
    )
    .bind(MAX_WEBHOOKS_PER_CLAIM)
    .fetch_all(&mut *conn)
    .await?;
    {
        use rand::seq::SliceRandom;
        hooks.shuffle(&mut rand::rng());
    }
    for hook in hooks {
        if picked.len() >= req.limit {
            break;
        }
        let used = req
            .in_flight
            .get(&WebhookId::from_trusted(hook.clone()))
            .copied()
            .unwrap_or(0)
            + picked.iter().filter(|(_, w)| *w == hook).count();
        let room = req
            .per_webhook_cap
            .saturating_sub(used)
            .min(req.limit - picked.len());
        if room == 0 {
            continue;
        }
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.id, d.webhook_id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2
               AND (d.locked_until IS NULL OR d.locked_until <= ?2) AND w.status = 'active'
             ORDER BY d.next_attempt_at LIMIT ?3",
        )
        .bind(&hook)
        .bind(req.now.millis())
        .bind((room + req.per_webhook_cap) as i64)
        .fetch_all(&mut *conn)
        .await?;
        let more = super::pick_more(&due, req, picked);
        picked.extend(due.into_iter().filter(|(d, _)| more.contains(d)));
    }
    Ok(())
}
