//! The lanes: which claimed deliveries this node holds, per webhook, and which may start.
//!
//! A lane per webhook holds the deliveries being attempted (at most the per-webhook cap), those
//! claimed ahead and waiting for a turn, and the room publishing has reserved for hand-overs.
//! The cap keeps one slow endpoint from taking every worker (no head-of-line blocking); holding
//! a few ahead lets a worker that finishes go on with the webhook's next delivery without a
//! round trip to the store. At shutdown the lanes give back every delivery not started.
//!
//! A webhook paused by its receiver (429/503 with `Retry-After`, see [`Lanes::pause`]) starts
//! nothing more here until the pause is over: its waiting deliveries are given back at once
//! (the claims of every node skip it meanwhile), and what is claimed or handed over for it
//! during the pause goes back too.
//!
//! Likewise, a webhook whose attempts here have failed `circuit_after` times in a row is paused
//! here for a probe interval and takes no hand-overs until one succeeds: its circuit is open in
//! the store by then (the recorder counts there, for every node), and the claims bring only its
//! probes ([`crate::store::Gates`]).
//!
//! First attempts go first: a backlog of retries (or of re-queued deliveries) may run on at most
//! the workers less `fresh_reserve`, and hold at most the deliveries less as many times
//! [`HOLD_AHEAD`], so a first attempt finds a worker and room for its hand-over however long the
//! backlog. Retries also take turns ([`Lanes::with_retry_turns`]): a few at a time start on
//! this node, each holding its turn until it ends or has waited [`RETRY_TURN`] for its
//! endpoint, so a backlog sent to a fast endpoint does not fill the runtime's queues ahead of
//! first attempts, and one sent to a slow endpoint still runs at its concurrency. Nor may one
//! lane run more than `retry_concurrency` retries at once.
//! A lane whose next delivery is a retry while retries are at their share waits aside
//! (`parked`) until one ends, or until a first attempt arrives for it: within a lane, a first
//! attempt may start before retries held ahead of it (ordered deliveries are unaffected: the
//! claims never hold two of one key at once).
//!
//! [`Lanes`] is bookkeeping only, with no I/O and no clock of its own, so it is tested here
//! without a server (`lanes/tests.rs`); pauses and the circuit are in `lanes/flow.rs`;
//! [`SharedLanes`] puts it behind the lock the scheduler and publishing share.

use crate::domain::{Timestamp, WebhookId};
use crate::store::{ClaimedDelivery, Release};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Deliveries held per worker (and per unit of per-webhook concurrency): one being attempted,
/// seven claimed ahead, so that one claim feeds a busy webhook for a while rather than one claim
/// per delivery or two. A held delivery not started in time (see [`Lanes::hold`]) is given
/// back, so a slow endpoint's surplus returns to the queue.
pub const HOLD_AHEAD: usize = 8;

/// Time kept in hand, beyond the webhook's timeout, before a held lease runs out.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The lease of a claimed delivery, to give back.
pub fn release_of(claim: ClaimedDelivery) -> Release {
    Release {
        delivery_id: claim.delivery_id,
        lease: claim.lease,
    }
}

/// A claimed delivery and the latest time its attempt may start here.
pub struct Held {
    pub claim: ClaimedDelivery,
    pub start_by: Timestamp,
}

/// A started delivery that is over (attempted, or given back): which lane it ran on, whether
/// it counted against the retries' share, how its attempt went if it made one, and until when
/// its receiver asked the whole webhook to wait (429/503 with `Retry-After`), if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freed {
    pub webhook: WebhookId,
    pub retry: bool,
    /// Whether it still held its retry turn ([`RETRY_TURN`]) when it ended.
    pub turn: bool,
    pub succeeded: Option<bool>,
    pub pause_until: Option<Timestamp>,
}

impl Freed {
    pub fn of(claim: &ClaimedDelivery) -> Self {
        let retry = is_retry(claim);
        Self {
            webhook: claim.webhook.id.clone(),
            retry,
            turn: retry,
            succeeded: None,
            pause_until: None,
        }
    }
}

/// What a worker tells the scheduler about a delivery it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// A retry has run for [`RETRY_TURN`] without ending: it waits on its endpoint, not on the
    /// cores, and gives its turn to another.
    Waiting,
    /// It is over.
    Over(Freed),
}

/// How long a retry holds its turn: see [`Lanes::with_retry_turns`].
pub const RETRY_TURN: Duration = Duration::from_millis(5);

/// Whether a delivery is a retry (or re-queued after its attempts), not a first attempt.
fn is_retry(claim: &ClaimedDelivery) -> bool {
    claim.attempt_number > 1
}

