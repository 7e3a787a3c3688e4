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

mod message;
pub mod sender;

use crate::config::DeliverySettings;
use crate::domain::{RetryPolicy, Timestamp, WebhookId};
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, HealthPolicy, Intake, NextStep, Queue, Release,
};
use crate::telemetry::{Metrics, StoreOp};
use sender::Sender;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug_span, error, warn};

/// Most finished attempts written in one transaction.
const RECORD_BATCH: usize = 256;

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

/// Deliveries this node holds a lease on and has not finished, per webhook: those being
/// attempted (at most the per-webhook cap) and those claimed ahead, waiting for a turn. Holding
/// a few ahead lets a worker that finishes go straight to the webhook's next delivery, without a
/// round trip to the store in between.
#[derive(Default)]
struct Lanes {
    by_webhook: HashMap<WebhookId, Lane>,
    /// Webhooks that may have a waiting delivery and room to run it (checked when taken).
    ready: VecDeque<WebhookId>,
    running: usize,
    /// Running, waiting and reserved, on all lanes.
    held: usize,
    /// Set at shutdown: no more hand-overs.
    closed: bool,
    /// Deliveries handed over after shutdown began (their publish had reserved room before):
    /// their leases are given back with the others'.
    late: Vec<Release>,
}

#[derive(Default)]
struct Lane {
    running: usize,
    waiting: VecDeque<Held>,
    /// Deliveries publishing has reserved room for and not yet handed over.
    reserved: usize,
}

impl Lane {
    fn held(&self) -> usize {
        self.running + self.waiting.len() + self.reserved
    }
}

/// A claimed delivery and the latest time its attempt may start here.
struct Held {
    claim: ClaimedDelivery,
    start_by: Timestamp,
}

impl Lanes {
    /// Holds a delivery claimed at `claimed_at` with a lease until `lease_until`. Its attempt
    /// must start early enough to end (timeout included) before the lease does, or, with a
    /// lease shorter than that (a configuration the start-up warns about), within half the
    /// lease.
    fn hold(&mut self, claim: ClaimedDelivery, claimed_at: Timestamp, lease_until: Timestamp) {
        let id = claim.webhook.id.clone();
        let latest = lease_until.minus(claim.webhook.retry.timeout + LEASE_MARGIN);
        let start_by = latest.max(claimed_at.plus(claimed_at.until(lease_until) / 2));
        let lane = self.by_webhook.entry(id.clone()).or_default();
        lane.waiting.push_back(Held { claim, start_by });
        self.held += 1;
        self.ready.push_back(id);
    }

    /// The next delivery to attempt: the first waiting one of a webhook below `cap`.
    fn next(&mut self, cap: usize) -> Option<Held> {
        while let Some(id) = self.ready.pop_front() {
            let Some(lane) = self.by_webhook.get_mut(&id) else {
                continue;
            };
            if lane.running >= cap {
                continue; // put back on the list when one of its attempts finishes
            }
            let Some(held) = lane.waiting.pop_front() else {
                continue;
            };
            lane.running += 1;
            self.running += 1;
            if !lane.waiting.is_empty() {
                self.ready.push_back(id);
            }
            return Some(held);
        }
        None
    }

    /// An attempt has finished (its result is on its way to the store). Returns whether the
    /// webhook's deliveries held ahead are running low.
    fn finished(&mut self, webhook: &WebhookId) -> bool {
        self.running = self.running.saturating_sub(1);
        self.held = self.held.saturating_sub(1);
        let Some(lane) = self.by_webhook.get_mut(webhook) else {
            return true;
        };
        lane.running = lane.running.saturating_sub(1);
        let low = lane.waiting.len() + lane.reserved < lane.running.max(1);
        if lane.held() == 0 {
            self.by_webhook.remove(webhook);
        } else if !lane.waiting.is_empty() {
            self.ready.push_back(webhook.clone());
        }
        low
    }

    /// Gives back a reservation of publishing's that was not handed over.
    fn unreserve(&mut self, webhook: &WebhookId) {
        let Some(lane) = self.by_webhook.get_mut(webhook) else {
            return;
        };
        lane.reserved = lane.reserved.saturating_sub(1);
        self.held = self.held.saturating_sub(1);
        if lane.held() == 0 {
            self.by_webhook.remove(webhook);
        }
    }

    /// Deliveries held per webhook, for the claim's per-webhook cap.
    fn held_by_webhook(&self) -> HashMap<WebhookId, usize> {
        self.by_webhook
            .iter()
            .map(|(id, lane)| (id.clone(), lane.held()))
            .collect()
    }

    /// Every waiting delivery, leaving only those being attempted.
    /// Room publishing has reserved and not yet handed over or given back.
    fn reserved(&self) -> usize {
        self.by_webhook.values().map(|l| l.reserved).sum()
    }

