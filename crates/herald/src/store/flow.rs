//! Flow control in the claims, the same for both backends (docs/architecture.md, "Flow
//! control"): which webhooks a claim may not take from now (paused by a receiver's
//! `Retry-After`, or a circuit open between probes), how many a rate-limited webhook may take
//! (its GCRA allowance), and what a claim writes back (the new theoretical arrival times, the
//! next probe) and reports (when the next gate opens, for the scheduler to come back then).
//!
//! The gates narrow the claim's request rather than add to its SQL: a closed webhook counts as
//! at its cap, a limited one as having only its allowance of room left, so the per-webhook cap
//! logic ([`super::caps`], `Pick::of` on PostgreSQL) leaves them out or cuts them down as it does
//! a webhook with deliveries in flight, and they never crowd other webhooks out of a claim.
//!
//! Why no reserved future slots: a claim takes only what the allowance gives now, and reports
//! when its whole burst is back; the scheduler claims again then (`Pacing`). At the rates a
//! webhook is limited to (tens to hundreds a second) that costs a claim per `burst` tokens on
//! each node, which keeps the rate without holding leases on deliveries that may not go yet
//! (which another node could then not take, and a shutdown would have to give back).

use super::WebhookFlow;
use super::{AttemptRecord, Claim, ClaimRequest, ClaimedDelivery, NextStep};
use crate::domain::flow::FlowState;
use crate::domain::{RateLimit, Timestamp, WebhookId};
use std::collections::HashMap;

/// How long a claim leaves alone a webhook whose row another node's claim holds locked, at
/// least (a rate-limited one's allowance is whole again `burst` intervals later, if that is
/// longer). That claim takes the allowance or the probe, and its node comes back for the next:
/// were every node to come back within a token, they would race for each one, most claims
/// finding the row locked (`tests/it/flow_nodes.rs` prints the count of claims; the figures are
/// in docs/BENCHMARKS.md). Should that node stop, the others take over within this wait.
const LOCKED_RETRY_MS: i64 = 200;

/// How long a node that took a rate-limited webhook's whole allowance holds it: two bursts of
/// the limit, within these bounds. The other nodes leave the webhook to it meanwhile, so one
/// node claims its tokens instead of every node racing for each one, and the others come back
/// once a hold (`tests/it/flow_nodes.rs`). The holder renews it with each whole allowance it
/// takes, and lets go when it takes less (nothing more was due, or its own lane for the webhook
/// is full: other nodes may then send too); should it stop, another node takes over when the
/// hold runs out, at most `HOLD_MAX_MS` later.
const HOLD_MS: i64 = 1_000;
const HOLD_MAX_MS: i64 = 5_000;

/// A webhook's flow-control columns, as a claim reads them.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub(crate) struct FlowRow {
    pub id: String,
    pub paused_until: Option<i64>,
    pub rate_limit: Option<String>,
    pub rate_tat: Option<i64>,
    pub probe_at: Option<i64>,
    /// The node holding a rate-limited webhook's allowance ([`HOLD_MS`]), and until when.
    /// PostgreSQL only: SQLite has one claimer, and its queries leave these out.
    #[sqlx(default)]
    pub rate_node: Option<String>,
    #[sqlx(default)]
    pub rate_node_until: Option<i64>,
}

impl FlowRow {
    /// Whether `node`'s claim takes its allowance under a lock (rate limit, or a circuit's probe
    /// due), so neither is taken twice; not while it is paused or another node holds it.
    pub fn needs_lock(&self, now: i64, node: &str) -> bool {
        !self.paused(now)
            && self.held_elsewhere(now, node).is_none()
            && (self.rate_limit.is_some() || self.probe_at.is_some_and(|p| p <= now))
    }

    /// Until when a node other than `node` holds its rate limit's allowance, if one does.
    fn held_elsewhere(&self, now: i64, node: &str) -> Option<i64> {
        let holder = self.rate_node.as_deref()?;
        let until = self.rate_node_until?;
        (self.rate_limit.is_some() && holder != node && until > now).then_some(until)
    }

    fn paused(&self, now: i64) -> bool {
        self.paused_until.is_some_and(|p| p > now)
    }
}

/// What a claim may take of one webhook.
#[derive(Clone, Debug, PartialEq)]
struct Gate {
    /// Most deliveries to take now (0: none).
    allowance: u32,
    /// When a closed gate opens.
    opens_at: Option<i64>,
    rate: Option<(RateLimit, Option<i64>)>,
    /// The circuit is open and its probe is due: the one delivery taken is the probe.
    probe: bool,
}

