//! A worker: takes claimed deliveries off the job channel and attempts them one at a time
//! (sign and send through [`Sender`]), decides by the webhook's policy what follows, and passes
//! the result to the recorder. Deliveries of an account being erased are not attempted, and an
//! attempt of one under way when its account is marked is cut off ([`Erasures`]).

use super::lanes::{Freed, release_of};
use super::recorder::Finished;
use super::sender::{AttemptReport, Sender};
use crate::domain::flow::pause_asked;
use crate::domain::{RetryPolicy, Timestamp, WebhookOrdering};
use crate::erasure::Erasures;
use crate::store::{AttemptRecord, ClaimedDelivery, NextStep, Release};
use crate::telemetry::Metrics;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug_span};

/// One worker, until the job channel closes. Once `shutdown` fires, it gives back the leases
/// of the deliveries it takes instead of attempting them.
// Each argument is one of the channels and shared parts the dispatcher wires it to.
#[allow(clippy::too_many_arguments)]
pub async fn work(
    jobs: async_channel::Receiver<ClaimedDelivery>,
    done: mpsc::Sender<Finished>,
    freed: mpsc::UnboundedSender<Freed>,
    aborted: mpsc::UnboundedSender<Release>,
    sender: Arc<Sender>,
    erasures: Arc<Erasures>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    while let Ok(claim) = jobs.recv().await {
        let webhook = claim.webhook.id.clone();
        let slot = Freed::of(&claim);
        if shutdown.is_cancelled() || erasures.contains(&claim.event.account) {
            let _ = done.send(Finished::Released(release_of(claim))).await;
            let _ = freed.send(slot);
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
        // An attempt of an account being erased is cut off: nothing of it is recorded, and its
        // lease is given back, so the eraser can delete the delivery.
        let report = tokio::select! {
            report = sender.attempt(&claim).instrument(span.clone()) => Some(report),
            () = erasures.marked(&claim.event.account) => None,
        };
        metrics.attempts_in_flight.decrement(1.0);
        let Some(report) = report else {
            in_flight.finished();
            let _ = done.send(Finished::Released(release_of(claim))).await;
            let _ = freed.send(slot);
            continue;
        };
        metrics.attempt_finished(&report.outcome, started.elapsed());
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
        // A 429 or 503 with `Retry-After` pauses the whole webhook: the lanes hear of it now
        // (with the freed slot), the claims of every node from the recorded result.
        let pause_until = pause_asked(&report.outcome, report.retry_after)
            .map(|wait| Timestamp::now().plus(wait));
        let succeeded = next == NextStep::Succeeded;
        let record = AttemptRecord {
            ordered: claim.webhook.ordering != WebhookOrdering::None,
            delivery_id: claim.delivery_id,
            webhook_id: webhook.clone(),
            lease: claim.lease,
            attempt: report.attempt,
            next,
            gone,
            pause_until,
        };
        let _ = done.send(Finished::Attempted(record)).await;
        // Only now: a worker stopped while its result waited for room would lose the result,
        // and then its lease must be given back.
        in_flight.finished();
        // The webhook's slot is free as soon as the attempt ends; the result is written apart.
        let _ = freed.send(Freed {
            succeeded: Some(succeeded),
            pause_until,
            ..slot
        });
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

/// Decides what follows an attempt, by the webhook's policy (its jitter drawn here).
fn next_step(policy: &RetryPolicy, attempt_number: u32, report: &AttemptReport) -> NextStep {
    if report.outcome.is_success() {
        return NextStep::Succeeded;
    }
    let draw = rand::random::<f64>();
    match policy.next_delay(attempt_number, &report.outcome, report.retry_after, draw) {
        Some(delay) => NextStep::RetryAt(Timestamp::now().plus(delay)),
        None => NextStep::Failed,
    }
}
