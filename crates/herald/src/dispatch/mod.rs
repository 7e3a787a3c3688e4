//! The dispatcher: claim due deliveries → sign and send → record the outcome.
//!
//! Three roles share one shutdown token:
//! - the scheduler (`scheduler.rs`) claims due deliveries in batches and holds them in the
//!   lanes (`lanes.rs`), one per webhook, a few ahead of the per-webhook cap, so one slow
//!   endpoint cannot take every worker and a worker that finishes goes on with the webhook's
//!   next delivery without waiting for the store; publishing hands new deliveries straight to
//!   the lanes too;
//! - a fixed pool of workers (`worker.rs`), each looping over the job channel, makes the
//!   attempts ([`sender`] sends one, `message.rs` is what goes on the wire);
//! - the recorder (`recorder.rs`) writes finished attempts in batches, apart from the attempts
//!   themselves.
//!
//! A listener webhook's attempts (`herald listen`) go down the stream this node holds for it
//! ([`listeners`]) instead of over HTTP.
//!
//! This module wires them together and runs the shutdown. The queue itself stays in the store;
//! memory holds at most `HOLD_AHEAD × workers` claimed deliveries.

mod lanes;
pub mod listeners;
pub(crate) mod message;
mod recorder;
mod scheduler;
pub mod sender;
mod worker;

use crate::config::DeliverySettings;
use crate::erasure::Erasures;
use crate::store::operator::OperatorPolicy;
use crate::store::{ClaimedDelivery, Queue, Release};
use crate::telemetry::Metrics;
use lanes::{Lanes, News, SharedLanes, release_of};
use recorder::{Finished, HealthSettings};
use scheduler::Scheduler;
use sender::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Results that may wait to be written, per worker (see [`Dispatcher::run`]).
pub const RESULTS_PER_WORKER: usize = 4;

/// Longest wait at shutdown for hand-overs from publishes that were committing.
const LATE_HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// Longest wait at shutdown for the store to take back the leases not finished.
const GIVE_BACK_TIMEOUT: Duration = Duration::from_secs(5);

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
    node: String,
    store: Arc<dyn Queue>,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    waker: Waker,
    metrics: Arc<Metrics>,
    lanes: Arc<SharedLanes>,
    /// Set when `[operator]` is: the recorder writes operator events with the results.
    operator: Option<OperatorPolicy>,
    erasures: Arc<Erasures>,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)] // the parts app.rs builds once and shares
    pub fn new(
        store: Arc<dyn Queue>,
        settings: DeliverySettings,
        dev: bool,
        node: String,
        waker: Waker,
        metrics: Arc<Metrics>,
        listeners: Arc<listeners::ListenerHub>,
        erasures: Arc<Erasures>,
    ) -> anyhow::Result<Self> {
        let sender = Arc::new(Sender::new(&settings, dev, node.clone(), listeners)?);
        let lanes = Lanes::new(
            settings.workers,
            settings.per_webhook_concurrency,
            settings.fresh_reserve(),
        )
        .with_circuit(settings.circuit_after, settings.probe_interval.0)
        .with_retry_concurrency(settings.retry_concurrency())
        .with_retry_turns(settings.retry_turns());
        Ok(Self {
            node,
            lanes: Arc::new(SharedLanes::new(lanes)),
            store,
            sender,
            settings,
            waker,
            metrics,
            operator: None,
            erasures,
        })
    }

    /// Has the recorder write the operator events the results cause ([`OperatorPolicy`]).
    pub fn with_operator(mut self, operator: Option<OperatorPolicy>) -> Self {
        self.operator = operator;
        self
    }

    /// Runs until `shutdown` fires, then stops claiming, lets attempts in hand finish (up to the
    /// shutdown grace), gives back leases it has not started, and writes every result.
    pub async fn run(self, shutdown: CancellationToken) {
        let workers = self.settings.workers;
        let waker = self.waker.clone();
        self.store
            .watch_for_work(Arc::new(move || waker.wake()), shutdown.clone());
        self.store
            .set_intake(self.lanes.clone(), self.settings.lease.0);
        let (job_tx, job_rx) = async_channel::bounded::<ClaimedDelivery>(workers);
        // Bounded: a worker waits when results queue up, so at most `RESULTS_PER_WORKER ×
        // workers` results wait to be written, beside the batch being written (which bounds
        // what a crash repeats). Room for more than one result per worker, so that workers do
        // not stall behind a commit: the recorder writes one batch at a time, and while it
        // waits for that commit the next batch gathers here (docs/BENCHMARKS.md has the
        // measurements).
        let (done_tx, done_rx) = mpsc::channel::<Finished>(workers * RESULTS_PER_WORKER);
        let (news_tx, mut news_rx) = mpsc::unbounded_channel::<News>();
        let (aborted_tx, mut aborted_rx) = mpsc::unbounded_channel::<Release>();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(worker::work(
                job_rx.clone(),
                done_tx.clone(),
                news_tx.clone(),
                aborted_tx.clone(),
                self.sender.clone(),
                self.erasures.clone(),
                shutdown.clone(),
                self.metrics.clone(),
            ));
        }
        drop(news_tx);
        let recorder = tokio::spawn(recorder::record(
            done_rx,
            self.store.clone(),
            self.waker.clone(),
            HealthSettings {
                disable_after: self.settings.disable_after.0,
                operator: self.operator,
                circuit_after: self.settings.circuit_after,
                probe_interval: self.settings.probe_interval.0,
            },
            self.metrics.clone(),
        ));

        let scheduler = Scheduler {
            settings: &self.settings,
            store: &self.store,
            metrics: &self.metrics,
            lanes: &self.lanes,
            waker: &self.waker,
            node: &self.node,
        };
        scheduler
            .run(&job_tx, &mut news_rx, &done_tx, &shutdown)
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
        while self.lanes.lock().reserved() > 0 && tokio::time::Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), self.lanes.handed.notified()).await;
        }
        let mut releases = self.lanes.lock().take_late();
        while let Ok(r) = aborted_rx.try_recv() {
            releases.push(r);
        }
        // Claims no worker took before the workers were stopped.
        while let Ok(claim) = job_rx.try_recv() {
            releases.push(release_of(claim));
        }
        self.give_back(releases).await;
    }

    /// Gives back the leases of deliveries not finished, at shutdown.
    async fn give_back(&self, releases: Vec<Release>) {
        if releases.is_empty() {
            return;
        }
        let n = releases.len();
        let written = tokio::time::timeout(GIVE_BACK_TIMEOUT, self.store.release(&releases));
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