/// The gates of the webhooks a claim looks at (those without flow control are not here).
#[derive(Debug, Default)]
pub(crate) struct Gates {
    now: i64,
    by_webhook: HashMap<String, Gate>,
}

/// A claim on one of several nodes (PostgreSQL): the gated rows it locked
/// ([`FlowRow::needs_lock`]), with their current values, and the node it claims for.
pub(crate) struct Locking<'a> {
    pub locked: &'a [FlowRow],
    pub node: &'a str,
}

/// A rate-limited webhook's allowance a claim took.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Taken {
    pub webhook: String,
    /// Its new theoretical arrival time.
    pub tat: i64,
    /// Until when the claim's node holds the allowance ([`HOLD_MS`]; now: it lets go).
    pub held_until: i64,
}

/// What a claim writes back to one webhook's row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GateWrite {
    pub webhook: String,
    pub taken: Option<Taken>,
    /// It took the circuit's probe: the next is a probe interval away.
    pub probed: bool,
}

/// What a claim writes back and reports.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AfterClaim {
    /// Allowances of rate-limited webhooks that took deliveries.
    pub taken: Vec<Taken>,
    /// Webhooks whose probe this claim took: their next probe is a probe interval away.
    pub probed: Vec<String>,
    /// The earliest time a gated webhook can take deliveries again.
    pub opens_at: Option<i64>,
    /// The webhooks the claim leaves closed (paused, their probe or allowance spent), in the
    /// order of their ids: their due work waits for [`AfterClaim::opens_at`], not for a slot.
    pub closed: Vec<String>,
}

impl Gates {
    /// The gates at `now` of webhooks with these flow rows. With `locking` (several nodes): a
    /// rate limit another node holds is closed until its hold ends; a row another claim has
    /// locked is closed for a moment. `None`: one node, no locking.
    pub fn of(rows: &[FlowRow], locking: Option<Locking<'_>>, now: i64) -> Self {
        let mut by_webhook = HashMap::new();
        for row in rows {
            let held = locking
                .as_ref()
                .and_then(|l| row.held_elsewhere(now, l.node));
            if let Some(until) = held {
                by_webhook.insert(row.id.clone(), closed(until));
                continue;
            }
            let row = match &locking {
                Some(l) if row.needs_lock(now, l.node) => {
                    match l.locked.iter().find(|r| r.id == row.id) {
                        Some(locked) => locked,
                        None => {
                            let burst = row
                                .rate_limit
                                .as_deref()
                                .and_then(|r| RateLimit::from_json(r).ok())
                                .map_or(0, |r| r.burst_ms());
                            let wait = burst.max(LOCKED_RETRY_MS);
                            by_webhook.insert(row.id.clone(), closed(now + wait));
                            continue;
                        }
                    }
                }
                _ => row,
            };
            if let Some(gate) = gate(row, now) {
                by_webhook.insert(row.id.clone(), gate);
            }
        }
        Self { now, by_webhook }
    }

    /// The request with each gated webhook's room cut to its allowance (see the module doc).
    pub fn narrow(&self, req: &ClaimRequest) -> ClaimRequest {
        let mut req = req.clone();
        for (id, gate) in &self.by_webhook {
            let id = WebhookId::from_trusted(id.clone());
            let used = req.in_flight.get(&id).copied().unwrap_or(0);
            let room = req.per_webhook_cap.saturating_sub(used);
            let room = room.min(gate.allowance as usize);
            req.in_flight.insert(id, req.per_webhook_cap - room);
        }
        req
    }

    /// What a claim that took `taken` deliveries per webhook writes back and reports.
    pub fn after<'a>(&self, taken: impl IntoIterator<Item = &'a str>) -> AfterClaim {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for id in taken {
            *counts.entry(id).or_default() += 1;
        }
        let mut after = AfterClaim::default();
        for (id, gate) in &self.by_webhook {
            let n = counts.get(id.as_str()).copied().unwrap_or(0);
            let mut opens_at = gate.opens_at;
            if let Some((rate, tat)) = gate.rate
                && n > 0
            {
                let tat = rate.take(self.now, tat, n);
                let whole = n >= gate.allowance;
                let hold = if whole {
                    (2 * rate.burst_ms()).clamp(HOLD_MS, HOLD_MAX_MS)
                } else {
                    0
                };
                after.taken.push(Taken {
                    webhook: id.clone(),
                    tat,
                    held_until: self.now + hold,
                });
                // All it was allowed: more may be due. Come back when the whole burst is there
                // again (the theoretical arrival time), not for each token: a claim per burst.
                if whole {
                    opens_at = Some(tat);
                }
            }
            if gate.probe && n > 0 {
                after.probed.push(id.clone());
            }
            if let Some(at) = opens_at {
                after.opens_at = Some(after.opens_at.map_or(at, |o: i64| o.min(at)));
                after.closed.push(id.clone());
            }
        }
        after.taken.sort_by(|a, b| a.webhook.cmp(&b.webhook));
        after.probed.sort();
        after.closed.sort();
        after
    }
}

