//! The queue's requests and answers: claims, what a claim took, attempts' results, leases.

use crate::domain::{Attempt, DeliveryId, Event, Timestamp, Webhook, WebhookId};
use std::collections::HashMap;

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

/// What the look after a claim that found fewer than it asked saw ([`crate::store::Queue::next_due`]):
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
    pub operator: Option<crate::store::operator::OperatorPolicy>,
    /// After this many failed attempts in a row a webhook's circuit opens (0: never), its
    /// first probe `probe_interval` later ([`crate::store::flow`]).
    pub circuit_after: u32,
    pub probe_interval: std::time::Duration,
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
