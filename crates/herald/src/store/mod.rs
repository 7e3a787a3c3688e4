//! Durable state behind a trait per caller ([`traits`]), so the SQLite and PostgreSQL backends
//! are interchangeable.
//!
//! The delivery queue lives here too: deliveries are enqueued in the transaction
//! that stores their event, claimed with a lease in a short transaction, and their outcome is
//! written in another; no transaction is ever held across an HTTP call.

mod group_commit;
pub mod postgres;
mod rows;
pub mod seal;
pub mod sqlite;
mod traits;

use crate::domain::job::JobConflict;
use crate::domain::{
    AccountId, ApiKeyId, Attempt, Delivery, DeliveryId, DeliveryStatus, Event, EventId, Job,
    Timestamp, Webhook, WebhookId, WebhookKind,
};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

pub use traits::{
    Accounts, ApiStore, Deliveries, Events, Intake, Jobs, Publisher, Queue, QueueGauges, Retention,
    Store, Webhooks,
};

/// The whole store, shared; each caller takes the part it uses (see [`traits`]).
pub type DynStore = Arc<dyn Store>;
pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// An error of the SQLite writer thread's own connection.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// A stored secret cannot be read with the configured `HERALD_SECRETS_KEY` (or without one).
    #[error(transparent)]
    Sealed(#[from] seal::SealError),
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Unsupported(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception), 57P01-57P03 (shutting down, starting).
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e)
        } else {
            Self::Database(e)
        }
    }
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
    /// The job whose status change this is; its own webhook gets the terminal event.
    pub job: Option<JobRef>,
    /// Deliver to this webhook only (a test event), not to the subscribers.
    pub only_webhook: Option<WebhookId>,
}

#[derive(Clone, Debug)]
pub struct JobRef {
    pub id: String,
    pub terminal: bool,
}

impl NewEvent {
    /// An event for the subscribers of its type, now.
    pub fn new(account: AccountId, event_type: String, data: Box<RawValue>) -> Self {
        Self {
            id: EventId::generate(),
            account,
            event_type,
            timestamp: Timestamp::now(),
            data,
            idempotency: None,
            job: None,
            only_webhook: None,
        }
    }

    /// The event a job's status publishes: `<kind>.<status>` with the job object as `data`.
    pub fn for_job(job: &Job) -> Self {
        let data = serde_json::value::to_raw_value(job).expect("a job serializes");
        let mut e = Self::new(job.account.clone(), job.event_type(), data);
        e.timestamp = job.updated_at;
        e.job = Some(JobRef {
            id: job.id.clone(),
            terminal: job.status.is_terminal(),
        });
        e
    }

    /// `webhook.disabled`, for the account's other webhooks that subscribe to it.
    pub fn webhook_disabled(webhook: &WebhookRef, reason: &str, now: Timestamp) -> Self {
        let data = serde_json::json!({
            "webhook_id": webhook.id, "url": webhook.url, "reason": reason, "disabled_at": now,
        });
        let data = serde_json::value::to_raw_value(&data).expect("json serializes");
        let mut e = Self::new(webhook.account.clone(), "webhook.disabled".to_owned(), data);
        e.timestamp = now;
        e
    }

    /// The event as stored.
    pub fn to_event(&self) -> Event {
        Event {
            id: self.id.clone(),
            account: self.account.clone(),
            event_type: self.event_type.clone(),
            timestamp: self.timestamp,
            data: self.data.clone(),
        }
    }

    /// Whether a webhook of the account gets this event.
    pub(crate) fn is_for(
        &self,
        id: &str,
        kind: WebhookKind,
        job_id: Option<&str>,
        filters: &[crate::domain::EventFilter],
    ) -> bool {
        if let Some(only) = &self.only_webhook {
            return only.as_str() == id;
        }
        match kind {
            WebhookKind::Job => self
                .job
                .as_ref()
                .is_some_and(|j| j.terminal && job_id == Some(j.id.as_str())),
            _ => crate::domain::event_type::any_matches(filters, &self.event_type),
        }
    }
}

/// Enough of a webhook to announce that it was disabled.
#[derive(Clone, Debug)]
pub struct WebhookRef {
    pub id: String,
    pub account: AccountId,
    pub url: String,
}

/// What a publish did: stored a new event, or found the one an earlier request with the same
/// Idempotency-Key stored.
#[derive(Clone, Debug)]
pub struct Published {
    pub event: Event,
    pub deliveries: u32,
    /// Of those, handed straight to this node's dispatcher (the rest wait for a claim).
    pub handed_over: u32,
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
    pub webhook_id: WebhookId,
    pub lease: String,
    pub attempt: Attempt,
    pub next: NextStep,
    /// The receiver answered 410 Gone: disable the webhook at once.
    pub gone: bool,
}

