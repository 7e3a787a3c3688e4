//! The janitor: prunes what the retention settings no longer keep, in the background.
//!
//! A pass runs every `retention.interval` (the first one soon after start, so frequent restarts
//! do not postpone it for ever). It deletes old events whose deliveries have all finished, with
//! their deliveries and attempts; finished jobs; idempotency keys past the idempotency
//! window; endpoint figures older than they are kept (`store::stats::KEPT`); and listener
//! webhooks (`herald listen`) whose lease has lapsed, because the node holding their stream
//! died or their CLI did not come back; and the portal's sessions once expired, its links a day
//! after. Work goes in small batches, one short transaction each, with a pause after every
//! batch as long as the batch took, so publishes and the dispatcher's writes are never held up
//! by more than one batch.

use crate::config::Settings;
use crate::domain::Timestamp;
use crate::store::{PortalTokens, PruneEvents, PrunedEvents, Retention, StoreResult};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The first pass runs this long after start at the latest.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Expired portal links are kept this long after they expired, so a late opening still says
/// "expired" rather than "not valid"; sessions go as soon as they expire.
const EXPIRED_LINKS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// The shortest pause between two batches.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub jobs: u64,
    pub tasks: u64,
    pub idempotency_keys: u64,
    pub stats_rows: u64,
    pub listeners: u64,
    pub portal_links: u64,
    pub portal_sessions: u64,
}

impl Pruned {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

pub struct Janitor {
    store: Arc<dyn Retention>,
    metrics: Arc<Metrics>,
    events_age: Duration,
    jobs_age: Duration,
    idempotency_window: Duration,
    /// Deliveries are left alone this long after they last changed, whatever the retention,
    /// so an attempt still in flight (its delivery cancelled meanwhile) can be recorded.
    lease: Duration,
    interval: Duration,
    batch: usize,
}

impl Janitor {
    pub fn new(store: Arc<dyn Retention>, settings: &Settings, metrics: Arc<Metrics>) -> Self {
        let r = &settings.retention;
        Self {
            store,
            metrics,
            events_age: r.events.0,
            jobs_age: r.jobs.0,
            idempotency_window: settings.idempotency_window.0,
            lease: settings.delivery.lease.0,
            interval: r.interval.0,
            batch: r.batch,
        }
    }

    /// Runs a pass every interval until `shutdown` fires; a pass in progress stops after the
    /// batch in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut wait = self.interval.min(FIRST_PASS_AFTER);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
            wait = self.interval;
            let started = Instant::now();
            match self.pass(&shutdown).await {
                Ok(p) if !p.is_empty() => info!(
                    events = p.events,
                    deliveries = p.deliveries,
                    attempts = p.attempts,
                    jobs = p.jobs,
                    tasks = p.tasks,
                    idempotency_keys = p.idempotency_keys,
                    listeners = p.listeners,
                    portal_links = p.portal_links,
                    portal_sessions = p.portal_sessions,
                    took_ms = started.elapsed().as_millis() as u64,
                    "retention: pruned"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "retention pass failed; trying again next interval"),
            }
        }
    }

    /// One pass over everything retention covers.
    pub async fn pass(&self, shutdown: &CancellationToken) -> StoreResult<Pruned> {
        let mut total = Pruned::default();
        let now = Timestamp::now();
        if !self.events_age.is_zero() {
            let mut batch = PruneEvents {
                created_before: now.minus(self.events_age),
                finished_before: now.minus(self.events_age.max(self.lease)),
                after: None,
                limit: self.batch,
            };
            loop {
                let started = Instant::now();
                let PrunedEvents {
                    events,
                    deliveries,
                    attempts,
                    next,
                } = self.store.prune_events(&batch).await?;
                self.metrics.pruned("events", events);
                self.metrics.pruned("deliveries", deliveries);
                self.metrics.pruned("attempts", attempts);
                total.events += events;
                total.deliveries += deliveries;
                total.attempts += attempts;
                let Some(next) = next else { break };
                batch.after = Some(next);
                if !pause(started.elapsed(), shutdown).await {
                    return Ok(total);
                }
            }
        }
        if !self.jobs_age.is_zero() {
            let before = now.minus(self.jobs_age);
            total.jobs = self
                .in_batches("jobs", shutdown, || {
                    self.store.prune_jobs(before, self.batch)
                })
                .await?;
            // Finished background tasks (recover, bulk retry) are kept as long as finished jobs.
            total.tasks = self
                .in_batches("tasks", shutdown, || {
                    self.store.prune_tasks(before, self.batch)
                })
                .await?;
        }
        let before = now.minus(self.idempotency_window);
        total.idempotency_keys = self
            .in_batches("idempotency_keys", shutdown, || {
                self.store.forget_idempotency_keys(before, self.batch)
            })
            .await?;
        let before = now.minus(crate::store::stats::KEPT);
        total.stats_rows = self
            .in_batches("stats_rows", shutdown, || {
                self.store.prune_stats(before, self.batch)
            })
            .await?;
        total.listeners = self
            .in_batches("listeners", shutdown, || {
                self.store.remove_lapsed_listeners(now, self.batch)
            })
            .await?;
        for tokens in PortalTokens::ALL {
            let before = match tokens {
                PortalTokens::Links => now.minus(EXPIRED_LINKS_KEPT),
                PortalTokens::Sessions => now,
            };
            let n = self
                .in_batches(tokens.table(), shutdown, || {
                    self.store.prune_portal(tokens, before, self.batch)
                })
                .await?;
            match tokens {
                PortalTokens::Links => total.portal_links = n,
                PortalTokens::Sessions => total.portal_sessions = n,
            }
        }
        Ok(total)
    }

    /// Repeats `batch` while it fills up, pausing between batches; returns the sum.
    async fn in_batches<F, Fut>(
        &self,
        kind: &'static str,
        shutdown: &CancellationToken,
        mut batch: F,
    ) -> StoreResult<u64>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<u64>>,
    {
        let mut total = 0;
        loop {
            let started = Instant::now();
            let n = batch().await?;
            self.metrics.pruned(kind, n);
            total += n;
            if n < self.batch as u64 || !pause(started.elapsed(), shutdown).await {
                return Ok(total);
            }
        }
    }
}

/// Gives the store to everyone else for as long as the last batch had it; false on shutdown.
pub(crate) async fn pause(took: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(took.max(MIN_PAUSE)) => true,
        _ = shutdown.cancelled() => false,
    }
}
