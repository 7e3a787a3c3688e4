//! What the store's callers hand it and get back: requests, queries and answers.

use crate::domain::job::JobConflict;
use crate::domain::{
    AccountId, ApiKeyId, Attempt, Delivery, DeliveryId, DeliveryStatus, Event, EventId, Job,
    Timestamp, Webhook, WebhookId,
};
use serde_json::value::RawValue;
use std::collections::HashMap;

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
    /// The claiming node: of the listener webhooks, only those whose stream it holds are
    /// claimed (their deliveries can only go down that stream).
    pub node: String,
    /// A webhook whose circuit is open gets its next probe this long after a claim takes one.
    pub probe_interval: std::time::Duration,
}

/// What a claim took, and when a webhook it had to leave out or cut short (paused, at its rate
/// limit, its circuit open) may take deliveries again.
#[derive(Debug, Default)]
pub struct Claim {
    pub deliveries: Vec<ClaimedDelivery>,
    pub gate_opens_at: Option<Timestamp>,
    /// The rate-limited, paused or probing webhooks the claim leaves closed until
    /// `gate_opens_at` or later. Any other webhook whose lane the claim filled may have due
    /// work left that a freed slot lets through.
    pub closed: Vec<WebhookId>,
}

/// What the look after a claim that found fewer than it asked saw ([`super::Queue::next_due`]):
/// the webhooks of the full lanes it was given that have due work left behind now (a slot freed
/// in one of their lanes is worth a claim), and when to look again anyway: the earliest of their
/// first deliveries no lease holds and the next to fall due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextDue {
    pub at: Option<Timestamp>,
    pub behind: Vec<WebhookId>,
}

impl NextDue {
    /// From the look's rows, as of `now`: a full lane's webhook with its first delivery no lease
    /// holds, or (no webhook) the next delivery to fall due; either time may be missing.
    pub(crate) fn of_rows(rows: Vec<(Option<String>, Option<i64>)>, now: Timestamp) -> Self {
        let mut next = Self::default();
        for (webhook, at) in rows {
            let Some(at) = at.map(Timestamp::from_millis) else {
                continue;
            };
            next.at = Some(next.at.map_or(at, |first| first.min(at)));
            if let Some(id) = webhook
                && at <= now
            {
                next.behind.push(WebhookId::from_trusted(id));
            }
        }
        next
    }
}

/// A webhook's flow control as shown (API, `/metrics`): its state, pending deliveries, and when
/// the next attempt may go (none without pending work).
#[derive(Clone, Debug)]
pub struct WebhookFlow {
    pub webhook_id: WebhookId,
    pub state: crate::domain::flow::FlowState,
    pub pending: u64,
    pub next_attempt_at: Option<Timestamp>,
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
    /// The receiver asked (429/503 with `Retry-After`) that the whole webhook wait until then.
    pub pause_until: Option<Timestamp>,
    /// Its webhook orders deliveries: once this one ends (succeeded or failed), the next of its
    /// key can be claimed, so the recorder wakes the scheduler.
    pub ordered: bool,
}

/// When failing endpoints are disabled, and whether the operator hears of it.
#[derive(Clone, Copy, Debug)]
pub struct HealthPolicy {
    pub now: Timestamp,
    /// A webhook whose attempts have all failed for this long is disabled.
    pub disable_after: std::time::Duration,
    /// Set when `[operator]` is: the results' operator events are written with them.
    pub operator: Option<super::operator::OperatorPolicy>,
    /// After this many failed attempts in a row a webhook's circuit opens (0: never), its
    /// first probe `probe_interval` later ([`super::flow`]).
    pub circuit_after: u32,
    pub probe_interval: std::time::Duration,
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

/// One page of `replay-missing`: the account's events from `since` on (after `after`, by id)
/// that `webhook` would get and has no delivery of get one, unless `dry_run`.
#[derive(Clone, Debug)]
pub struct ReplayMissing {
    pub webhook: Webhook,
    pub since: Timestamp,
    /// The last event id of the previous page.
    pub after: Option<String>,
    /// Events examined per page.
    pub limit: usize,
    pub dry_run: bool,
    pub now: Timestamp,
}

/// An event of a `replay-missing` page: its id, type, whether the webhook has a delivery of it,
/// and its ordering key.
pub type PageEvent = (String, String, bool, Option<String>);

impl ReplayMissing {
    /// The ordering key of the delivery made for an event keyed `event_key`, by the webhook's
    /// ordering as at publish.
    pub fn delivery_key(&self, event_key: Option<&str>) -> Option<String> {
        let key = event_key.map(|k| crate::domain::OrderingKey::from_trusted(k.to_owned()));
        self.webhook
            .ordering
            .delivery_key(key.as_ref())
            .map(str::to_owned)
    }
}

/// What a page of `replay-missing` found.
#[derive(Clone, Debug, Default)]
pub struct ReplayPage {
    /// Deliveries made (or, in a dry run, that would be).
    pub missing: u64,
    /// Where the next page starts; `None` at the end.
    pub next: Option<String>,
}

impl ReplayMissing {
    /// Whether the webhook gets an event of this type now, so a missing delivery is made:
    /// by its filters (a job's own webhook and a test send's one target are not replayed).
    fn wants(&self, event_type: &str) -> bool {
        event_type != "webhook.test"
            && crate::domain::Route {
                event_type,
                job: None,
                only_webhook: None,
            }
            .reaches(
                self.webhook.id.as_str(),
                self.webhook.kind,
                self.webhook.job_id.as_deref(),
                &self.webhook.events,
            )
    }

