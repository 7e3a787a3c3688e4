//! Durable state behind one trait, so the SQLite and PostgreSQL backends are interchangeable.
//!
//! The delivery queue lives here too (DESIGN.md §4): deliveries are enqueued in the transaction
//! that stores their event, claimed with a lease in a short transaction, and their outcome is
//! written in another; no transaction is ever held across an HTTP call.

mod rows;
pub mod sqlite;

use crate::domain::{
    Account, AccountId, ApiKeyId, Attempt, Delivery, DeliveryId, DeliveryStatus, Event, EventId,
    Timestamp, Webhook, WebhookId,
};
use async_trait::async_trait;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

pub type DynStore = Arc<dyn Store>;
pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Unsupported(String),
}

/// Where a page starts and how long it is. Lists run newest first; the cursor is the last id seen.
#[derive(Clone, Debug)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An API key to store: only its hash is kept.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    /// Hex SHA-256 of the key.
    pub hash: String,
    pub created_at: Timestamp,
}

/// A publish request's idempotency: the key, a fingerprint of the request, and how far back
/// an earlier use still counts.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
    pub valid_since: Timestamp,
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: EventId,
    pub account: AccountId,
    pub event_type: String,
    pub timestamp: Timestamp,
    pub data: Box<RawValue>,
    pub idempotency: Option<Idempotency>,
}

/// What a publish did: stored a new event, or found the one an earlier request with the same
/// Idempotency-Key stored.
#[derive(Clone, Debug)]
pub struct Published {
    pub event: Event,
    pub deliveries: u32,
    pub replayed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub account: Option<AccountId>,
    pub event_type: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub account: Option<AccountId>,
    pub webhook: Option<WebhookId>,
    pub event: Option<EventId>,
    pub status: Option<DeliveryStatus>,
}

/// The answer to a manual retry.
#[derive(Clone, Debug)]
pub enum RetryRequest {
    NotFound,
    /// The delivery cannot be retried (its webhook was deleted).
    Refused(String),
    Scheduled(Delivery),
}

/// What a dispatcher asks for when it has free workers.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub limit: usize,
    /// At most this many attempts in flight per webhook on this node…
    pub per_webhook_cap: usize,
    /// …counting these, already in flight.
    pub in_flight: HashMap<WebhookId, usize>,
}

/// A delivery this node now holds the lease on, with everything needed to attempt it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub delivery_id: DeliveryId,
    pub lease: String,
    /// The number this attempt will have (1 for the first).
    pub attempt_number: u32,
    pub event: Event,
    pub webhook: Webhook,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Timestamp),
    Failed,
}

/// One finished attempt to write.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub lease: String,
    pub attempt: Attempt,
    pub next: NextStep,
}

/// A lease given back without an attempt (shutdown).
#[derive(Clone, Debug)]
pub struct Release {
    pub delivery_id: DeliveryId,
    pub lease: String,
}

/// How many pending deliveries wait, for the queue gauges of `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Due now and not leased by any node.
    pub due: u64,
    /// Waiting for a later retry time.
    pub scheduled: u64,
    /// When the oldest of the due ones fell due.
    pub oldest_due: Option<Timestamp>,
}

/// Herald's durable state. `account: None` on a read means the admin's unscoped view;
/// `Some(id)` restricts it to that account, so another account's ids are simply not found.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Accounts and keys.
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()>;
    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>>;
    /// The account owning the key with this hash, with the stored hash for a constant-time check.
    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<(AccountId, String)>>;

    // Webhooks.
    async fn insert_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    async fn get_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
    ) -> StoreResult<Option<Webhook>>;
    async fn list_webhooks(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<Webhook>>;
    /// Saves every mutable field; false when it no longer exists.
    async fn update_webhook(&self, webhook: &Webhook) -> StoreResult<bool>;
    /// Deletes it and cancels its pending deliveries; false when not found.
    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool>;

    // Events.
    /// Stores the event and one pending delivery per matching active webhook, atomically.
    async fn publish_event(&self, event: NewEvent) -> StoreResult<Published>;
    async fn get_event(
        &self,
        account: Option<&AccountId>,
        id: &EventId,
    ) -> StoreResult<Option<Event>>;
    async fn list_events(&self, query: &EventQuery, page: &PageRequest)
    -> StoreResult<Page<Event>>;

    // Deliveries.
    async fn get_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
    ) -> StoreResult<Option<Delivery>>;
    async fn list_deliveries(
        &self,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    async fn list_attempts(&self, delivery: &DeliveryId) -> StoreResult<Vec<Attempt>>;
    /// Makes the delivery due now, whatever its state, unless its webhook is gone.
    async fn retry_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
        now: Timestamp,
    ) -> StoreResult<RetryRequest>;

    // The queue.
    /// Leases up to `limit` due deliveries, oldest due first, within the per-webhook cap.
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Writes finished attempts; an attempt whose lease was lost is kept but changes nothing.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()>;
    /// Gives leases back so the deliveries are due again at once.
    async fn release(&self, releases: &[Release]) -> StoreResult<()>;
    /// The earliest moment some pending delivery can be claimed, if any is pending.
    async fn next_due_at(&self, scan_limit: usize) -> StoreResult<Option<Timestamp>>;
    /// Counts the pending deliveries that are due (and not leased) and those scheduled later.
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth>;
}

/// Opens the store a database URL names and runs its migrations.
pub async fn open(database_url: &str) -> StoreResult<DynStore> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(database_url).await?))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Err(StoreError::Unsupported(
            "the PostgreSQL backend is not built yet; use a sqlite: URL".to_owned(),
        ))
    } else {
        Err(StoreError::Unsupported(format!(
            "unsupported database URL scheme in {:?}; expected sqlite:",
            database_url.split(':').next().unwrap_or_default()
        )))
    }
}
