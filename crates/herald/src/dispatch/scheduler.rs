//! The scheduler: starts held deliveries while workers are free, and claims more from the store
//! (one claim at a time, never blocking the starts) when there is room and maybe work.
//!
//! When to claim is [`Pacing`]'s to decide, from what the last claim found and what happened
//! since; the loop in [`Scheduler::run`] only waits for the next thing to happen.

use super::Waker;
use super::lanes::{Freed, HOLD_AHEAD, Held, News, SharedLanes, release_of};
use super::recorder::Finished;
use crate::config::DeliverySettings;
use crate::domain::{Timestamp, WebhookId};
use crate::store::{ClaimRequest, ClaimedDelivery, NextDue, Queue, StoreResult};
use crate::telemetry::{Metrics, StoreOp};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// Shortest time between two claims while the store has no due work left behind. Every claim
/// costs a scan of the due index from its start (past the deliveries in flight), however few it
/// finds; without a gap, a webhook failing at once, retried at once ("0s"), is claimed a few
/// deliveries at a time as each result is written, and those claims take the cores from the
/// healthy webhooks (their latency suffers: see docs/BENCHMARKS.md). A backlog is claimed
/// without a gap.
const CLAIM_GAP: Duration = Duration::from_millis(1);

/// The wake-up while a claim is out, once the one that started it is spent: the claim's answer
/// (or its failure) sets the next.
const UNTIL_ANSWERED: Duration = Duration::from_secs(3600);

/// How long a failed claim waits before the next, unless new work wakes the scheduler.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// The scheduler's view of the dispatcher: what it reads, claims from, and feeds.
pub struct Scheduler<'a> {
    pub settings: &'a DeliverySettings,
    pub store: &'a Arc<dyn Queue>,
    pub metrics: &'a Arc<Metrics>,
    pub lanes: &'a SharedLanes,
    pub waker: &'a Waker,
    /// This node's id: it claims only the listener webhooks whose streams it holds.
    pub node: &'a str,
}

