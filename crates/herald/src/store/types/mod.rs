//! What the store's callers hand it and get back: requests, queries and answers. The queue's
//! (claims, attempts, leases) are in [`queue`], retention's and replay's in [`retention`], the
//! portal's in [`portal`].

mod portal;
mod queue;
mod retention;

pub(crate) use portal::PORTAL_LINK_QUERY;
pub use portal::*;
pub use queue::*;
pub use retention::*;

use crate::domain::job::JobConflict;
use crate::domain::{
    AccountId, ApiKeyId, Delivery, DeliveryStatus, Event, EventId, Job, Timestamp, WebhookId,
};
use serde_json::value::RawValue;

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

/// An API key to store: only its hash is kept, beside a label and the key's first characters.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The key's first characters, to tell keys apart in a list.
    pub prefix: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key as a list shows it: never the key or its hash.
#[derive(Clone, Debug)]
pub struct ApiKeyInfo {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub name: String,
    /// Empty for keys made before prefixes were kept.
    pub prefix: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// The live key a presented key's hash belongs to.
#[derive(Clone, Debug)]
pub struct FoundKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    /// The stored hash, for a constant-time comparison with the presented key's.
    pub hash: String,
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
    pub job: Option<crate::domain::JobRef>,
    /// Deliver to this webhook only (a test event), not to the subscribers.
    pub only_webhook: Option<WebhookId>,
    /// The key its deliveries to webhooks ordered by `key` go in order under (a job's status
    /// events: the job's id).
    pub ordering_key: Option<crate::domain::OrderingKey>,
}

/// What a publish did: stored a new event, or found the one an earlier request with the same
/// Idempotency-Key stored.
#[derive(Clone, Debug)]
pub struct Published {
    pub event: Event,
    pub deliveries: u32,
    /// Of those, handed straight to this node's dispatcher (the rest wait for a claim).
    pub handed_over: u32,
    /// Of those, to webhooks held by their gates (paused, circuit open): their claims come
    /// when the gate opens, whatever is published meanwhile.
    pub held: u32,
    pub replayed: bool,
}

impl Published {
    /// A new event's, with what its fan-out made.
    pub(crate) fn new(event: Event, fanout: Fanout) -> Self {
        Self {
            event,
            deliveries: fanout.deliveries,
            handed_over: fanout.handed_over,
            held: fanout.held,
            replayed: false,
        }
    }

    /// An earlier event's, found by its idempotency key.
    pub(crate) fn replay(event: Event, deliveries: u32) -> Self {
        Self {
            event,
            deliveries,
            handed_over: 0,
            held: 0,
            replayed: true,
        }
    }

    /// Deliveries a claim may take at once: what the dispatcher is woken for.
    pub fn waiting_for_a_claim(&self) -> u32 {
        if self.replayed {
            return 0;
        }
        Fanout {
            deliveries: self.deliveries,
            handed_over: self.handed_over,
            held: self.held,
        }
        .waiting_for_a_claim()
    }
}

/// What one event's fan-out made: deliveries, of which handed over, and of which to held
/// webhooks (see [`Published`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fanout {
    pub deliveries: u32,
    pub handed_over: u32,
    pub held: u32,
}

impl Fanout {
    /// Counts one delivery: handed over, or left to the claims, to a held webhook or not.
    pub fn add(&mut self, handed_over: bool, held: bool) {
        self.deliveries += 1;
        if handed_over {
            self.handed_over += 1;
        } else if held {
            self.held += 1;
        }
    }

    pub fn waiting_for_a_claim(&self) -> u32 {
        self.deliveries - self.handed_over - self.held
    }
}

#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub account: Option<AccountId>,
    pub event_type: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only the status events of this job.
    pub job: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub account: Option<AccountId>,
    pub webhook: Option<WebhookId>,
    pub event: Option<EventId>,
    pub status: Option<DeliveryStatus>,
    /// Only deliveries of events of this type.
    pub event_type: Option<String>,
    /// Only deliveries made at or after this…
    pub since: Option<Timestamp>,
    /// …and before this.
    pub until: Option<Timestamp>,
}

/// Where a page of [`super::Jobs::list_jobs`] starts: after this job, by creation time then id
/// (newest first). Its text, `<millis>.<id>`, is the page's cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: Timestamp,
    pub id: String,
}

impl JobCursor {
    pub fn of(job: &Job) -> Self {
        Self {
            created_at: job.created_at,
            id: job.id.clone(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (millis, id) = text.split_once('.')?;
        let created_at = Timestamp::from_millis(millis.parse().ok()?);
        crate::domain::job::valid_job_id(id).then(|| Self {
            created_at,
            id: id.to_owned(),
        })
    }

    pub fn text(&self) -> String {
        format!("{}.{}", self.created_at.millis(), self.id)
    }
}

/// The answer to a manual retry.
#[derive(Clone, Debug)]
pub enum RetryRequest {
    NotFound,
    /// The delivery cannot be retried (its webhook was deleted).
    Refused(String),
    Scheduled(Delivery),
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