    fn drain_waiting(&mut self) -> Vec<Held> {
        let mut all = Vec::new();
        for lane in self.by_webhook.values_mut() {
            all.extend(lane.waiting.drain(..));
        }
        self.held -= all.len();
        self.ready.clear();
        all
    }
}

/// The lanes, shared by the scheduler and publishing's hand-overs.
struct Shared {
    lanes: Mutex<Lanes>,
    /// Rung when publishing hands deliveries over.
    handed: Notify,
    /// Most deliveries held per webhook, and in all.
    hold_per_webhook: usize,
    hold_total: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().expect("lanes lock")
    }
}

impl Intake for Shared {
    fn reserve(&self, webhook: &WebhookId) -> bool {
        let mut lanes = self.lock();
        if lanes.closed || lanes.held >= self.hold_total {
            return false;
        }
        let lane = lanes.by_webhook.entry(webhook.clone()).or_default();
        if lane.held() >= self.hold_per_webhook {
            return false;
        }
        lane.reserved += 1;
        lanes.held += 1;
        true
    }

    fn hand_over(
        &self,
        claims: Vec<ClaimedDelivery>,
        claimed_at: Timestamp,
        lease_until: Timestamp,
    ) {
        let mut lanes = self.lock();
        for claim in claims {
            lanes.unreserve(&claim.webhook.id);
            if lanes.closed {
                lanes.late.push(Release {
                    delivery_id: claim.delivery_id,
                    lease: claim.lease,
                });
            } else {
                lanes.hold(claim, claimed_at, lease_until);
            }
        }
        drop(lanes);
        self.handed.notify_one();
    }

    fn cancel(&self, webhooks: &[WebhookId]) {
        let mut lanes = self.lock();
        for webhook in webhooks {
            lanes.unreserve(webhook);
        }
    }
}

/// A worker's result, on its way to the recorder.
enum Finished {
    Attempted(AttemptRecord),
    Released(Release),
}