impl Claim {
    /// A claim's answer: the deliveries it took, and the gates it leaves closed.
    pub(crate) fn left(deliveries: Vec<ClaimedDelivery>, after: AfterClaim) -> Self {
        Self {
            deliveries,
            gate_opens_at: after.opens_at.map(Timestamp::from_millis),
            closed: after
                .closed
                .into_iter()
                .map(WebhookId::from_trusted)
                .collect(),
        }
    }
}

impl AfterClaim {
    /// One change per webhook, in the order of their ids.
    pub fn written(&self) -> Vec<GateWrite> {
        let mut ids: Vec<&String> = self.taken.iter().map(|t| &t.webhook).collect();
        ids.extend(&self.probed);
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| GateWrite {
                webhook: id.clone(),
                taken: self.taken.iter().find(|t| &t.webhook == id).cloned(),
                probed: self.probed.contains(id),
            })
            .collect()
    }
}

fn closed(until: i64) -> Gate {
    Gate {
        allowance: 0,
        opens_at: Some(until),
        rate: None,
        probe: false,
    }
}

/// A webhook's gate at `now`, if it has one: a pause closes it, an open circuit lets one probe
/// through when due, a rate limit lets its allowance through.
fn gate(row: &FlowRow, now: i64) -> Option<Gate> {
    if let Some(until) = row.paused_until.filter(|p| *p > now) {
        return Some(closed(until));
    }
    let (mut allowance, mut opens_at, mut probe) = (u32::MAX, None, false);
    if let Some(at) = row.probe_at {
        if at > now {
            return Some(closed(at));
        }
        (allowance, probe) = (1, true);
    }
    let rate = row
        .rate_limit
        .as_deref()
        .and_then(|r| RateLimit::from_json(r).ok());
    if let Some(rate) = rate {
        let n = rate.allowance(now, row.rate_tat);
        if n == 0 {
            opens_at = Some(rate.next_at(now, row.rate_tat));
        }
        allowance = allowance.min(n);
    }
    if allowance == u32::MAX {
        return None;
    }
    Some(Gate {
        allowance,
        opens_at,
        rate: rate.map(|r| (r, row.rate_tat)),
        probe,
    })
}

/// Whether a webhook is under flow control (a pause, a rate limit, a circuit's probe): the
/// condition of the partial index `webhooks_flow` of both backends, which the claims' reads of
/// the gated webhooks repeat so that their planners use it.
pub(crate) const UNDER_FLOW_CONTROL: &str =
    "(paused_until IS NOT NULL OR rate_limit IS NOT NULL OR probe_at IS NOT NULL)";