/// When failing endpoints are disabled.
#[derive(Clone, Copy, Debug)]
pub struct HealthPolicy {
    pub now: Timestamp,
    /// A webhook whose attempts have all failed for this long is disabled.
    pub disable_after: std::time::Duration,
}

/// What creating a job did.
#[derive(Clone, Debug)]
pub enum JobCreated {
    /// Created, with its `queued` event and that event's `deliveries`.
    Created { deliveries: u32 },
    /// A job with this id exists already.
    Exists,
}

/// What a job update did.
#[derive(Clone, Debug)]
pub enum JobUpdate {
    NotFound,
    Refused(JobConflict),
    /// Saved; `event` is the id of the status event published with it, if the status changed.
    Updated {
        job: Job,
        event: Option<EventId>,
        /// Deliveries made for `event`.
        deliveries: u32,
    },
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

/// One batch of pruning old events (retention): the events among the next `limit` in id order
/// (oldest first) that are old enough and finished go, with their deliveries and attempts.
#[derive(Clone, Debug)]
pub struct PruneEvents {
    /// Events made before this are old enough…
    pub created_before: Timestamp,
    /// …once every delivery of theirs has finished (succeeded, failed or cancelled) before this.
    pub finished_before: Timestamp,
    /// The scan continues after this event id; `None` starts at the oldest.
    pub after: Option<EventId>,
    /// Most events looked at, and so deleted, in this batch.
    pub limit: usize,
}

/// What one batch of [`PruneEvents`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunedEvents {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Where the next batch continues; `None` when the scan has passed every old event (or,
    /// on PostgreSQL, another node is pruning right now).
    pub next: Option<EventId>,
}

/// Chooses, from due candidates `(delivery, webhook)` in due order, those that fit the
/// per-webhook cap (counting what is already in flight), up to the limit. Both backends claim
/// with it.
pub(crate) fn pick_within_caps(candidates: &[(String, String)], req: &ClaimRequest) -> Vec<String> {
    pick_more(candidates, req, &[])
}

/// As [`pick_within_caps`], counting `already` (picked before) against the caps and the limit;
/// returns only the new picks.
pub(crate) fn pick_more(
    candidates: &[(String, String)],
    req: &ClaimRequest,
    already: &[(String, String)],
) -> Vec<String> {
    let mut used: HashMap<&str, usize> = HashMap::new();
    for (_, webhook) in already {
        *used.entry(webhook.as_str()).or_insert_with(|| {
            req.in_flight
                .get(&WebhookId::from_trusted(webhook.clone()))
                .copied()
                .unwrap_or(0)
        }) += 1;
    }
    let taken: std::collections::HashSet<&str> = already.iter().map(|(d, _)| d.as_str()).collect();
    let mut picked = Vec::new();
    for (delivery, webhook) in candidates {
        if already.len() + picked.len() == req.limit {
            break;
        }
        if taken.contains(delivery.as_str()) {
            continue;
        }
        let n = used.entry(webhook.as_str()).or_insert_with(|| {
            req.in_flight
                .get(&WebhookId::from_trusted(webhook.clone()))
                .copied()
                .unwrap_or(0)
        });
        if *n < req.per_webhook_cap {
            *n += 1;
            picked.push(delivery.clone());
        }
    }
    picked
}

/// Webhooks at their cap, to leave out of a claim's candidates.
pub(crate) fn saturated_webhooks(req: &ClaimRequest) -> Vec<String> {
    req.in_flight
        .iter()
        .filter(|(_, n)| **n >= req.per_webhook_cap)
        .map(|(w, _)| w.to_string())
        .collect()
}

/// Opens the store a database URL names, runs its migrations, and brings the stored secrets in
/// line with `sealer` ([`seal::Sealer::reseal`]): sealed with its key, or refused without it.
/// `pool_size` bounds the PostgreSQL connections of this process (SQLite uses one writer).
pub async fn open(
    database_url: &str,
    pool_size: u32,
    sealer: seal::Sealer,
) -> StoreResult<DynStore> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(database_url, sealer).await?,
        ))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PgStore::open(database_url, pool_size, sealer).await?,
        ))
    } else {
        Err(StoreError::Unsupported(format!(
            "unsupported database URL scheme in {:?}; expected sqlite: or postgres:",
            database_url.split(':').next().unwrap_or_default()
        )))
    }
}

