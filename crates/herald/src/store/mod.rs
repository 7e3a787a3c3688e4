//! Durable state behind a trait per caller ([`traits`]), so the SQLite and PostgreSQL backends
//! are interchangeable.
//!
//! The delivery queue lives here too: deliveries are enqueued in the transaction that stores
//! their event, claimed with a lease in a short transaction, and their outcome is written in
//! another; no transaction is ever held across an HTTP call.
//!
//! The backends have the same files, one per concern (`accounts`, `webhooks`, `listeners`,
//! `jobs`, `publish`, `events`, `deliveries`, `queue`, `claim`, `record`, `retention`, `gauges`,
//! `tasks`), so a diff of the two shows their dialects; what they share is here: the column
//! lists and row mapping ([`rows`]), the per-webhook caps ([`caps`]), the hand-over to the dispatcher
//! ([`handoff`]), failure records ([`health`]), operator events ([`operator`]), the group-commit
//! channel ([`group_commit`]), background tasks' columns and delivery filters ([`tasks`]), and
//! the claims' rule for ordered deliveries ([`ordering`]).

mod caps;
pub mod erasure;
mod error;
pub(crate) mod flow;
mod group_commit;
mod handoff;
mod health;
mod open;
pub mod operator;
mod ordering;
pub mod postgres;
mod rows;
pub mod seal;
pub mod sqlite;
pub mod stats;
mod tasks;
mod traits;
mod types;
pub(crate) use types::{Fanout, PORTAL_LINK_QUERY};

use crate::domain::{AccountId, Event, EventId, Job, JobRef, OrderingKey, Timestamp};
use serde_json::value::RawValue;
use std::sync::Arc;

pub(crate) use caps::{Picker, next_due_sql, saturated_webhooks};
pub use erasure::{ErasedRows, ErasureMark, ErasureStep};
pub use error::{StoreError, StoreResult};
pub(crate) use flow::{FlowRow, Gates, Locking};
pub(crate) use handoff::{Handoff, IntakeSlot};
pub(crate) use health::failure_record_changes;
pub use open::open;
pub(crate) use open::{APPLIED_MIGRATION, migrations_done};
pub use tasks::{BatchOutcome, NewTask, RequeueBatch, TaskLease};
pub use traits::{
    Accounts, ApiStore, Deliveries, Events, Intake, Jobs, Listeners, OperatorWebhook,
    PortalSessions, Publisher, Queue, QueueGauges, Readiness, Retention, Store, TaskQueue, Tasks,
    Webhooks,
};
pub use types::{
    ApiKeyInfo, AttemptRecord, Claim, ClaimRequest, ClaimedDelivery, DeliveryQuery, EventQuery,
    FoundKey, HealthPolicy, Idempotency, JobCreated, JobCursor, JobUpdate, LinkRedeemed, NewApiKey,
    NewEvent, NewPortalLink, NewPortalSession, NextDue, NextStep, Page, PageEvent, PageRequest,
    PortalSession, PortalTokens, PruneEvents, PrunedEvents, Published, QueueDepth, Release,
    ReplayMissing, ReplayPage, RetryRequest, WebhookFlow,
};

/// The whole store, shared; each caller takes the part it uses (see [`traits`]).
pub type DynStore = Arc<dyn Store>;

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
            ordering_key: None,
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
        e.ordering_key = Some(OrderingKey::from_trusted(job.id.clone()));
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

    /// What decides which webhooks get this event ([`crate::domain::Route::reaches`]).
    pub fn route(&self) -> crate::domain::Route<'_> {
        crate::domain::Route {
            event_type: &self.event_type,
            job: self.job.as_ref(),
            only_webhook: self.only_webhook.as_ref(),
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
