//! The PostgreSQL backend: any number of `herald serve` processes share one database.
//!
//! Due deliveries are claimed with `FOR UPDATE SKIP LOCKED` and a lease (`locked_until`), so
//! nodes never take the same work and a dead node's leases simply run out. New deliveries that
//! this node's dispatcher has room for are written leased to it and handed over after the commit
//! (see `publish`); commits that leave work for the claims `NOTIFY herald_work`, which wakes idle
//! nodes at once. Migrations take sqlx's advisory lock, so nodes starting together migrate once.

use super::rows::{
    self, AttemptColumns, DeliveryColumns, JOB_COLUMNS, JobColumns, WEBHOOK_COLUMNS,
    WEBHOOK_SECRETS_QUERY, WebhookColumns, WebhookSecretColumns, WebhookValues, corrupt, paginate,
};
use super::seal::{Column, Sealer};
use super::{
    Accounts, AttemptRecord, ClaimRequest, ClaimedDelivery, Deliveries, DeliveryQuery, EventQuery,
    Events, HealthPolicy, Intake, JobCreated, JobUpdate, Jobs, NewApiKey, NewEvent, NextStep, Page,
    PageRequest, PruneEvents, PrunedEvents, Published, Publisher, Queue, QueueDepth, QueueGauges,
    Release, Retention, RetryRequest, StoreResult, WebhookRef, Webhooks,
};
use crate::domain::{
    Account, AccountId, Attempt, Delivery, DeliveryId, DeliveryStatus, Event, EventId, Job,
    JobPatch, SigningSecret, Timestamp, Webhook, WebhookId, WebhookStatus,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod claim;
mod publish;
mod retention;

use super::group_commit::{self, PublishRequest, closed};
use publish::insert_event;

const DELIVERY_COLUMNS: &str = "id, account_id, event_id, event_type, webhook_id, status, attempts_made, next_attempt_at, created_at, updated_at";
const CHANNEL: &str = "herald_work";

pub struct PgStore {
    pool: PgPool,
    /// Seals the secret columns on write, opens them on read.
    sealer: Sealer,
    /// Publishes go to the group-commit tasks.
    publisher: mpsc::Sender<PublishRequest>,
    /// Where those tasks hand new deliveries to this node's dispatcher, once it is set.
    intake: publish::IntakeSlot,
}

impl PgStore {
    /// Connects, runs migrations, and seals or checks the stored secrets (see
    /// [`Sealer::reseal`]).
    pub async fn open(url: &str, pool_size: u32, sealer: Sealer) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // Fail fast while the database is down, so the API answers 503 instead of hanging.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        reseal_stored_secrets(&pool, &sealer).await?;
        let intake = publish::IntakeSlot::default();
        let publisher = publish::start_publishers(&pool, pool_size, &intake, &sealer);
        Ok(Self {
            pool,
            sealer,
            publisher,
            intake,
        })
    }
}

impl PgStore {
    /// A transaction whose commit does not wait for the WAL flush (`synchronous_commit = off`):
    /// for the queue's own bookkeeping (leases, attempt results), which a database crash can at
    /// worst roll back by a few milliseconds, repeating an attempt (at-least-once); never for an
    /// acknowledged event. Commits are still atomic and in order.
    async fn relaxed_begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?)
    }
}