/// The deliveries one publish transaction hands to the dispatcher, all under one lease. Dropped
/// without [`Handoff::finish`] (the transaction failed), it gives the reservations back.
pub(crate) struct Handoff {
    intake: Arc<dyn Intake>,
    pub lease: String,
    pub claimed_at: Timestamp,
    pub lease_until: Timestamp,
    reserved: Vec<WebhookId>,
    claims: Vec<ClaimedDelivery>,
}

impl Handoff {
    pub fn new(intake: Arc<dyn Intake>, now: Timestamp, lease: std::time::Duration) -> Self {
        Self {
            intake,
            lease: uuid::Uuid::new_v4().simple().to_string(),
            claimed_at: now,
            lease_until: now.plus(lease),
            reserved: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// Whether the delivery about to be written to `webhook` goes to the dispatcher.
    pub fn reserve(&mut self, webhook: &WebhookId) -> bool {
        let ok = self.intake.reserve(webhook);
        if ok {
            self.reserved.push(webhook.clone());
        }
        ok
    }

    /// The reserved delivery, written with this hand-off's lease.
    pub fn add(&mut self, delivery_id: DeliveryId, event: Event, webhook: Webhook) {
        self.claims.push(ClaimedDelivery {
            delivery_id,
            lease: self.lease.clone(),
            attempt_number: 1,
            event,
            webhook,
        });
    }

    /// After the commit: hands the deliveries over.
    pub fn finish(mut self) {
        self.reserved.clear();
        let claims = std::mem::take(&mut self.claims);
        if !claims.is_empty() {
            self.intake
                .hand_over(claims, self.claimed_at, self.lease_until);
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if !self.reserved.is_empty() {
            self.intake.cancel(&self.reserved);
        }
    }
}

/// How a batch of attempt results changes its webhooks' failure records (`failing_since`).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FailureRecordChanges {
    /// Webhooks with a success in the batch: their record is cleared.
    pub cleared: Vec<String>,
    /// Webhooks whose last attempts in the batch failed, with the first of those failures'
    /// start: the record starts then, unless one is already running.
    pub started: Vec<(String, i64)>,
}

/// Folds attempt results, in order, into one change per webhook: the same end state as
/// applying them one by one (a success clears the record, a failure starts one if none runs).
pub(crate) fn failure_record_changes(records: &[AttemptRecord]) -> FailureRecordChanges {
    let mut by_webhook: HashMap<&str, (bool, Option<i64>)> = HashMap::new();
    let mut order = Vec::new();
    for r in records {
        let entry = by_webhook.entry(r.webhook_id.as_str()).or_insert_with(|| {
            order.push(r.webhook_id.as_str());
            (false, None)
        });
        if r.next == NextStep::Succeeded {
            *entry = (true, None);
        } else if entry.1.is_none() {
            entry.1 = Some(r.attempt.started_at.millis());
        }
    }
    let mut changes = FailureRecordChanges::default();
    for id in order {
        let (succeeded, failing_since) = by_webhook[id];
        if succeeded {
            changes.cleared.push(id.to_owned());
        }
        if let Some(since) = failing_since {
            changes.started.push((id.to_owned(), since));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AttemptId;

    fn record(webhook: &str, started: i64, next: NextStep) -> AttemptRecord {
        AttemptRecord {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::from_trusted(webhook.to_owned()),
            lease: "l".to_owned(),
            attempt: Attempt {
                id: AttemptId::generate(),
                number: 1,
                started_at: Timestamp::from_millis(started),
                duration_ms: 1,
                status_code: None,
                error_kind: None,
                error: None,
                response_body: None,
                node: None,
            },
            next,
            gone: false,
        }
    }

    #[test]
    fn failure_records_fold_as_if_applied_one_by_one() {
        let fail = NextStep::Failed;
        let ok = NextStep::Succeeded;
        let records = [
            record("a", 1, fail),
            record("b", 2, ok),
            record("a", 3, ok),
            record("a", 4, fail),
            record("a", 5, NextStep::RetryAt(Timestamp::from_millis(9))),
            record("c", 6, fail),
            record("c", 7, fail),
            record("b", 8, ok),
        ];
        let changes = failure_record_changes(&records);
        assert_eq!(changes.cleared, ["a", "b"]);
        // a: its success at 3 clears, then the failure at 4 starts a new record; c: from 6.
        assert_eq!(changes.started, [("a".to_owned(), 4), ("c".to_owned(), 6)]);
    }
}
