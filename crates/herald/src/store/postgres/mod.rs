//! The PostgreSQL backend: any number of `herald serve` processes share one database.
//!
//! Due deliveries are claimed with `FOR UPDATE SKIP LOCKED` and a lease (`locked_until`), so
//! nodes never take the same work and a dead node's leases simply run out. New deliveries that
//! this node's dispatcher has room for are written leased to it and handed over after the commit
//! (see `publish`); commits that leave work for the claims `NOTIFY herald_work`, which wakes idle
//! nodes at once. Migrations take sqlx's advisory lock, so nodes starting together migrate once.

/// The schema's migrations, carried in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod accounts;
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

use super::group_commit::PublishRequest;
use super::rows::{WEBHOOK_SECRETS_QUERY, WebhookSecretColumns};
use super::seal::{Column, Sealer};
use super::{IntakeSlot, PageRequest, StoreResult};
use crate::domain::AccountId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

/// The channel of `NOTIFY`, on which nodes are woken for new due work.
const CHANNEL: &str = "herald_work";
/// Who writes publishes, as errors name it.
const PUBLISHER: &str = "PostgreSQL publisher";

/// The PostgreSQL store of one node.
pub struct PgStore {
    pool: PgPool,
    /// Seals the secret columns on write, opens them on read.
    sealer: Sealer,
    /// Publishes go to the group-commit tasks.
    publisher: mpsc::Sender<PublishRequest>,
    /// Where those tasks hand new deliveries to this node's dispatcher, once it is set.
    intake: IntakeSlot,
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
        MIGRATOR.run(&pool).await?;
        reseal_stored_secrets(&pool, &sealer).await?;
        let intake = IntakeSlot::default();
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
