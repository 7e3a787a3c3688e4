//! The per-webhook cap of a claim: no webhook gets more than `per_webhook_cap` deliveries in
//! flight on one node, so one slow endpoint cannot take every worker. Both backends claim with
//! these rules.

use super::ClaimRequest;
use crate::domain::WebhookId;
use std::collections::{HashMap, HashSet};

impl ClaimRequest {
    /// What `webhook` already has in flight on this node.
    pub(crate) fn in_flight_of(&self, webhook: &str) -> usize {
        self.in_flight
            .get(&WebhookId::from_trusted(webhook.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Chooses due candidates `(delivery, webhook)`, offered in due order, that fit the
/// per-webhook cap (counting what is already in flight, and what it picked), up to the
/// claim's limit. Offered a read at a time, so a claim reads more only while it is not full.
pub(crate) struct Picker<'r> {
    req: &'r ClaimRequest,
    used: HashMap<String, usize>,
    taken: HashSet<String>,
    picked: Vec<(String, String)>,
}

impl<'r> Picker<'r> {
    pub(crate) fn new(req: &'r ClaimRequest) -> Self {
        Self {
            req,
            used: HashMap::new(),
            taken: HashSet::new(),
            picked: Vec::new(),
        }
    }

    /// The claim it picks for.
    pub(crate) fn request(&self) -> &'r ClaimRequest {
        self.req
    }

    /// Whether the claim has all it asked for.
    pub(crate) fn is_full(&self) -> bool {
        self.picked.len() >= self.req.limit
    }

    /// Picks `delivery` if the claim has room, its webhook is below the cap, and it was not
    /// picked before.
    pub(crate) fn offer(&mut self, delivery: &str, webhook: &str) {
        if self.is_full() || self.taken.contains(delivery) {
            return;
        }
        let n = self
            .used
            .entry(webhook.to_owned())
            .or_insert_with(|| self.req.in_flight_of(webhook));
        if *n < self.req.per_webhook_cap {
            *n += 1;
            self.taken.insert(delivery.to_owned());
            self.picked.push((delivery.to_owned(), webhook.to_owned()));
        }
    }

    /// How many more `webhook` may take, the claim's limit counted.
    pub(crate) fn room_of(&self, webhook: &str) -> usize {
        let used = self
            .used
            .get(webhook)
            .copied()
            .unwrap_or_else(|| self.req.in_flight_of(webhook));
        self.req
            .per_webhook_cap
            .saturating_sub(used)
            .min(self.req.limit.saturating_sub(self.picked.len()))
    }

    /// What it picked, in the order offered.
    pub(crate) fn picked(self) -> Vec<(String, String)> {
        self.picked
    }
}

/// Webhooks at their cap, to leave out of a claim's candidates.
pub(crate) fn saturated_webhooks(req: &ClaimRequest) -> Vec<String> {
    req.in_flight
        .iter()
        .filter(|(_, n)| **n >= req.per_webhook_cap)
        .map(|(w, _)| w.to_string())
        .collect()
}

/// The look after a claim that found fewer deliveries than it asked, at `now` (a placeholder):
/// a row for each webhook in `full_lanes` (a table expression with an `id` column: the webhooks
/// whose lanes the per-webhook cap filled, so the claim may have left due work of theirs behind,
/// less those whose rate limit the claim left closed) with its first delivery no lease holds, if
/// it is unordered, not paused and its circuit closed; and a row without a webhook, with the
/// first pending delivery to fall due after `now`. [`super::NextDue::of_rows`] reads them.
///
/// Nothing else due now is reported: the claim took it, or it waits for something that wakes
/// the scheduler itself. A closed gate (rate limit spent, pause, circuit) is timed by the
/// claim's `gate_opens_at`; an ordered delivery waits for its key's head, whose end wakes the
/// scheduler (a head's retry is a future due time, seen here). Were they reported, every
/// attempt that ends would start a claim that finds them still held (docs/BENCHMARKS.md, "Flow
/// control and fresh-first"). Each part reads one index range: a webhook's pending deliveries,
/// past at most those its lanes hold leased on each node; the due index, from `now` on.
pub(crate) fn next_due_sql(full_lanes: &str, now: &str) -> String {
    format!(
        "SELECT w.id AS webhook,
                (SELECT d.next_attempt_at FROM deliveries d
                 WHERE d.webhook_id = w.id AND d.status = 'pending'
                   AND (d.locked_until IS NULL OR d.locked_until <= {now})
                 ORDER BY d.next_attempt_at LIMIT 1) AS at
         FROM {full_lanes} JOIN webhooks w ON w.id = h.id
         WHERE w.status = 'active' AND w.ordering = 'none'
           AND w.probe_at IS NULL AND (w.paused_until IS NULL OR w.paused_until <= {now})
         UNION ALL
         SELECT NULL, (SELECT d.next_attempt_at FROM deliveries d
                       WHERE d.status = 'pending' AND d.next_attempt_at > {now}
                       ORDER BY d.next_attempt_at LIMIT 1)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn request(limit: usize, cap: usize, in_flight: &[(&str, usize)]) -> ClaimRequest {
        ClaimRequest {
            now: Timestamp::from_millis(0),
            lease_until: Timestamp::from_millis(1),
            limit,
            per_webhook_cap: cap,
            in_flight: in_flight
                .iter()
                .map(|(w, n)| (WebhookId::from_trusted((*w).to_owned()), *n))
                .collect(),
            node: "test".to_owned(),
            probe_interval: std::time::Duration::from_secs(1),
        }
    }

    fn pick(picker: &mut Picker, rows: &[(&str, &str)]) -> Vec<String> {
        for (d, w) in rows {
            picker.offer(d, w);
        }
        std::mem::replace(picker, Picker::new(picker.req))
            .picked()
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    #[test]
    fn picks_in_due_order_within_each_webhooks_room_up_to_the_limit() {
        let candidates = [
            ("d1", "a"),
            ("d2", "a"),
            ("d3", "b"),
            ("d4", "a"),
            ("d5", "c"),
        ];
        // a has one in flight, so room for one more; the limit stops before c.
        let req = request(2, 2, &[("a", 1)]);
        let mut picker = Picker::new(&req);
        assert_eq!(picker.room_of("a"), 1);
        assert_eq!(pick(&mut picker, &candidates), ["d1", "d3"]);
        let req = request(10, 2, &[("a", 1)]);
        assert_eq!(
            pick(&mut Picker::new(&req), &candidates),
            ["d1", "d3", "d5"]
        );
    }

    #[test]
    fn earlier_picks_count_against_the_caps_and_the_limit_and_are_not_picked_again() {
        let candidates = [("d1", "a"), ("d2", "a"), ("d3", "b"), ("d4", "b")];
        let req = request(3, 1, &[]);
        let mut picker = Picker::new(&req);
        picker.offer("d1", "a");
        assert_eq!(picker.room_of("a"), 0);
        assert_eq!(picker.room_of("b"), 1);
        assert_eq!(pick(&mut picker, &candidates[1..]), ["d1", "d3"]);
        let req = request(2, 5, &[]);
        let mut picker = Picker::new(&req);
        picker.offer("d1", "a");
        assert!(!picker.is_full());
        assert_eq!(pick(&mut picker, &candidates), ["d1", "d2"]);
        let req = request(2, 5, &[]);
        let mut picker = Picker::new(&req);
        picker.offer("d1", "a");
        picker.offer("d9", "z");
        assert!(picker.is_full());
        assert_eq!(picker.room_of("b"), 0, "the limit counts");
        assert_eq!(pick(&mut picker, &candidates), ["d1", "d9"]);
    }

    #[test]
    fn saturated_webhooks_are_those_at_or_over_the_cap() {
        let mut full = saturated_webhooks(&request(10, 2, &[("a", 2), ("b", 1), ("c", 3)]));
        full.sort();
        assert_eq!(full, ["a", "c"]);
    }
}