impl Scheduler<'_> {
    /// Runs until `shutdown` fires (or the workers are gone), then gives back every lease not
    /// started, a claim in progress included, through `done`.
    pub async fn run(
        &self,
        jobs: &async_channel::Sender<ClaimedDelivery>,
        news: &mut mpsc::UnboundedReceiver<News>,
        done: &mpsc::Sender<Finished>,
        shutdown: &CancellationToken,
    ) {
        let lanes = self.lanes;
        let mut claiming: Option<ClaimFuture> = None;
        let mut pacing = Pacing::new(Instant::now());
        loop {
            let (starts, given_back) = {
                let mut lanes = lanes.lock();
                lanes.resume(Timestamp::now());
                (lanes.start(), lanes.take_given_back())
            };
            for release in given_back {
                let _ = done.send(Finished::Released(release)).await;
            }
            if !self.start(starts, jobs, done).await {
                return;
            }
            if shutdown.is_cancelled() {
                break;
            }
            let (room, in_flight) = {
                let lanes = lanes.lock();
                (lanes.room(), lanes.held_by_webhook())
            };
            let held_off = pacing.held_off(Instant::now());
            if claiming.is_none() && pacing.take_claim(room, held_off, Instant::now()) {
                claiming = Some(self.claim(room.min(self.settings.claim_batch), in_flight));
            }
            tokio::select! {
                result = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match result {
                        Ok(found) => {
                            let now = Timestamp::now();
                            let summary = found.hold(lanes);
                            pacing.claimed(&summary, self.settings.poll_interval.0, now, Instant::now());
                        }
                        Err(e) => {
                            error!(error = %e, "claiming due deliveries failed; retrying shortly");
                            pacing.claim_failed(Instant::now());
                        }
                    }
                }
                Some(first) = news.recv() => {
                    let mut held = lanes.lock();
                    let mut low = Vec::new();
                    let mut next = Some(first);
                    while let Some(said) = next {
                        low.extend(held.heard(said, Timestamp::now()));
                        next = news.try_recv().ok();
                    }
                    pacing.freed(&low);
                }
                _ = lanes.handed.notified() => {}
                _ = self.waker.woken() => pacing.wanted(),
                _ = tokio::time::sleep_until(pacing.wake_at), if !pacing.claim_now => pacing.wanted(),
                _ = tokio::time::sleep_until(pacing.not_before), if pacing.claim_now && held_off && claiming.is_none() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        // Shutting down: take no more hand-overs, and give back every lease not started,
        // including a claim in progress.
        lanes.lock().close();
        if let Some(pending) = claiming
            && let Ok(found) = pending.await
        {
            found.hold(lanes);
        }
        let waiting = lanes.lock().drain_waiting();
        for held in waiting {
            let _ = done.send(Finished::Released(release_of(held.claim))).await;
        }
    }

    /// Hands the deliveries just started to the workers; false when the workers are gone.
    async fn start(
        &self,
        starts: Vec<Held>,
        jobs: &async_channel::Sender<ClaimedDelivery>,
        done: &mpsc::Sender<Finished>,
    ) -> bool {
        for held in starts {
            if Timestamp::now() > held.start_by {
                // Held too long: the lease could run out mid-attempt and another node take
                // the delivery. Give it back; it is claimed again with a fresh lease.
                let slot = Freed::of(&held.claim);
                let _ = done.send(Finished::Released(release_of(held.claim))).await;
                self.lanes.lock().finished(&slot);
                continue;
            }
            if jobs.send(held.claim).await.is_err() {
                return false;
            }
        }
        true
    }

    /// A claim of up to `limit` due deliveries within the per-webhook hold, run beside the
    /// scheduler; when it finds fewer than asked, it also reads when the next one falls due and
    /// which full lanes it left due work behind.
    fn claim(&self, limit: usize, in_flight: HashMap<WebhookId, usize>) -> ClaimFuture {
        let s = self.settings;
        let now = Timestamp::now();
        let request = ClaimRequest {
            now,
            lease_until: now.plus(s.lease.0),
            limit,
            per_webhook_cap: s.per_webhook_concurrency * HOLD_AHEAD,
            in_flight,
            node: self.node.to_owned(),
            probe_interval: s.probe_interval.0,
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let claim = metrics
                .time_store(StoreOp::Claim, store.claim(&request))
                .await?;
            let claims = claim.deliveries;
            let next = if claims.len() < limit {
                store
                    .next_due(&full_lanes(&request, &claims, &claim.closed))
                    .await?
            } else {
                NextDue::default()
            };
            Ok(Claimed {
                summary: ClaimSummary {
                    asked: limit,
                    found: claims.len(),
                    next_due: next.at,
                    behind: next.behind,
                    gate_opens_at: claim.gate_opens_at,
                },
                claims,
                claimed_at: now,
                lease_until: request.lease_until,
            })
        })
    }
}

/// The webhooks whose lanes the claim left full (at the per-webhook cap, counting what it
/// brought) and whose gates it left open: the ones it may have left due work of behind, for a
/// slot to free. A rate-limited webhook whose limit is above what its lane holds is one of
/// them until it has spent its allowance.
fn full_lanes(
    request: &ClaimRequest,
    claims: &[ClaimedDelivery],
    closed: &[WebhookId],
) -> Vec<WebhookId> {
    let mut held = request.in_flight.clone();
    for claim in claims {
        *held.entry(claim.webhook.id.clone()).or_default() += 1;
    }
    held.into_iter()
        .filter(|(id, n)| *n >= request.per_webhook_cap && !closed.contains(id))
        .map(|(id, _)| id)
        .collect()
}

type ClaimFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<Claimed>> + Send>>;

/// What a claim brought back.
struct Claimed {
    claims: Vec<ClaimedDelivery>,
    claimed_at: Timestamp,
    lease_until: Timestamp,
    summary: ClaimSummary,
}

impl Claimed {
    /// Puts the claimed deliveries in their lanes; returns what the claim told of the queue.
    fn hold(self, lanes: &SharedLanes) -> ClaimSummary {
        let mut held = lanes.lock();
        for claim in self.claims {
            held.hold(claim, self.claimed_at, self.lease_until);
        }
        self.summary
    }
}

/// What a claim tells about the queue: how many it asked for and found, when it found fewer,
/// when the next delivery falls due and which webhooks' full lanes it left due work behind, and
/// when a webhook it left out or cut short (paused, at its rate limit, its circuit open) may
/// take deliveries again.
#[derive(Clone, Debug)]
pub struct ClaimSummary {
    pub asked: usize,
    pub found: usize,
    pub next_due: Option<Timestamp>,
    pub behind: Vec<WebhookId>,
    pub gate_opens_at: Option<Timestamp>,
}