/// The start-up pass over the stored secrets, in one transaction: with a key, plaintext values
/// are sealed and sealed ones must open; without one, a sealed value stops the start. With a
/// key the rows are locked, so nodes starting together seal each value once.
async fn reseal_stored_secrets(pool: &PgPool, sealer: &Sealer) -> StoreResult<()> {
    let lock = if sealer.has_key() { " FOR UPDATE" } else { "" };
    let mut tx = pool.begin().await?;
    let mut resealed = 0;
    // Accounts first: requests lock an account row before its webhooks (setting a callback URL),
    // so the pass takes its locks in the same order.
    let accounts: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, signing_secret FROM accounts WHERE signing_secret IS NOT NULL{lock}"
    )))
    .fetch_all(&mut *tx)
    .await?;
    for (id, stored) in accounts {
        if let Some(new) = sealer.reseal(Column::AccountSigningSecret, &id, &stored)? {
            sqlx::query("UPDATE accounts SET signing_secret = $1 WHERE id = $2")
                .bind(new)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            resealed += 1;
        }
    }
    let webhooks: Vec<WebhookSecretColumns> =
        sqlx::query_as(AssertSqlSafe(format!("{WEBHOOK_SECRETS_QUERY}{lock}")))
            .fetch_all(&mut *tx)
            .await?;
    for row in webhooks {
        if let Some(new) = row.resealed(sealer)? {
            sqlx::query(
                "UPDATE webhooks SET secret = $1, previous_secret = $2, signing = $3 WHERE id = $4",
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
    tx.commit().await?;
    if resealed > 0 {
        tracing::info!(
            rows = resealed,
            "encrypted the secrets stored in plaintext with HERALD_SECRETS_KEY"
        );
    }
    Ok(())
}

fn push_page(q: &mut QueryBuilder<Postgres>, id_column: &str, page: &PageRequest) {
    if let Some(after) = &page.after {
        q.push(format!(" AND {id_column} < "))
            .push_bind(after.clone());
    }
    q.push(format!(" ORDER BY {id_column} DESC LIMIT "))
        .push_bind(i64::from(page.limit) + 1);
}

fn scope(q: &mut QueryBuilder<Postgres>, column: &str, account: Option<&AccountId>) {
    if let Some(a) = account {
        q.push(format!(" AND {column} = "))
            .push_bind(a.as_str().to_owned());
    }
}

fn account_from_row(r: &PgRow) -> StoreResult<Account> {
    Ok(Account {
        id: AccountId::from_trusted(r.try_get("id")?),
        name: r.try_get("name")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

fn event_from_row(r: &PgRow, prefix: &str) -> StoreResult<Event> {
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

#[async_trait]
impl Accounts for PgStore {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(&account.name)
            .bind(account.created_at.millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
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
        let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
        let mut q = QueryBuilder::new("SELECT id, name, created_at FROM accounts WHERE TRUE");
        push_page(&mut q, "id", page);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(account_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<(AccountId, String)>> {
        let row = sqlx::query(
            "SELECT account_id, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
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
        let stored: String = sqlx::query_scalar(
            "UPDATE accounts SET signing_secret = COALESCE(signing_secret, $1) WHERE id = $2 RETURNING signing_secret",
        )
        .bind(
            self.sealer
                .seal(Column::AccountSigningSecret, account.as_str(), fresh.expose()),
        )
        .bind(account.as_str())
        .fetch_one(&self.pool)
        .await?;
        let text = self
            .sealer
            .open(Column::AccountSigningSecret, account.as_str(), &stored)?;
        SigningSecret::parse(&text).map_err(|e| corrupt("account signing secret", e))
    }
}

#[async_trait]
impl Webhooks for PgStore {
    async fn insert_webhook(&self, w: &Webhook) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_webhook_on(&mut conn, w, &self.sealer).await
    }

    async fn callback_webhook(&self, account: &AccountId) -> StoreResult<Option<Webhook>> {
        let row: Option<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL"
        )))
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
    }

    async fn set_callback_webhook(&self, w: &Webhook) -> StoreResult<Webhook> {
        let mut tx = self.pool.begin().await?;
        // Serialise concurrent PUTs of one account on its row.
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(w.account_id.as_str())
            .execute(&mut *tx)
            .await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL",
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
                    "UPDATE webhooks SET url = $1, signing = $2, format = $3, updated_at = $4, secret = $5,
                     previous_secret = $6, previous_secret_until = $7 WHERE id = $8",
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
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND kind = 'callback' AND deleted_at IS NULL"
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
        q.push(format!(" RETURNING {WEBHOOK_COLUMNS}"));
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
        row.map(|r| r.into_webhook(&self.sealer)).transpose()
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
        let row: Option<WebhookColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
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
        let rows: Vec<WebhookColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(|r| r.into_webhook(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |w| w.id.to_string()))
    }

    async fn update_webhook(&self, w: &Webhook) -> StoreResult<bool> {
        let v = WebhookValues::of(w, &self.sealer);
        let done = sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, secret = $3, description = $4, retry = $5,
             status = $6, updated_at = $7, signing = $8, format = $9, previous_secret = $10,
             previous_secret_until = $11, disabled_reason = $12
             WHERE id = $13 AND account_id = $14 AND deleted_at IS NULL",
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new("UPDATE webhooks SET deleted_at = ");
        q.push_bind(now.millis())
            .push(" WHERE deleted_at IS NULL AND id = ")
            .push_bind(id.as_str().to_owned());
        scope(&mut q, "account_id", account);
        if q.build().execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease = NULL,
             locked_until = NULL, updated_at = $1 WHERE webhook_id = $2 AND status = 'pending'",
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
impl Jobs for PgStore {
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated> {
        let mut tx = self.pool.begin().await?;
        let inserted = write_job(&mut tx, job, true).await?;
        if !inserted {
            return Ok(JobCreated::Exists);
        }
        if let Some(w) = webhook {
            insert_webhook_on(&mut tx, w, &self.sealer).await?;
        }
        let deliveries = insert_event(&mut tx, &NewEvent::for_job(job), Timestamp::now()).await?;
        tx.commit().await?;
        Ok(JobCreated::Created { deliveries })
    }

    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>> {
        let mut conn = self.pool.acquire().await?;
        fetch_job(&mut conn, account, id, false).await
    }

    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: concurrent updates of one job queue here, and each sees the one before.
        let Some(job) = fetch_job(&mut tx, account, id, true).await? else {
            return Ok(JobUpdate::NotFound);
        };
        let (next, changed) = match job.apply(patch, now) {
            Ok(applied) => applied,
            Err(conflict) => return Ok(JobUpdate::Refused(conflict)),
        };
        write_job(&mut tx, &next, false).await?;
        let (event, deliveries) = if changed {
            let e = NewEvent::for_job(&next);
            let deliveries = insert_event(&mut tx, &e, now).await?;
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
impl Publisher for PgStore {
    async fn publish_events(
        &self,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<StoreResult<Published>>> {
        group_commit::submit(&self.publisher, events).await
    }

    async fn publish_event(&self, new: NewEvent) -> StoreResult<Published> {
        let mut results = self.publish_events(vec![new]).await?;
        results.pop().unwrap_or_else(|| Err(closed("no result")))
    }
}

#[async_trait]
impl Events for PgStore {
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
        let row = q.build().fetch_optional(&self.pool).await?;
        row.map(|r| event_from_row(&r, "")).transpose()
    }

    async fn list_events(
        &self,
        query: &EventQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Event>> {
        let mut q = QueryBuilder::new(
            "SELECT id, account_id, type, timestamp, data FROM events WHERE TRUE",
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
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| event_from_row(r, ""))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |e| e.id.to_string()))
    }
}

#[async_trait]
impl Deliveries for PgStore {
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
        let row: Option<DeliveryColumns> = q.build_query_as().fetch_optional(&self.pool).await?;
        row.map(DeliveryColumns::into_delivery).transpose()
    }

    async fn list_deliveries(
        &self,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE TRUE"
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
        let rows: Vec<DeliveryColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows
            .into_iter()
            .map(DeliveryColumns::into_delivery)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(items, page.limit, |d| d.id.to_string()))
    }

    async fn list_attempts(&self, delivery: &DeliveryId) -> StoreResult<Vec<Attempt>> {
        let rows: Vec<AttemptColumns> = sqlx::query_as(
            "SELECT id, number, started_at, duration_ms, status_code, error_kind, error, response_body, node
             FROM attempts WHERE delivery_id = $1 ORDER BY started_at, number",
        )
        .bind(delivery.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AttemptColumns::into_attempt).collect())
    }

    async fn retry_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
        now: Timestamp,
    ) -> StoreResult<RetryRequest> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new(
            "SELECT d.lease, w.deleted_at FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.id = ",
        );
        q.push_bind(id.as_str().to_owned());
        scope(&mut q, "d.account_id", account);
        q.push(" FOR UPDATE OF d");
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(RetryRequest::NotFound);
        };
        if row.get::<Option<i64>, _>("deleted_at").is_some() {
            return Ok(RetryRequest::Refused(
                "the delivery's webhook has been deleted".to_owned(),
            ));
        }
        // An attempt in flight right now already is the new attempt; leave it be.
        if row.get::<Option<String>, _>("lease").is_none() {
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1
                 WHERE id = $2",
            )
            .bind(now.millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        let delivery: DeliveryColumns = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RetryRequest::Scheduled(delivery.into_delivery()?))
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn claim_due(&self, req: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        self.claim_due_deliveries(req).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = health.now.millis();
        let mut tx = self.relaxed_begin().await?;
        let mut attempts = QueryBuilder::<Postgres>::new(
            "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, status_code,
             error_kind, error, response_body, node) ",
        );
        attempts.push_values(records, |mut b, r| {
            let a = &r.attempt;
            b.push_bind(a.id.as_str().to_owned())
                .push_bind(r.delivery_id.as_str().to_owned())
                .push_bind(i64::from(a.number))
                .push_bind(a.started_at.millis())
                .push_bind(a.duration_ms as i64)
                .push_bind(a.status_code.map(i64::from))
                .push_bind(a.error_kind.map(|k| k.as_str()))
                .push_bind(a.error.clone())
                .push_bind(a.response_body.clone())
                .push_bind(a.node.clone());
        });
        attempts.build().execute(&mut *tx).await?;
        let mut update = QueryBuilder::<Postgres>::new(
            "UPDATE deliveries d SET status = v.status, attempts_made = v.number,
             next_attempt_at = v.next_at, lease = NULL, locked_until = NULL, updated_at = ",
        );
        update.push_bind(now).push(" FROM (");
        update.push_values(records, |mut b, r| {
            let (status, next_at) = match r.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
                NextStep::Failed => (DeliveryStatus::Failed, None),
                NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(t.millis())),
            };
            b.push_bind(r.delivery_id.as_str().to_owned())
                .push_bind(r.lease.clone())
                .push_bind(status.as_str())
                .push_bind(i64::from(r.attempt.number))
                .push_bind(next_at);
        });
        update.push(
            ") AS v(id, lease, status, number, next_at) WHERE d.id = v.id AND d.lease = v.lease",
        );
        update.build().execute(&mut *tx).await?;
        record_health(&mut tx, records, health).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        let ids: Vec<String> = releases.iter().map(|r| r.delivery_id.to_string()).collect();
        let leases: Vec<String> = releases.iter().map(|r| r.lease.clone()).collect();
        sqlx::query(
            "UPDATE deliveries d SET lease = NULL, locked_until = NULL
             FROM UNNEST($1::text[], $2::text[]) AS v(id, lease)
             WHERE d.id = v.id AND d.lease = v.lease",
        )
        .bind(&ids)
        .bind(&leases)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn next_due_at(&self, scan_limit: usize) -> StoreResult<Option<Timestamp>> {
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT next_attempt_at, locked_until FROM deliveries WHERE status = 'pending'
             ORDER BY next_attempt_at LIMIT $1",
        )
        .bind(scan_limit.max(1) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::earliest_claimable(&rows).map(Timestamp::from_millis))
    }

    fn set_intake(&self, intake: Arc<dyn Intake>, lease: Duration) {
        let _ = self.intake.set((intake, lease));
    }

    fn watch_for_work(&self, on_work: Arc<dyn Fn() + Send + Sync>, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                    continue;
                }
                loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(_) => on_work(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                // Work committed while we were away is found by the next poll.
                                on_work();
                                break;
                            }
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
    }
}

