//! Retention's pruning and `replay-missing`'s pages.

use crate::domain::{EventId, Timestamp, Webhook};

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