    /// Of a page's events (id, type, whether it has a delivery to the webhook already, ordering
    /// key), those missing one, and where the next page starts (`None` after a short page).
    pub fn missing<'a>(&self, events: &'a [PageEvent]) -> (Vec<&'a PageEvent>, Option<String>) {
        let next = (events.len() == self.limit)
            .then(|| events.last().map(|e| e.0.clone()))
            .flatten();
        let missing = events
            .iter()
            .filter(|(_, kind, has, _)| !has && self.wants(kind))
            .collect();
        (missing, next)
    }

    /// The first event id the page may return.
    pub fn start_after(&self) -> String {
        let bound = crate::domain::EventId::bound_at(self.since);
        match &self.after {
            Some(after) if *after > bound => after.clone(),
            _ => bound,
        }
    }
}

/// A one-time portal link to store (`POST /v1/accounts/{id}/portal-sessions`): only the hash of
/// its token is kept, as for API keys.
#[derive(Clone, Debug)]
pub struct NewPortalLink {
    /// Hex SHA-256 of the link's token.
    pub hash: String,
    pub account: AccountId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The session an opened portal link starts (for the link's account): only its token's hash.
#[derive(Clone, Debug)]
pub struct NewPortalSession {
    /// Hex SHA-256 of the session's token (the cookie's value).
    pub hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What opening a portal link did: a link opens one session, once, before it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRedeemed {
    /// The session is stored, for this account.
    Opened(AccountId),
    /// The link was opened before (when).
    Used(Timestamp),
    /// The link expired (when) unused.
    Expired(Timestamp),
    /// No link has this token.
    Unknown,
}

impl LinkRedeemed {
    /// What a stored link (its account, expiry and use) allows at `now`; the one decision both
    /// backends make, under the link's row lock (PostgreSQL) or on the writer (SQLite).
    pub fn decide(
        account: AccountId,
        expires_at: Timestamp,
        used_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        match used_at {
            Some(used) => Self::Used(used),
            None if expires_at <= now => Self::Expired(expires_at),
            None => Self::Opened(account),
        }
    }
}

/// A live portal session, as a request's cookie finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalSession {
    pub account: AccountId,
    pub expires_at: Timestamp,
}

/// A portal link's account, expiry and use, by its hash (`$1`; SQLite takes `$n` parameters
/// too): what [`LinkRedeemed::decide`] judges, for both backends.
pub(crate) const PORTAL_LINK_QUERY: &str =
    "SELECT account_id, expires_at, used_at FROM portal_links WHERE token_hash = $1";

/// The portal's expiring tokens, which the janitor deletes once expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalTokens {
    /// One-time links, used or not.
    Links,
    Sessions,
}

impl PortalTokens {
    pub const ALL: [Self; 2] = [Self::Links, Self::Sessions];

    /// Its table, which is also its `herald_pruned_total` kind.
    pub fn table(self) -> &'static str {
        match self {
            Self::Links => "portal_links",
            Self::Sessions => "portal_sessions",
        }
    }

    /// Deletes up to `$2` rows that expired before `$1` (SQLite takes `$n` parameters too);
    /// `lock` ends the inner select (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    pub(crate) fn prune_sql(self, lock: &str) -> String {
        let table = self.table();
        format!(
            "DELETE FROM {table} WHERE token_hash IN \
             (SELECT token_hash FROM {table} WHERE expires_at < $1 LIMIT $2{lock})"
        )
    }
}