#[async_trait]
impl Retention for PgStore {
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
impl QueueGauges for PgStore {
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth> {
        let (due, scheduled, oldest_due): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT
               COUNT(*) FILTER (WHERE next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1)),
               COUNT(*) FILTER (WHERE next_attempt_at > $1),
               MIN(next_attempt_at) FILTER (WHERE next_attempt_at <= $1
                                            AND (locked_until IS NULL OR locked_until <= $1))
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueDepth {
            due: due.max(0) as u64,
            scheduled: scheduled.max(0) as u64,
            oldest_due: oldest_due.map(Timestamp::from_millis),
        })
    }
}

/// Keeps the webhooks' failure records and disables those that answered 410 or kept failing.
/// Only rows whose state changes are touched, so the usual all-is-well batch locks no webhook.
async fn record_health(
    conn: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
) -> StoreResult<()> {
    let ids = |pick: &dyn Fn(&AttemptRecord) -> bool| -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.webhook_id.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let succeeded = ids(&|r| r.next == NextStep::Succeeded);
    let failed = ids(&|r| r.next != NextStep::Succeeded);
    let gone = ids(&|r| r.gone);
    sqlx::query(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL",
    )
    .bind(&succeeded)
    .execute(&mut *conn)
    .await?;
    if let Some(first) = records
        .iter()
        .filter(|r| r.next != NextStep::Succeeded)
        .map(|r| r.attempt.started_at)
        .min()
    {
        sqlx::query(
            "UPDATE webhooks SET failing_since = $1 WHERE id = ANY($2) AND failing_since IS NULL",
        )
        .bind(first.millis())
        .bind(&failed)
        .execute(&mut *conn)
        .await?;
    }
    let failing_before = health.now.minus(health.disable_after).millis();
    for (reason, ids, extra) in [
        ("gone", &gone, ""),
        ("failing", &failed, " AND failing_since <= $4"),
    ] {
        if ids.is_empty() {
            continue;
        }
        let sql = format!(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = $1, updated_at = $2
             WHERE id = ANY($3) AND status = 'active'{extra} RETURNING id, account_id, url"
        );
        let mut q = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql))
            .bind(reason)
            .bind(health.now.millis())
            .bind(ids);
        if !extra.is_empty() {
            q = q.bind(failing_before);
        }
        for (id, account, url) in q.fetch_all(&mut *conn).await? {
            tracing::warn!(webhook_id = %id, reason, "webhook disabled");
            let who = WebhookRef {
                id,
                account: AccountId::from_trusted(account),
                url,
            };
            insert_event(
                &mut *conn,
                &NewEvent::webhook_disabled(&who, reason, health.now),
                health.now,
            )
            .await?;
        }
    }
    Ok(())
}

