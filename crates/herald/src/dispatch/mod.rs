//! The dispatcher: claim due deliveries → sign and send → record the outcome.
//!
//! Three roles share one shutdown token:
//! - the scheduler leases due deliveries in batches while workers are free, within a
//!   per-webhook cap so one slow endpoint cannot take every worker (no head-of-line blocking);
//! - a fixed pool of workers, each looping over the job channel, makes the attempts;
//! - the recorder writes finished attempts in batches and wakes the scheduler.
//!
//! The queue itself stays in the store; memory holds at most `workers` claimed deliveries.

mod message;
pub mod sender;

use crate::config::DeliverySettings;
use crate::domain::{RetryPolicy, Timestamp, WebhookId};
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DynStore, HealthPolicy, NextStep, Release,
};
use crate::telemetry::{Metrics, StoreOp};
use sender::Sender;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

/// Most finished attempts written in one transaction.
const RECORD_BATCH: usize = 256;

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

/// Attempts claimed by this node and not yet recorded, per webhook.
#[derive(Default)]
struct InFlight {
    by_webhook: HashMap<WebhookId, usize>,
    total: usize,
}

impl InFlight {
    fn add(&mut self, webhook: &WebhookId) {
        *self.by_webhook.entry(webhook.clone()).or_default() += 1;
        self.total += 1;
    }

    fn remove(&mut self, webhook: &WebhookId) {
        if let Some(n) = self.by_webhook.get_mut(webhook) {
            *n -= 1;
            if *n == 0 {
                self.by_webhook.remove(webhook);
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// A worker's result, on its way to the recorder.
enum Finished {
    Attempted(AttemptRecord, WebhookId),
    Released(Release, WebhookId),
}

pub struct Dispatcher {
    store: DynStore,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    waker: Waker,
    in_flight: Arc<Mutex<InFlight>>,
    metrics: Arc<Metrics>,
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
        Ok(Self {
            store,
            sender,
            settings,
            waker,
            in_flight: Arc::default(),
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
        let (job_tx, job_rx) = async_channel::bounded::<ClaimedDelivery>(workers);
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(work(
                job_rx.clone(),
                done_tx.clone(),
                self.sender.clone(),
                shutdown.clone(),
                self.metrics.clone(),
            ));
        }
        drop(done_tx);
        let recorder = tokio::spawn(record(
            done_rx,
            self.store.clone(),
            self.in_flight.clone(),
            self.waker.clone(),
            self.settings.disable_after.0,
            self.metrics.clone(),
        ));

        self.schedule(&job_tx, &shutdown).await;
        job_tx.close();

        let grace = self.settings.shutdown_grace.0;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "attempts still in flight at the end of the shutdown grace; their leases will expire"
            );
            tasks.abort_all();
        }
        if let Err(e) = recorder.await {
            error!(error = %e, "the attempt recorder stopped abnormally");
        }
    }

    async fn schedule(
        &self,
        jobs: &async_channel::Sender<ClaimedDelivery>,
        shutdown: &CancellationToken,
    ) {
        let s = &self.settings;
        while !shutdown.is_cancelled() {
            let (snapshot, total) = {
                let f = self.in_flight.lock().expect("in-flight lock");
                (f.by_webhook.clone(), f.total)
            };
            let want = s.workers.saturating_sub(total).min(s.claim_batch);
            let now = Timestamp::now();
            if want > 0 {
                let request = ClaimRequest {
                    now,
                    lease_until: now.plus(s.lease.0),
                    limit: want,
                    per_webhook_cap: s.per_webhook_concurrency,
                    in_flight: snapshot,
                };
                let claimed = self
                    .metrics
                    .time_store(StoreOp::Claim, self.store.claim_due(&request))
                    .await;
                match claimed {
                    Ok(claims) => {
                        let got = claims.len();
                        for claim in claims {
                            self.in_flight
                                .lock()
                                .expect("in-flight lock")
                                .add(&claim.webhook.id);
                            if jobs.send(claim).await.is_err() {
                                return;
                            }
                        }
                        if got == want {
                            continue; // there may be more due right now
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "claiming due deliveries failed; retrying shortly");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        continue;
                    }
                }
            }
            let wait = self.idle_wait(want, now).await;
            tokio::select! {
                _ = self.waker.woken() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// How long to sleep when nothing more can be claimed now. With free workers, until the next
    /// delivery falls due; otherwise (all workers busy, or the due work is capped) until a
    /// recorded attempt wakes us, bounded by the poll interval.
    async fn idle_wait(&self, free: usize, now: Timestamp) -> Duration {
        let poll = self.settings.poll_interval.0;
        if free == 0 {
            return poll;
        }
        match self.store.next_due_at(self.settings.workers + 1).await {
            Ok(Some(at)) if at > now => now.until(at).min(poll),
            Ok(_) => poll,
            Err(e) => {
                error!(error = %e, "reading the next due time failed");
                poll
            }
        }
    }
}

/// One worker: takes claimed deliveries off the channel and attempts them, one at a time.
async fn work(
    jobs: async_channel::Receiver<ClaimedDelivery>,
    done: mpsc::UnboundedSender<Finished>,
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
            let _ = done.send(Finished::Released(release, webhook));
            continue;
        }
        let span = info_span!("attempt", delivery_id = %claim.delivery_id, webhook_id = %webhook,
            account_id = %claim.event.account, attempt = claim.attempt_number);
        metrics.attempts_in_flight.increment(1.0);
        let started = std::time::Instant::now();
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
        let _ = done.send(Finished::Attempted(record, webhook));
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
    mut done: mpsc::UnboundedReceiver<Finished>,
    store: DynStore,
    in_flight: Arc<Mutex<InFlight>>,
    waker: Waker,
    disable_after: Duration,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while done.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut records = Vec::new();
        let mut releases = Vec::new();
        let mut webhooks = Vec::with_capacity(batch.len());
        for finished in batch.drain(..) {
            match finished {
                Finished::Attempted(r, w) => {
                    records.push(r);
                    webhooks.push(w);
                }
                Finished::Released(r, w) => {
                    releases.push(r);
                    webhooks.push(w);
                }
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
        for r in &records {
            match r.next {
                NextStep::Succeeded => metrics.deliveries_succeeded.increment(1),
                NextStep::Failed => metrics.deliveries_failed.increment(1),
                NextStep::RetryAt(_) => {}
            }
        }
        if !releases.is_empty() {
            write_with_retries("releasing leases", || {
                metrics.time_store(StoreOp::Release, store.release(&releases))
            })
            .await;
        }
        {
            let mut f = in_flight.lock().expect("in-flight lock");
            for w in &webhooks {
                f.remove(w);
            }
        }
        waker.wake();
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
