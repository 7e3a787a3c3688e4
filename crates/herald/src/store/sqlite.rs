//! The embedded SQLite backend: one file in the data directory, WAL mode.
//!
//! SQLite has one writer at a time, so writes go through a single-connection pool (no lock
//! contention, no `SQLITE_BUSY` storms) and reads through a pool of their own. A lock file beside
//! the database keeps a second `herald serve` off it, which is what makes releasing every lease at
//! start-up safe: any lease found then belonged to a process that died.

use super::rows::{self, AttemptColumns, DeliveryColumns, WebhookColumns, corrupt, paginate};
use super::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryQuery, EventQuery, NewApiKey, NewEvent,
    NextStep, Page, PageRequest, Published, QueueDepth, Release, RetryRequest, Store, StoreError,
    StoreResult,
};
use crate::domain::event_type::any_matches;
use crate::domain::{
    Account, AccountId, Attempt, Delivery, DeliveryId, DeliveryStatus, Event, EventId, Timestamp,
    Webhook, WebhookId,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

const WEBHOOK_COLUMNS: &str =
    "id, account_id, url, events, secret, description, retry, status, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, account_id, event_id, event_type, webhook_id, status, attempts_made, next_attempt_at, created_at, updated_at";

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, takes the single-process lock, runs migrations,
    /// and releases leases left by a crashed predecessor.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged event survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let lock = lock_beside(options.get_filename())?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        sqlx::query(
            "UPDATE deliveries SET lease = NULL, locked_until = NULL WHERE lease IS NOT NULL",
        )
        .execute(&writer)
        .await?;
        Ok(Self {
            writer,
            reader,
            _lock: lock,
        })
    }
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
impl Store for SqliteStore {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
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