/// Deliveries this node holds a lease on and has not finished, per webhook.
pub struct Lanes {
    by_webhook: HashMap<WebhookId, Lane>,
    /// Webhooks that may have a waiting delivery and room to run it (checked when taken), each
    /// at most once (its lane's `queued`): served in turn, and the list never longer than the
    /// lanes however long the load lasts.
    ready: VecDeque<WebhookId>,
    /// Lanes whose next delivery is a retry, waiting for the retries' share to have room, each
    /// at most once (its lane's `parked`).
    parked: VecDeque<WebhookId>,
    running: usize,
    /// Of `running`, retries.
    running_retries: usize,
    /// Of `running_retries`, those holding a turn (started less than [`RETRY_TURN`] ago), and
    /// how many may.
    turns: usize,
    retry_turns: usize,
    /// Running, waiting and reserved, on all lanes.
    held: usize,
    /// Set at shutdown: no more hand-overs.
    closed: bool,
    /// Deliveries handed over after shutdown began (their publish had reserved room before):
    /// their leases are given back with the others'.
    late: Vec<Release>,
    /// Webhooks paused by their receivers, until when (see [`Lanes::pause`]).
    paused: HashMap<WebhookId, Timestamp>,
    /// Leases to give back now: deliveries of paused webhooks.
    given_back: Vec<Release>,
    /// Failed attempts in a row per webhook, and the webhooks that have reached
    /// `circuit_after` of them (0: never), see [`Lanes::attempted`].
    failures: HashMap<WebhookId, u32>,
    circuit_after: u32,
    probe_interval: Duration,
    /// Attempts at once: on all lanes (the workers), and per lane.
    workers: usize,
    per_webhook: usize,
    /// Most deliveries held per lane, and in all.
    hold_per_webhook: usize,
    hold_total: usize,
    /// Most retries running at once, in all and per lane, and most deliveries the claims may
    /// hold in all: what is left is for first attempts.
    retry_workers: usize,
    retries_per_webhook: usize,
    claim_hold: usize,
}

#[derive(Default)]
struct Lane {
    running: usize,
    /// Of `running`, retries.
    running_retries: usize,
    waiting: VecDeque<Held>,
    /// Deliveries publishing has reserved room for and not yet handed over.
    reserved: usize,
    /// On the ready list.
    queued: bool,
    /// On the parked list.
    parked: bool,
}

impl Lane {
    fn held(&self) -> usize {
        self.running + self.waiting.len() + self.reserved
    }

    /// Its retries, running and waiting, when `capped` (a retry concurrency below the lane's):
    /// else 0, without a walk of its waiting deliveries (uncapped, they count like any other).
    fn retries(&self, capped: bool) -> usize {
        if !capped {
            return 0;
        }
        self.running_retries + self.waiting.iter().filter(|h| is_retry(&h.claim)).count()
    }

    /// What it holds, less its retries beyond `retry_hold` (given `retries`): those only wait
    /// their turn, a few at a time, and must not take the room its first attempts need.
    fn held_within(&self, retry_hold: usize, retries: usize) -> usize {
        self.held() - retries + retries.min(retry_hold)
    }
}

impl Lanes {
    /// Lanes for `workers` attempts at once, at most `per_webhook` of them to one webhook, each
    /// holding [`HOLD_AHEAD`] times that; `fresh_reserve` of the workers are kept for first
    /// attempts (at least one worker is left to retries).
    pub fn new(workers: usize, per_webhook: usize, fresh_reserve: usize) -> Self {
        let retry_workers = workers.saturating_sub(fresh_reserve).max(1);
        Self {
            by_webhook: HashMap::new(),
            ready: VecDeque::new(),
            parked: VecDeque::new(),
            running: 0,
            running_retries: 0,
            turns: 0,
            retry_turns: usize::MAX,
            held: 0,
            closed: false,
            late: Vec::new(),
            paused: HashMap::new(),
            given_back: Vec::new(),
            failures: HashMap::new(),
            circuit_after: 0,
            probe_interval: Duration::ZERO,
            workers,
            per_webhook,
            hold_per_webhook: per_webhook * HOLD_AHEAD,
            hold_total: workers * HOLD_AHEAD,
            retry_workers,
            retries_per_webhook: per_webhook,
            claim_hold: retry_workers.min(workers) * HOLD_AHEAD,
        }
    }

    /// At most `n` retries at once per lane (the lane's whole concurrency until set).
    pub fn with_retry_concurrency(mut self, n: usize) -> Self {
        self.retries_per_webhook = n.max(1);
        self
    }

