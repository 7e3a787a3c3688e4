//! The dispatcher: claim due deliveries → sign and send → record the outcome.
//!
//! Three roles share one shutdown token:
//! - the scheduler claims due deliveries in batches and holds them in a lane per webhook, a few
//!   ahead of the per-webhook cap, so one slow endpoint cannot take every worker (no
//!   head-of-line blocking) and a worker that finishes goes on with the webhook's next delivery
//!   without waiting for the store;
//! - a fixed pool of workers, each looping over the job channel, makes the attempts;
//! - the recorder writes finished attempts in batches, apart from the attempts themselves.
//!
//! The queue itself stays in the store; memory holds at most `8 × workers` claimed deliveries.

mod lanes;
mod message;
mod recorder;
pub mod sender;
mod worker;

use crate::config::DeliverySettings;
use crate::domain::{Timestamp, WebhookId};
use crate::store::{ClaimRequest, ClaimedDelivery, DynStore, Release};
use crate::telemetry::{Metrics, StoreOp};
use lanes::{HOLD_AHEAD, Lanes, SharedLanes, release_of};
use recorder::Finished;
use sender::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Shortest time between two claims while the store has no due work left behind. Every claim
/// costs a scan of the due index from its start (past the deliveries in flight), however few it
/// finds; without a gap, a webhook failing at once, retried at once ("0s"), is claimed a few
/// deliveries at a time as each result is written, and those claims take the cores from the
/// healthy webhooks (isolation: their p99 1.37–1.65 × their p99 alone, and 1.27–1.43 × with a
/// 1 ms gap, five runs each). A backlog is claimed without a gap.
const CLAIM_GAP: Duration = Duration::from_millis(1);

/// Results that may wait to be written, per worker (see [`Dispatcher::run`]).
pub const RESULTS_PER_WORKER: usize = 4;

/// Wakes the dispatcher when new work is committed, so it does not wait for a poll tick.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

pub struct Dispatcher {
    store: DynStore,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    waker: Waker,
    metrics: Arc<Metrics>,
    shared: Arc<SharedLanes>,
}

impl Dispatcher {
    pub fn new(
        store: DynStore,
        settings: DeliverySettings,
        dev: bool,
        node: String,
        waker: Waker,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let sender = Arc::new(Sender::new(&settings, dev, node)?);
        let lanes = Lanes::new(settings.workers, settings.per_webhook_concurrency);
        let shared = Arc::new(SharedLanes::new(lanes));
        Ok(Self {
            shared,
            store,
            sender,
            settings,
            waker,
            metrics,
        })
    }

    /// Runs until `shutdown` fires, then stops claiming, lets attempts in hand finish (up to the
    /// shutdown grace), gives back leases it has not started, and writes every result.
    pub async fn run(self, shutdown: CancellationToken) {
        let workers = self.settings.workers;
        let waker = self.waker.clone();
        self.store
            .watch_for_work(Arc::new(move || waker.wake()), shutdown.clone());
        self.store
            .set_intake(self.shared.clone(), self.settings.lease.0);
        let (job_tx, job_rx) = async_channel::bounded::<ClaimedDelivery>(workers);
        // Bounded: a worker waits when results queue up, so at most `RESULTS_PER_WORKER ×
        // workers` results wait to be written, beside the batch being written (which bounds
        // what a crash repeats). Room for more than one result per worker: the recorder writes
        // one batch at a time, and while it waits for that commit the next batch gathers here.
        // With room for only `workers` results, every worker stalled behind each commit and
        // deliveries were bound to `workers` per commit (e2e fan-out 10: 18,000/s; with four
        // per worker, 24,000/s).
        let (done_tx, done_rx) = mpsc::channel::<Finished>(workers * RESULTS_PER_WORKER);
        let (freed_tx, mut freed_rx) = mpsc::unbounded_channel::<WebhookId>();
        let (aborted_tx, mut aborted_rx) = mpsc::unbounded_channel::<Release>();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(worker::work(
                job_rx.clone(),
                done_tx.clone(),
                freed_tx.clone(),
                aborted_tx.clone(),
                self.sender.clone(),
                shutdown.clone(),
                self.metrics.clone(),
            ));
        }
        drop(freed_tx);
        let recorder = tokio::spawn(recorder::record(
            done_rx,
            self.store.clone(),
            self.waker.clone(),
            self.settings.disable_after.0,
            self.metrics.clone(),
        ));