    async fn insert_webhook(&self, w: &Webhook) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(w.id.as_str())
        .bind(w.account_id.as_str())
        .bind(w.url.as_str())
        .bind(rows::filters_to_json(&w.events))
        .bind(w.secret.expose())
        .bind(&w.description)
        .bind(rows::policy_to_json(&w.retry))
        .bind(w.status.as_str())
        .bind(w.created_at.millis())
        .bind(w.updated_at.millis())
        .execute(&self.writer)
        .await?;
        Ok(())
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
        row.map(WebhookColumns::into_webhook).transpose()
    }

    async fn list_webhooks(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<Webhook>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND account_id = "
        ));
        q.push_bind(account.as_str().to_owned());
        push_page(&mut q, "id", page);
        let rows: Vec<WebhookColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows
            .into_iter()
            .map(WebhookColumns::into_webhook)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |w| w.id.to_string()))
    }

    async fn update_webhook(&self, w: &Webhook) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = ?, events = ?, secret = ?, description = ?, retry = ?, status = ?, updated_at = ?
             WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
        )
        .bind(w.url.as_str())
        .bind(rows::filters_to_json(&w.events))
        .bind(w.secret.expose())
        .bind(&w.description)
        .bind(rows::policy_to_json(&w.retry))
        .bind(w.status.as_str())
        .bind(w.updated_at.millis())
        .bind(w.id.as_str())
        .bind(w.account_id.as_str())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
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

    async fn publish_event(&self, new: NewEvent) -> StoreResult<Published> {
        let mut tx = self.writer.begin().await?;
        if let Some(idem) = &new.idempotency {
            let earlier = sqlx::query(
                "SELECT id, idempotency_fingerprint, created_at FROM events WHERE account_id = ? AND idempotency_key = ?",
            )
            .bind(new.account.as_str())
            .bind(&idem.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = earlier {
                let id: String = row.get("id");
                if row.get::<i64, _>("created_at") >= idem.valid_since.millis() {
                    if row
                        .get::<Option<String>, _>("idempotency_fingerprint")
                        .as_deref()
                        != Some(&idem.fingerprint)
                    {
                        return Err(StoreError::IdempotencyConflict);
                    }
                    let event = fetch_event(&mut tx, &id).await?;
                    let deliveries: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE event_id = ?")
                            .bind(&id)
                            .fetch_one(&mut *tx)
                            .await?;
                    return Ok(Published {
                        event,
                        deliveries: deliveries as u32,
                        replayed: true,
                    });
                }
                // The earlier use has expired: the key is free again.
                sqlx::query("UPDATE events SET idempotency_key = NULL WHERE id = ?")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let now = Timestamp::now();
        sqlx::query(
            "INSERT INTO events (id, account_id, type, timestamp, data, idempotency_key, idempotency_fingerprint, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id.as_str())
        .bind(new.account.as_str())
        .bind(&new.event_type)
        .bind(new.timestamp.millis())
        .bind(new.data.get())
        .bind(new.idempotency.as_ref().map(|i| i.key.as_str()))
        .bind(new.idempotency.as_ref().map(|i| i.fingerprint.as_str()))
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        let candidates = sqlx::query(
            "SELECT id, events FROM webhooks WHERE account_id = ? AND status = 'active' AND deleted_at IS NULL ORDER BY id",
        )
        .bind(new.account.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut deliveries = 0u32;
        for row in candidates {
            let filters = rows::filters_from_json(row.get("events"))?;
            if !any_matches(&filters, &new.event_type) {
                continue;
            }
            sqlx::query(
                "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status, attempts_made,
                 next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
            )
            .bind(DeliveryId::generate().as_str())
            .bind(new.account.as_str())
            .bind(new.id.as_str())
            .bind(&new.event_type)
            .bind(row.get::<String, _>("id"))
            .bind(now.millis())
            .bind(now.millis())
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
            deliveries += 1;
        }
        tx.commit().await?;
        let event = Event {
            id: new.id,
            account: new.account,
            event_type: new.event_type,
            timestamp: new.timestamp,
            data: new.data,
        };
        Ok(Published {
            event,
            deliveries,
            replayed: false,
        })
    }

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
            "SELECT id, number, started_at, duration_ms, status_code, error_kind, error, response_body
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
        let mut tx = self.writer.begin().await?;
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

    async fn claim_due(&self, req: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let saturated: Vec<&str> = req
            .in_flight
            .iter()
            .filter(|(_, n)| **n >= req.per_webhook_cap)
            .map(|(w, _)| w.as_str())
            .collect();
        let mut tx = self.writer.begin().await?;
        let candidates = sqlx::query(
            "SELECT id, webhook_id FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)
               AND webhook_id NOT IN (SELECT value FROM json_each(?2))
             ORDER BY next_attempt_at LIMIT ?3",
        )
        .bind(req.now.millis())
        .bind(serde_json::to_string(&saturated).expect("strings serialize"))
        .bind((req.limit * 4) as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut room: HashMap<String, usize> = HashMap::new();
        let mut picked: Vec<String> = Vec::with_capacity(req.limit);
        for row in &candidates {
            let webhook: String = row.get("webhook_id");
            let used = room.entry(webhook.clone()).or_insert_with(|| {
                req.in_flight
                    .get(&WebhookId::from_trusted(webhook))
                    .copied()
                    .unwrap_or(0)
            });
            if *used < req.per_webhook_cap {
                *used += 1;
                picked.push(row.get("id"));
                if picked.len() == req.limit {
                    break;
                }
            }
        }
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let lease = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("UPDATE deliveries SET lease = ?, locked_until = ? WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&lease)
            .bind(req.lease_until.millis())
            .bind(serde_json::to_string(&picked).expect("strings serialize"))
            .execute(&mut *tx)
            .await?;
        let claimed = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.id AS d_id, d.attempts_made AS d_attempts_made,
                    e.id AS e_id, e.account_id AS e_account_id, e.type AS e_type, e.timestamp AS e_timestamp, e.data AS e_data,
                    {}
             FROM deliveries d JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.lease = ? ORDER BY d.next_attempt_at",
            WEBHOOK_COLUMNS.split(", ").map(|c| format!("w.{c} AS {c}")).collect::<Vec<_>>().join(", ")
        )))
        .bind(&lease)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        claimed
            .iter()
            .map(|row| {
                let webhook: WebhookColumns = sqlx::FromRow::from_row(row)?;
                Ok(ClaimedDelivery {
                    delivery_id: DeliveryId::from_trusted(row.get("d_id")),
                    lease: lease.clone(),
                    attempt_number: row.get::<i64, _>("d_attempts_made") as u32 + 1,
                    event: event_from_row(row, "e_")?,
                    webhook: webhook.into_webhook()?,
                })
            })
            .collect()
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for r in records {
            let a = &r.attempt;
            sqlx::query(
                "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, status_code, error_kind, error, response_body)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(a.id.as_str())
            .bind(r.delivery_id.as_str())
            .bind(i64::from(a.number))
            .bind(a.started_at.millis())
            .bind(a.duration_ms as i64)
            .bind(a.status_code.map(i64::from))
            .bind(a.error_kind.map(|k| k.as_str()))
            .bind(a.error.as_deref())
            .bind(a.response_body.as_deref())
            .execute(&mut *tx)
            .await?;
            let (status, next_at) = match r.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
                NextStep::Failed => (DeliveryStatus::Failed, None),
                NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(t.millis())),
            };
            sqlx::query(
                "UPDATE deliveries SET status = ?, attempts_made = ?, next_attempt_at = ?, lease = NULL, locked_until = NULL,
                 updated_at = ? WHERE id = ? AND lease = ?",
            )
            .bind(status.as_str())
            .bind(i64::from(a.number))
            .bind(next_at)
            .bind(Timestamp::now().millis())
            .bind(r.delivery_id.as_str())
            .bind(&r.lease)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
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
        // Rows come in due order; leased ones are due again only when their lease runs out,
        // and the first unleased row bounds the answer.
        let rows = sqlx::query(
            "SELECT next_attempt_at, locked_until FROM deliveries WHERE status = 'pending'
             ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(scan_limit.max(1) as i64)
        .fetch_all(&self.reader)
        .await?;
        let mut earliest: Option<i64> = None;
        for row in rows {
            let next: i64 = row.get("next_attempt_at");
            let at = row
                .get::<Option<i64>, _>("locked_until")
                .map_or(next, |l| l.max(next));
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
            if at == next {
                break;
            }
        }
        Ok(earliest.map(Timestamp::from_millis))
    }

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

async fn fetch_event(conn: &mut sqlx::SqliteConnection, id: &str) -> StoreResult<Event> {
    let row = sqlx::query("SELECT id, account_id, type, timestamp, data FROM events WHERE id = ?")
        .bind(id)
        .fetch_one(conn)
        .await?;
    event_from_row(&row, "")
}