/// Where the last claim left due work behind, so where a freed slot is worth another claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Behind {
    /// It took all that was due (or all it could: the rest waits for a gate or a key's head).
    Nothing,
    /// It was full: anything may be due still.
    Anywhere,
    /// These webhooks' lanes were full, with due work of theirs left in the store. A slot
    /// freed in another lane (one fed by hand-overs, say) would bring nothing.
    In(HashSet<WebhookId>),
}

/// When to claim next: the scheduler loop's state between turns. Pure: the clock is passed in.
#[derive(Debug)]
pub struct Pacing {
    /// Claim as soon as there is room: at start, after new work, after a full claim.
    pub claim_now: bool,
    /// Where the last claim left due work behind (it was full, or the per-webhook holds stopped
    /// it): an attempt that ends there makes another claim worth it. Elsewhere, only new work
    /// (a wake-up) or the next due time does.
    pub behind: Behind,
    /// When to look at the queue again if nothing else comes first: the next due time, at most
    /// a poll interval away.
    pub wake_at: Instant,
    /// After a claim that took all that was due, the next one waits out [`CLAIM_GAP`].
    pub not_before: Instant,
}

impl Pacing {
    pub fn new(now: Instant) -> Self {
        Self {
            claim_now: true,
            behind: Behind::Anywhere,
            wake_at: now,
            not_before: now,
        }
    }

    /// New work was committed, or the idle wait is over: claim when there is room.
    pub fn wanted(&mut self) {
        self.claim_now = true;
    }

    /// Whether a claim must wait for [`Pacing::not_before`]: only when nothing due was left.
    pub fn held_off(&self, now: Instant) -> bool {
        self.behind == Behind::Nothing && now < self.not_before
    }

    /// Whether to start a claim now, with `room` for that many more deliveries and `held_off`
    /// as [`Pacing::held_off`] said; if so, the claim is taken. A wake-up already past at
    /// `clock` is spent by this claim (its answer sets the next): left armed, it would start
    /// another claim the moment this one ends. A later one stays, so work falling due while
    /// the claim is out is claimed after it.
    pub fn take_claim(&mut self, room: usize, held_off: bool, clock: Instant) -> bool {
        let go = self.claim_now && room > 0 && !held_off;
        if go {
            self.claim_now = false;
            if self.wake_at <= clock {
                self.wake_at = clock + UNTIL_ANSWERED;
            }
        }
        go
    }

    /// A claim has come back, at `now` by the store's clock and `clock` by the scheduler's.
    pub fn claimed(
        &mut self,
        claim: &ClaimSummary,
        poll: Duration,
        now: Timestamp,
        clock: Instant,
    ) {
        let full = claim.found == claim.asked;
        // A full claim: there may be more due now. (A wake-up during the claim has set
        // `claim_now` already.)
        self.claim_now |= full;
        self.behind = if full {
            Behind::Anywhere
        } else if claim.behind.is_empty() {
            Behind::Nothing
        } else {
            Behind::In(claim.behind.iter().cloned().collect())
        };
        // Due work left behind waits for a slot to free, not for the clock.
        let idle = match claim.next_due {
            Some(at) if at > now => now.until(at).min(poll),
            _ => poll,
        };
        // A rate-limited webhook's next token, a pause's end: come back then, not a poll later.
        let idle = match claim.gate_opens_at {
            Some(at) => idle.min(now.until(at)),
            None => idle,
        };
        self.wake_at = clock + idle;
        self.not_before = clock + CLAIM_GAP;
    }

    /// A claim has failed: try again a little later, or sooner on new work.
    pub fn claim_failed(&mut self, clock: Instant) {
        self.wake_at = clock + CLAIM_RETRY;
    }

    /// Attempts have ended; `low`, the webhooks whose deliveries held ahead are running out.
    /// Refill them if the store had more of theirs than the holds let the last claim take.
    pub fn freed(&mut self, low: &[WebhookId]) {
        self.claim_now |= match &self.behind {
            Behind::Nothing => false,
            Behind::Anywhere => !low.is_empty(),
            Behind::In(webhooks) => low.iter().any(|w| webhooks.contains(w)),
        };
    }
}

#[cfg(test)]
mod tests;