    /// At most `n` retries at a time hold a turn: a retry holds one from its start until it
    /// ends or has run for [`RETRY_TURN`]. Sent to a fast endpoint, retries cost the cores, not
    /// waiting, and each one running is one more task a first attempt queues behind; a retry
    /// still running after its turn waits on its endpoint, and lets another start.
    pub fn with_retry_turns(mut self, n: usize) -> Self {
        self.retry_turns = n.max(1);
        self
    }

    /// Most retries a lane holds, and whether that is less than its whole hold.
    fn retry_hold(&self) -> (usize, bool) {
        (
            self.retries_per_webhook * HOLD_AHEAD,
            self.retries_per_webhook < self.per_webhook,
        )
    }

    /// Holds a delivery claimed at `claimed_at` with a lease until `lease_until`. Its attempt
    /// must start early enough to end (timeout included) before the lease does, or, with a
    /// lease shorter than that (a configuration the start-up warns about), within half the
    /// lease.
    pub fn hold(&mut self, claim: ClaimedDelivery, claimed_at: Timestamp, lease_until: Timestamp) {
        let id = claim.webhook.id.clone();
        if self.paused.contains_key(&id) {
            self.given_back.push(release_of(claim));
            return;
        }
        let latest = lease_until.minus(claim.webhook.retry.timeout + LEASE_MARGIN);
        let start_by = latest.max(claimed_at.plus(claimed_at.until(lease_until) / 2));
        let lane = self.by_webhook.entry(id.clone()).or_default();
        lane.waiting.push_back(Held { claim, start_by });
        self.held += 1;
        // A parked lane goes back on the ready list too: a first attempt may start.
        if !lane.queued {
            lane.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Takes the deliveries to attempt now, while workers are free: each the first waiting one
    /// of a webhook below its cap. They count as running until [`Lanes::finished`].
    pub fn start(&mut self) -> Vec<Held> {
        let mut starts = Vec::new();
        while self.running < self.workers {
            let Some(held) = self.next() else { break };
            starts.push(held);
        }
        starts
    }

    /// The next delivery to attempt: the first waiting one of a webhook below the cap, or, while
    /// retries are at their share, its first waiting first attempt.
    fn next(&mut self) -> Option<Held> {
        let all_retries_full =
            self.running_retries >= self.retry_workers || self.turns >= self.retry_turns;
        while let Some(id) = self.ready.pop_front() {
            let Some(lane) = self.by_webhook.get_mut(&id) else {
                continue;
            };
            lane.queued = false;
            if lane.running >= self.per_webhook {
                continue; // put back on the list when one of its attempts finishes
            }
            let retries_full = all_retries_full || lane.running_retries >= self.retries_per_webhook;
            let at = if retries_full {
                lane.waiting.iter().position(|h| !is_retry(&h.claim))
            } else {
                (!lane.waiting.is_empty()).then_some(0)
            };
            let Some(held) = at.and_then(|at| lane.waiting.remove(at)) else {
                if !lane.waiting.is_empty() && !lane.parked {
                    // Only retries waiting: back when a retry ends or a first attempt comes.
                    lane.parked = true;
                    self.parked.push_back(id);
                }
                continue;
            };
            lane.running += 1;
            self.running += 1;
            if is_retry(&held.claim) {
                self.running_retries += 1;
                self.turns += 1;
                lane.running_retries += 1;
            }
            if !lane.waiting.is_empty() && lane.running < self.per_webhook {
                lane.queued = true;
                self.ready.push_back(id);
            }
            return Some(held);
        }
        None
    }

    /// An attempt has finished (its result is on its way to the store), or a started delivery
    /// was given back. Returns whether the webhook's deliveries held ahead are running low.
    pub fn finished(&mut self, freed: &Freed) -> bool {
        let webhook = &freed.webhook;
        self.running = self.running.saturating_sub(1);
        self.held = self.held.saturating_sub(1);
        if freed.retry {
            self.running_retries = self.running_retries.saturating_sub(1);
            if freed.turn {
                self.turns = self.turns.saturating_sub(1);
            }
            self.unpark();
        }
        let Some(lane) = self.by_webhook.get_mut(webhook) else {
            return true;
        };
        lane.running = lane.running.saturating_sub(1);
        if freed.retry {
            lane.running_retries = lane.running_retries.saturating_sub(1);
        }
        let low = lane.waiting.len() + lane.reserved < lane.running.max(1);
        if lane.held() == 0 {
            self.by_webhook.remove(webhook);
        } else if !lane.waiting.is_empty() && !lane.queued {
            lane.queued = true;
            self.ready.push_back(webhook.clone());
        }
        low
    }

    /// What a worker said of a delivery it started, heard at `now`: a retry's turn given back,
    /// or the delivery over (its slot freed, its outcome counted towards the circuit, its
    /// receiver's pause applied). Returns the webhook if its lane runs low.
    pub fn heard(&mut self, news: News, now: Timestamp) -> Option<WebhookId> {
        match news {
            News::Waiting => {
                self.turn_over();
                None
            }
            News::Over(slot) => {
                let low = self.finished(&slot);
                if let Some(succeeded) = slot.succeeded {
                    self.attempted(&slot.webhook, succeeded, now);
                }
                if let Some(until) = slot.pause_until {
                    self.pause(&slot.webhook, until);
                }
                low.then_some(slot.webhook)
            }
        }
    }

    /// A retry has run for its turn without ending ([`News::Waiting`]): another may start.
    fn turn_over(&mut self) {
        self.turns = self.turns.saturating_sub(1);
        self.unpark();
    }

    /// Puts the parked lanes back on the ready list: a retry has ended or given its turn.
    fn unpark(&mut self) {
        while let Some(id) = self.parked.pop_front() {
            let Some(lane) = self.by_webhook.get_mut(&id) else {
                continue;
            };
            lane.parked = false;
            if !lane.queued && !lane.waiting.is_empty() {
                lane.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Reserves room for a delivery publishing is about to commit; false when the lanes are
    /// closed, or the webhook's lane or all of them hold as much as they may.
    pub fn reserve(&mut self, webhook: &WebhookId) -> bool {
        if self.closed
            || self.held >= self.hold_total
            || self.paused.contains_key(webhook)
            || self.circuit_open(webhook)
        {
            return false;
        }
        let (retry_hold, capped) = self.retry_hold();
        let lane = self.by_webhook.entry(webhook.clone()).or_default();
        if lane.held_within(retry_hold, lane.retries(capped)) >= self.hold_per_webhook {
            return false;
        }
        lane.reserved += 1;
        self.held += 1;
        true
    }

    /// Takes reserved deliveries, now committed, leased until `lease_until`. After shutdown has
    /// begun they are kept aside, to be given back ([`Lanes::take_late`]).
    pub fn hand_over(
        &mut self,
        claims: Vec<ClaimedDelivery>,
        claimed_at: Timestamp,
        lease_until: Timestamp,
    ) {
        for claim in claims {
            self.unreserve(&claim.webhook.id);
            if self.closed {
                self.late.push(release_of(claim));
            } else {
                self.hold(claim, claimed_at, lease_until);
            }
        }
    }

    /// Gives back a reservation of publishing's that was not handed over.
    pub fn unreserve(&mut self, webhook: &WebhookId) {
        let Some(lane) = self.by_webhook.get_mut(webhook) else {
            return;
        };
        lane.reserved = lane.reserved.saturating_sub(1);
        self.held = self.held.saturating_sub(1);
        if lane.held() == 0 {
            self.by_webhook.remove(webhook);
        }
    }

    /// How many more deliveries a claim may bring: the room first attempts' hand-overs have
    /// to themselves is left.
    pub fn room(&self) -> usize {
        self.claim_hold.saturating_sub(self.held)
    }

    /// Deliveries held per webhook, for the claim's per-webhook cap. A lane holding retries
    /// has room for at most `retry_concurrency` × [`HOLD_AHEAD`] of them (more would only wait,
    /// it runs that many at once); its retries beyond that do not count against the room of its
    /// first attempts.
    pub fn held_by_webhook(&self) -> HashMap<WebhookId, usize> {
        let (retry_hold, capped) = self.retry_hold();
        self.by_webhook
            .iter()
            .map(|(id, lane)| {
                let retries = lane.retries(capped);
                let room = self
                    .hold_per_webhook
                    .saturating_sub(lane.held_within(retry_hold, retries));
                let room = if retries > 0 {
                    room.min(retry_hold.saturating_sub(retries))
                } else {
                    room
                };
                (id.clone(), self.hold_per_webhook - room)
            })
            .collect()
    }

    /// Room publishing has reserved and not yet handed over or given back.
    pub fn reserved(&self) -> usize {
        self.by_webhook.values().map(|l| l.reserved).sum()
    }

    /// Shutdown has begun: later hand-overs are kept aside and no more room is reserved.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Every waiting delivery, leaving only those being attempted.
    pub fn drain_waiting(&mut self) -> Vec<Held> {
        let mut all = Vec::new();
        for lane in self.by_webhook.values_mut() {
            all.extend(lane.waiting.drain(..));
            lane.queued = false;
            lane.parked = false;
        }
        self.held -= all.len();
        self.ready.clear();
        self.parked.clear();
        all
    }

    /// The leases of deliveries handed over after [`Lanes::close`].
    pub fn take_late(&mut self) -> Vec<Release> {
        std::mem::take(&mut self.late)
    }
}

mod flow;
mod shared;
pub use shared::SharedLanes;

#[cfg(test)]
mod tests;