        self.schedule(&job_tx, &mut freed_rx, &done_tx, &shutdown)
            .await;
        job_tx.close();
        drop(done_tx);

        let grace = self.settings.shutdown_grace.0;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "attempts still in flight at the end of the shutdown grace; stopping them and giving back their leases"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if let Err(e) = recorder.await {
            error!(error = %e, "the attempt recorder stopped abnormally");
        }
        // Attempts stopped half-way and deliveries handed over too late to start: give their
        // leases back, so that this node after a restart, or another node, need not wait for
        // them to run out. (A stopped attempt may have reached its receiver: trying it again
        // is the at-least-once promise, as after a crash.)
        drop(aborted_tx);
        // Publishes that reserved room before shutdown began may still be committing (the API
        // finishes its requests in flight): wait a little for their hand-overs.
        let deadline = tokio::time::Instant::now() + LATE_HAND_OVER_WAIT;
        while self.shared.lock().reserved() > 0 && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.shared.handed.notified())
                .await;
        }
        let mut releases = self.shared.lock().take_late();
        while let Ok(r) = aborted_rx.try_recv() {
            releases.push(r);
        }
        // Claims no worker took before the workers were stopped.
        while let Ok(claim) = job_rx.try_recv() {
            releases.push(release_of(claim));
        }
        if !releases.is_empty() {
            let n = releases.len();
            let written =
                tokio::time::timeout(Duration::from_secs(5), self.store.release(&releases));
            match written.await {
                Ok(Ok(())) => tracing::info!(
                    deliveries = n,
                    "gave back the leases of deliveries not finished"
                ),
                Ok(Err(e)) => {
                    warn!(error = %e, deliveries = n, "could not give back leases; they will expire")
                }
                Err(_) => warn!(
                    deliveries = n,
                    "giving back leases timed out; they will expire"
                ),
            }
        }
    }

    /// Starts attempts from the held deliveries while workers are free, and claims more from the
    /// store (one claim at a time, never blocking the starts) when there is room and maybe work.
    async fn schedule(
        &self,
        jobs: &async_channel::Sender<ClaimedDelivery>,
        freed: &mut mpsc::UnboundedReceiver<WebhookId>,
        done: &mpsc::Sender<Finished>,
        shutdown: &CancellationToken,
    ) {
        let s = &self.settings;
        let shared = &self.shared;
        let mut claiming: Option<ClaimFuture> = None;
        // Claim as soon as there is room: at start, after new work, after a full claim.
        let mut claim_now = true;
        // Whether the last claim left due work behind (it was full, or the per-webhook holds
        // stopped it): then an attempt that ends makes another claim worth it. If not, only
        // new work (a wake-up) or the next due time does.
        let mut backlog = true;
        let mut wake_at = tokio::time::Instant::now();
        // After a claim that took all that was due, the next one waits out `CLAIM_GAP`.
        let mut not_before = tokio::time::Instant::now();
        loop {
            let starts = shared.lock().start();
            for held in starts {
                if Timestamp::now() > held.start_by {
                    // Held too long: the lease could run out mid-attempt and another node take
                    // the delivery. Give it back; it is claimed again with a fresh lease.
                    let webhook = held.claim.webhook.id.clone();
                    let _ = done.send(Finished::Released(release_of(held.claim))).await;
                    shared.lock().finished(&webhook);
                    continue;
                }
                if jobs.send(held.claim).await.is_err() {
                    return;
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            let (room, in_flight) = {
                let lanes = shared.lock();
                (lanes.room(), lanes.held_by_webhook())
            };
            let held_off = !backlog && tokio::time::Instant::now() < not_before;
            if claiming.is_none() && claim_now && room > 0 && !held_off {
                claim_now = false;
                claiming = Some(self.claim(room.min(s.claim_batch), in_flight));
            }
            tokio::select! {
                result = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    match result {
                        Ok(ClaimResult { claims, asked, claimed_at, lease_until, next_due }) => {
                            // A full claim: there may be more due now. (A wake-up during the claim
                            // has set `claim_now` already.)
                            claim_now |= claims.len() == asked;
                            let now = Timestamp::now();
                            let due_left = next_due.is_some_and(|at| at <= now);
                            backlog = claims.len() == asked || due_left;
                            let mut lanes = shared.lock();
                            for claim in claims {
                                lanes.hold(claim, claimed_at, lease_until);
                            }
                            drop(lanes);
                            // Due work left behind waits for a slot to free, not for the clock.
                            let poll = s.poll_interval.0;
                            let idle = match next_due {
                                Some(at) if at > now => now.until(at).min(poll),
                                _ => poll,
                            };
                            wake_at = tokio::time::Instant::now() + idle;
                            not_before = tokio::time::Instant::now() + CLAIM_GAP;
                        }
                        Err(e) => {
                            error!(error = %e, "claiming due deliveries failed; retrying shortly");
                            wake_at = tokio::time::Instant::now() + Duration::from_secs(1);
                        }
                    }
                }
                Some(webhook) = freed.recv() => {
                    let mut lanes = shared.lock();
                    let mut low = lanes.finished(&webhook);
                    while let Ok(webhook) = freed.try_recv() {
                        low |= lanes.finished(&webhook);
                    }
                    // Refill a webhook whose deliveries held ahead are running out, if the
                    // store had more than the holds let the last claim take.
                    claim_now |= low && backlog;
                }
                _ = shared.handed.notified() => {}
                _ = self.waker.woken() => claim_now = true,
                _ = tokio::time::sleep_until(wake_at), if !claim_now => claim_now = true,
                _ = tokio::time::sleep_until(not_before), if claim_now && held_off && claiming.is_none() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        // Shutting down: take no more hand-overs, and give back every lease not started,
        // including a claim in progress.
        shared.lock().close();
        if let Some(pending) = claiming
            && let Ok(result) = pending.await
        {
            let mut lanes = shared.lock();
            for claim in result.claims {
                lanes.hold(claim, result.claimed_at, result.lease_until);
            }
        }
        let waiting = shared.lock().drain_waiting();
        for held in waiting {
            let _ = done.send(Finished::Released(release_of(held.claim))).await;
        }
    }

    /// A claim of up to `limit` due deliveries within the per-webhook hold, run beside the
    /// scheduler; when it finds fewer than asked, it also reads when the next one falls due.
    fn claim(&self, limit: usize, in_flight: HashMap<WebhookId, usize>) -> ClaimFuture {
        let s = &self.settings;
        let now = Timestamp::now();
        let request = ClaimRequest {
            now,
            lease_until: now.plus(s.lease.0),
            limit,
            per_webhook_cap: s.per_webhook_concurrency * HOLD_AHEAD,
            in_flight,
        };
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let scan = s.workers + 1;
        Box::pin(async move {
            let claims = metrics
                .time_store(StoreOp::Claim, store.claim_due(&request))
                .await?;
            let next_due = if claims.len() < limit {
                store.next_due_at(scan).await?
            } else {
                None
            };
            Ok(ClaimResult {
                claims,
                asked: limit,
                claimed_at: now,
                lease_until: request.lease_until,
                next_due,
            })
        })
    }
}

/// Longest wait at shutdown for hand-overs from publishes that were committing.
const LATE_HAND_OVER_WAIT: Duration = Duration::from_secs(2);

type ClaimFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = crate::store::StoreResult<ClaimResult>> + Send>,
>;

struct ClaimResult {
    claims: Vec<ClaimedDelivery>,
    asked: usize,
    claimed_at: Timestamp,
    lease_until: Timestamp,
    next_due: Option<Timestamp>,
}