async fn insert_webhook_on(
    conn: &mut sqlx::PgConnection,
    w: &Webhook,
    sealer: &Sealer,
) -> StoreResult<()> {
    let v = WebhookValues::of(w, sealer);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
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

async fn fetch_job(
    conn: &mut sqlx::PgConnection,
    account: Option<&AccountId>,
    id: &str,
    for_update: bool,
) -> StoreResult<Option<Job>> {
    let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = "));
    q.push_bind(id.to_owned());
    scope(&mut q, "account_id", account);
    if for_update {
        q.push(" FOR UPDATE");
    }
    let row: Option<JobColumns> = q.build_query_as().fetch_optional(conn).await?;
    row.map(JobColumns::into_job).transpose()
}

/// Inserts (false if the id is taken) or updates a job.
async fn write_job(conn: &mut sqlx::PgConnection, j: &Job, insert: bool) -> StoreResult<bool> {
    let sql = if insert {
        "INSERT INTO jobs (status, progress, input, result, error, webhook_url, created_at, updated_at,
         completed_at, id, account_id, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING"
    } else {
        "UPDATE jobs SET status = $1, progress = $2, input = $3, result = $4, error = $5, webhook_url = $6,
         created_at = $7, updated_at = $8, completed_at = $9 WHERE id = $10 AND account_id = $11 AND kind = $12"
    };
    let done = sqlx::query(sql)
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
    Ok(done.rows_affected() == 1)
}
