//! The recorder: writes the workers' results to the store in batches, apart from the attempts
//! themselves, and gives back the leases of deliveries not attempted.

use super::Waker;
use crate::domain::Timestamp;
use crate::store::operator::OperatorPolicy;
use crate::store::{AttemptRecord, HealthPolicy, NextStep, Queue, Release, StoreResult};
use crate::telemetry::{Metrics, StoreOp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::error;

/// Most finished attempts written in one transaction.
const RECORD_BATCH: usize = 256;

/// What the recorder's [`HealthPolicy`] holds besides the time.
#[derive(Clone, Copy, Debug)]
pub struct HealthSettings {
    pub disable_after: Duration,
    pub operator: Option<OperatorPolicy>,
    pub circuit_after: u32,
    pub probe_interval: Duration,
}

/// A worker's result (or the scheduler's give-back), on its way to the recorder.
pub enum Finished {
    Attempted(AttemptRecord),
    Released(Release),
}

/// Writes finished attempts in batches until every sender has gone.
pub async fn record(
    mut done: mpsc::Receiver<Finished>,
    store: Arc<dyn Queue>,
    waker: Waker,
    settings: HealthSettings,
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
            disable_after: settings.disable_after,
            operator: settings.operator,
            circuit_after: settings.circuit_after,
            probe_interval: settings.probe_interval,
        };
        if !records.is_empty() {
            // First attempts' results in one write; with retries among them, in writes of the
            // size the store asks, one after another: a webhook's failures in a row and its
            // pauses are kept in the order the results came.
            let per_write = match records.iter().any(|r| r.attempt.number > 1) {
                true => store.retry_records_per_write().max(1),
                false => records.len(),
            };
            for records in records.chunks(per_write) {
                write_with_retries("recording attempts", || {
                    metrics.time_store(StoreOp::Record, store.record_attempts(records, &health))
                })
                .await;
            }
        }
        let mut retries = false;
        // A spent delivery or a 410 may have published events (`webhook.disabled`, operator
        // events) for the dispatcher to send; a recovery's operator event waits for the next
        // look at the queue (`delivery.poll_interval` at most).
        let mut published = false;
        // An ordered delivery that ended lets the next of its key go: claim it now, not at
        // the next poll (docs/architecture.md, "Ordering").
        let mut key_freed = false;
        // The earliest retry of an ordered head: a claim that ran just before it fell due would
        // leave it to the poll, and its key waits for it.
        let mut head_retry: Option<Timestamp> = None;
        for r in &records {
            match r.next {
                NextStep::RetryAt(at) if r.ordered => {
                    head_retry = Some(head_retry.map_or(at, |h| h.min(at)));
                }
                _ => key_freed |= r.ordered,
            }
            match r.next {
                NextStep::Succeeded => metrics.deliveries_succeeded.increment(1),
                NextStep::Failed => {
                    metrics.deliveries_failed.increment(1);
                    published = true;
                }
                NextStep::RetryAt(_) => retries = true,
            }
            published |= r.gone;
        }
        if !releases.is_empty() {
            write_with_retries("releasing leases", || {
                metrics.time_store(StoreOp::Release, store.release(&releases))
            })
            .await;
        }
        // A retry may be due at once, and a released delivery is: look at the queue again.
        if retries || published || key_freed || !releases.is_empty() {
            waker.wake();
        }
        if let Some(at) = head_retry {
            let waker = waker.clone();
            let wait = Timestamp::now().until(at);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                waker.wake();
            });
        }
    }
}

/// A failed write is tried again a few times; if the store stays down, the leases run out and
/// the deliveries are attempted again (at-least-once: nothing is lost, an attempt may repeat).
async fn write_with_retries<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
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