/// A webhook's flow-control columns with its pending deliveries: their count and the earliest
/// due. `{one}`: the one webhook `$1`.
pub(crate) const WEBHOOK_FLOW: &str = "SELECT w.id, w.paused_until, w.rate_limit, w.rate_tat,
       w.probe_at,
       (SELECT COUNT(*) FROM deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending')
         AS pending,
       (SELECT MIN(d.next_attempt_at) FROM deliveries d
        WHERE d.webhook_id = w.id AND d.status = 'pending') AS next_due
     FROM webhooks w WHERE w.id = $1";

/// As [`WEBHOOK_FLOW`], for the `$1` webhooks with the most pending deliveries (for
/// `/metrics`: a bounded number of series).
pub(crate) const BUSIEST_WEBHOOKS: &str = "SELECT w.id, w.paused_until, w.rate_limit, w.rate_tat,
       w.probe_at, p.pending, p.next_due
     FROM (SELECT webhook_id, COUNT(*) AS pending, MIN(next_attempt_at) AS next_due
           FROM deliveries WHERE status = 'pending'
           GROUP BY webhook_id ORDER BY COUNT(*) DESC LIMIT $1) p
     JOIN webhooks w ON w.id = p.webhook_id ORDER BY p.pending DESC, w.id";

/// A row of [`WEBHOOK_FLOW`] or [`BUSIEST_WEBHOOKS`].
#[derive(sqlx::FromRow)]
pub(crate) struct FlowColumns {
    #[sqlx(flatten)]
    pub gate: FlowRow,
    pub pending: i64,
    pub next_due: Option<i64>,
}

impl FlowColumns {
    /// The webhook's flow as the API and `/metrics` show it at `now`: its state, and when its
    /// next attempt may go (its earliest due delivery, or later if its gate says so).
    pub fn at(self, now: Timestamp) -> WebhookFlow {
        let g = &self.gate;
        let now_ms = now.millis();
        let (state, gate) = match (g.paused_until, g.probe_at) {
            (Some(until), _) if until > now_ms => (FlowState::Paused, Some(until)),
            (_, Some(probe)) => (FlowState::CircuitOpen, Some(probe)),
            _ => {
                let rate = g
                    .rate_limit
                    .as_deref()
                    .and_then(|r| RateLimit::from_json(r).ok());
                (FlowState::Open, rate.map(|r| r.next_at(now_ms, g.rate_tat)))
            }
        };
        let next = self
            .next_due
            .filter(|_| self.pending > 0)
            .map(|due| Timestamp::from_millis(gate.map_or(due, |g| g.max(due))));
        WebhookFlow {
            webhook_id: WebhookId::from_trusted(self.gate.id),
            state,
            pending: self.pending.max(0) as u64,
            next_attempt_at: next,
        }
    }
}

/// The pauses a batch of results asks for: per webhook, the latest.
pub(crate) fn pauses(records: &[AttemptRecord]) -> Vec<(String, i64)> {
    let mut by_webhook: HashMap<&str, i64> = HashMap::new();
    for r in records {
        if let Some(until) = r.pause_until {
            let e = by_webhook.entry(r.webhook_id.as_str()).or_insert(i64::MIN);
            *e = (*e).max(until.millis());
        }
    }
    let mut pauses: Vec<_> = by_webhook
        .into_iter()
        .map(|(id, until)| (id.to_owned(), until))
        .collect();
    pauses.sort();
    pauses
}

/// A webhook's count of failures in a row after a batch (`s.reset`, `s.n` from [`streaks`]),
/// in SQL both backends share; `w` is the webhook's row before.
const NEW_COUNT: &str = "CASE WHEN s.reset THEN s.n ELSE w.failures_in_a_row + s.n END";

/// The circuit breaker's update of the webhooks a batch of results touched, over rows `s(id,
/// reset, n)` that each backend lists its own way (`{streaks}`), with `{after}` the failures in
/// a row that open a circuit (0: never), `{open}` its first probe and `{now}`: the count kept,
/// the circuit opened when the count reaches `after` (its probe time kept if already open),
/// closed by a success otherwise; a success also clears a pause that is over (so the claims
/// need not read the webhook's gate again). A batch of successes to a healthy webhook changes
/// nothing.
pub(crate) fn circuit_update(streaks: &str, after: &str, open: &str, now: &str) -> String {
    format!(
        "UPDATE webhooks AS w SET failures_in_a_row = {NEW_COUNT},
           probe_at = CASE
             WHEN {after} > 0 AND {NEW_COUNT} >= {after}
               THEN CASE WHEN s.reset THEN {open} ELSE COALESCE(w.probe_at, {open}) END
             WHEN s.reset THEN NULL ELSE w.probe_at END,
           paused_until = CASE WHEN s.reset AND w.paused_until <= {now} THEN NULL
                               ELSE w.paused_until END
         FROM {streaks}
         WHERE w.id = s.id AND (s.n > 0 OR w.failures_in_a_row <> 0 OR w.probe_at IS NOT NULL
                                OR (s.reset AND w.paused_until <= {now}))"
    )
}

/// How a batch of results changes its webhooks' counts of failures in a row: per webhook,
/// whether a success reset the count, and the failures after the last success (or all of them).
pub(crate) fn streaks(records: &[AttemptRecord]) -> Vec<(String, bool, i64)> {
    let mut by_webhook: HashMap<&str, (bool, i64)> = HashMap::new();
    for r in records {
        let e = by_webhook.entry(r.webhook_id.as_str()).or_default();
        if r.next == NextStep::Succeeded {
            *e = (true, 0);
        } else {
            e.1 += 1;
        }
    }
    let mut streaks: Vec<_> = by_webhook
        .into_iter()
        .map(|(id, (reset, n))| (id.to_owned(), reset, n))
        .collect();
    streaks.sort();
    streaks
}

#[cfg(test)]
mod tests;