pub struct Dispatcher {
    store: Arc<dyn Queue>,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    waker: Waker,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Queue>,
        settings: DeliverySettings,
        dev: bool,
        node: String,
        waker: Waker,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let sender = Arc::new(Sender::new(&settings, dev, node)?);
        let shared = Arc::new(Shared {
            lanes: Mutex::default(),
            handed: Notify::new(),
            hold_per_webhook: settings.per_webhook_concurrency * HOLD_AHEAD,
            hold_total: settings.workers * HOLD_AHEAD,
        });
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
            tasks.spawn(work(
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
        let recorder = tokio::spawn(record(
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
        let mut releases = std::mem::take(&mut self.shared.lock().late);
        while let Ok(r) = aborted_rx.try_recv() {
            releases.push(r);
        }
        // Claims no worker took before the workers were stopped.
        while let Ok(claim) = job_rx.try_recv() {
            releases.push(Release {
                delivery_id: claim.delivery_id,
                lease: claim.lease,
            });
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
        let cap = s.per_webhook_concurrency;
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
            let starts = {
                let mut lanes = shared.lock();
                let mut starts = Vec::new();
                while lanes.running < s.workers {
                    let Some(held) = lanes.next(cap) else { break };
                    starts.push(held);
                }
                starts
            };
            for held in starts {
                if Timestamp::now() > held.start_by {
                    // Held too long: the lease could run out mid-attempt and another node take
                    // the delivery. Give it back; it is claimed again with a fresh lease.
                    let webhook = held.claim.webhook.id.clone();
                    let release = Release {
                        delivery_id: held.claim.delivery_id,
                        lease: held.claim.lease,
                    };
                    let _ = done.send(Finished::Released(release)).await;
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
                (
                    shared.hold_total.saturating_sub(lanes.held),
                    lanes.held_by_webhook(),
                )
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
        shared.lock().closed = true;
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
            let release = Release {
                delivery_id: held.claim.delivery_id,
                lease: held.claim.lease,
            };
            let _ = done.send(Finished::Released(release)).await;
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

/// Deliveries held per worker (and per unit of per-webhook concurrency): one being attempted,
/// seven claimed ahead, so that one claim feeds a busy webhook for a while (claims of 2 × drained
/// one webhook at one claim per 32 deliveries). A held delivery not started in time (see
/// [`Lanes::hold`]) is given back, so a slow endpoint's surplus returns to the queue.
const HOLD_AHEAD: usize = 8;

/// Longest wait at shutdown for hand-overs from publishes that were committing.
const LATE_HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// Time kept in hand, beyond the webhook's timeout, before a held lease runs out.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

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

/// One worker: takes claimed deliveries off the channel and attempts them, one at a time.
async fn work(
    jobs: async_channel::Receiver<ClaimedDelivery>,
    done: mpsc::Sender<Finished>,
    freed: mpsc::UnboundedSender<WebhookId>,
    aborted: mpsc::UnboundedSender<Release>,
    sender: Arc<Sender>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    while let Ok(claim) = jobs.recv().await {
        let webhook = claim.webhook.id.clone();
        if shutdown.is_cancelled() {
            let release = Release {
                delivery_id: claim.delivery_id,
                lease: claim.lease,
            };
            let _ = done.send(Finished::Released(release)).await;
            let _ = freed.send(webhook);
            continue;
        }
        // At debug level: the attempt's own events are debug ones, and at the default level an
        // info span would format its five ids on every attempt for nothing.
        let span = debug_span!("attempt", delivery_id = %claim.delivery_id, webhook_id = %webhook,
            account_id = %claim.event.account, attempt = claim.attempt_number);
        metrics.attempts_in_flight.increment(1.0);
        let started = std::time::Instant::now();
        let in_flight = InFlight {
            release: Some(Release {
                delivery_id: claim.delivery_id.clone(),
                lease: claim.lease.clone(),
            }),
            aborted: &aborted,
        };
        let report = sender.attempt(&claim).instrument(span.clone()).await;
        metrics.attempt_finished(&report.outcome, started.elapsed());
        metrics.attempts_in_flight.decrement(1.0);
        // 410 Gone: the receiver says the endpoint is no more; stop now and disable it.
        let gone = report.outcome.status_code() == Some(410);
        let next = if gone {
            NextStep::Failed
        } else {
            next_step(&claim.webhook.retry, claim.attempt_number, &report)
        };
        span.in_scope(|| {
            tracing::debug!(status = ?report.attempt.status_code, error_kind = ?report.attempt.error_kind,
                duration_ms = report.attempt.duration_ms, ?next, "attempt finished");
        });
        let record = AttemptRecord {
            delivery_id: claim.delivery_id,
            webhook_id: webhook.clone(),
            lease: claim.lease,
            attempt: report.attempt,
            next,
            gone,
        };
        let _ = done.send(Finished::Attempted(record)).await;
        // Only now: a worker stopped while its result waited for room would lose the result,
        // and then its lease must be given back.
        in_flight.finished();
        // The webhook's slot is free as soon as the attempt ends; the result is written apart.
        let _ = freed.send(webhook);
    }
}

/// An attempt under way: if its worker is stopped before it ends (at the end of the shutdown
/// grace), the delivery's lease goes to be given back.
struct InFlight<'a> {
    release: Option<Release>,
    aborted: &'a mpsc::UnboundedSender<Release>,
}

impl InFlight<'_> {
    fn finished(mut self) {
        self.release = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = self.aborted.send(release);
        }
    }
}

/// Decides what follows an attempt, by the webhook's policy.
fn next_step(
    policy: &RetryPolicy,
    attempt_number: u32,
    report: &sender::AttemptReport,
) -> NextStep {
    if report.outcome.is_success() {
        return NextStep::Succeeded;
    }
    match policy.next_delay(attempt_number, &report.outcome, report.retry_after) {
        Some(delay) => NextStep::RetryAt(Timestamp::now().plus(delay)),
        None => NextStep::Failed,
    }
}

/// Writes finished attempts in batches until every worker has gone.
async fn record(
    mut done: mpsc::Receiver<Finished>,
    store: Arc<dyn Queue>,
    waker: Waker,
    disable_after: Duration,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while done.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut records = Vec::new();
        let mut releases = Vec::new();
        for finished in batch.drain(..) {
            match finished {
                Finished::Attempted(r) => records.push(r),
                Finished::Released(r) => releases.push(r),
            }
        }
        let health = HealthPolicy {
            now: Timestamp::now(),
            disable_after,
        };
        if !records.is_empty() {
            write_with_retries("recording attempts", || {
                metrics.time_store(StoreOp::Record, store.record_attempts(&records, &health))
            })
            .await;
        }
        let mut retries = false;
        for r in &records {
            match r.next {
                NextStep::Succeeded => metrics.deliveries_succeeded.increment(1),
                NextStep::Failed => metrics.deliveries_failed.increment(1),
                NextStep::RetryAt(_) => retries = true,
            }
        }
        if !releases.is_empty() {
            write_with_retries("releasing leases", || {
                metrics.time_store(StoreOp::Release, store.release(&releases))
            })
            .await;
        }
        // A retry may be due at once, and a released delivery is: look at the queue again.
        if retries || !releases.is_empty() {
            waker.wake();
        }
    }
}

/// A failed write is tried again a few times; if the store stays down, the leases run out and
/// the deliveries are attempted again (at-least-once: nothing is lost, an attempt may repeat).
async fn write_with_retries<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<()>>,
{
    let mut delay = Duration::from_millis(100);
    for tries in 1..=8 {
        match write().await {
            Ok(()) => return,
            Err(e) => {
                error!(error = %e, tries, "{what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    error!(
        "{what}: giving up; the affected deliveries will be attempted again when their leases expire"
    );
}
