//! A worker: takes claimed deliveries off the job channel and attempts them one at a time
//! (sign and send through [`Sender`]), decides by the webhook's policy what follows, and passes
//! the result to the recorder. Deliveries of an account being erased are not attempted, and an
//! attempt of one under way when its account is marked is cut off ([`Erasures`]).

use super::lanes::{Freed, News, RETRY_TURN, release_of};
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
    news: mpsc::UnboundedSender<News>,
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
            let _ = news.send(News::Over(slot));
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
        let mut turn = slot.retry;
        let report = tokio::select! {
            report = within_turn(sender.attempt(&claim).instrument(span.clone()), &mut turn, &news) => Some(report),
            () = erasures.marked(&claim.event.account) => None,
        };
        let slot = Freed { turn, ..slot };
        metrics.attempts_in_flight.decrement(1.0);
        let Some(report) = report else {
            in_flight.finished();
            let _ = done.send(Finished::Released(release_of(claim))).await;
            let _ = news.send(News::Over(slot));
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
        let _ = news.send(News::Over(Freed {
            succeeded: Some(succeeded),
            pause_until,
            ..slot
        }));
    }
}

/// Runs an attempt; one holding a retry turn (`turn`) gives it back once the attempt has run
/// for [`RETRY_TURN`] without ending, and `turn` says whether it still holds it.
async fn within_turn<T>(
    attempt: impl Future<Output = T>,
    turn: &mut bool,
    news: &mpsc::UnboundedSender<News>,
) -> T {
    let mut attempt = std::pin::pin!(attempt);
    if *turn {
        tokio::select! {
            out = &mut attempt => return out,
            () = tokio::time::sleep(RETRY_TURN) => {
                *turn = false;
                let _ = news.send(News::Waiting);
            }
        }
    }
    attempt.await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retry_gives_its_turn_back_only_when_it_outlasts_it() {
        let (news, mut heard) = mpsc::unbounded_channel();
        // Over at once: it keeps its turn, and nothing is said.
        let mut turn = true;
        assert_eq!(within_turn(async { 1 }, &mut turn, &news).await, 1);
        assert!(turn);
        assert!(heard.try_recv().is_err());
        // Still waiting on its endpoint when the turn is up: it says so and runs on. The
        // attempt ends only once that has been said.
        let (said_tx, said) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            let news = heard.recv().await;
            let _ = said_tx.send(());
            (news, heard)
        });
        let attempt = async {
            let _ = said.await;
            2
        };
        assert_eq!(within_turn(attempt, &mut turn, &news).await, 2);
        assert!(!turn, "the turn was given back");
        let (news_heard, mut heard) = relay.await.expect("relay");
        assert_eq!(news_heard, Some(News::Waiting));
        // An attempt holding no turn (a first attempt) says nothing however long it takes.
        let mut no_turn = false;
        within_turn(tokio::time::sleep(RETRY_TURN * 3), &mut no_turn, &news).await;
        assert!(heard.try_recv().is_err());
    }
}
