//! Prometheus metrics of one server instance, served as text at `GET /metrics`.
//!
//! Each [`Herald`](crate::app::Herald) owns its own recorder, and every series is registered
//! once, up front, as a handle kept here: nothing goes through the process-wide `metrics`
//! recorder, so several servers in one process (the integration tests) never mix their counts.
//! The README's "Metrics" section lists the series; keep the two in step.

mod webhook_flows;

use crate::domain::{AttemptOutcome, Timestamp};
use crate::store::{QueueDepth, QueueGauges};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Histogram buckets, in seconds: from half a millisecond (a local receiver, a store write)
/// up to the longest attempt timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How attempts are counted: by status class or by the error kind that kept them from an answer.
pub const ATTEMPT_CLASSES: [&str; 10] = [
    "2xx", "3xx", "4xx", "5xx", "other", "timeout", "connect", "dns", "tls", "blocked",
];

/// What retention prunes, as counted by `herald_pruned_total{kind}`.
pub const PRUNED_KINDS: [&str; 10] = [
    "events",
    "deliveries",
    "attempts",
    "jobs",
    "tasks",
    "idempotency_keys",
    "stats_rows",
    "listeners",
    "portal_links",
    "portal_sessions",
];

/// What erasure deletes, as counted by `herald_erased_total{kind}`.
pub const ERASED_KINDS: [&str; 8] = [
    "deliveries",
    "attempts",
    "events",
    "jobs",
    "stats_rows",
    "webhooks",
    "api_keys",
    "accounts",
];

/// The store operations whose latency is measured.
#[derive(Clone, Copy, Debug)]
pub enum StoreOp {
    Publish,
    Claim,
    Record,
    Release,
    QueueDepth,
}

impl StoreOp {
    const ALL: [StoreOp; 5] = [
        Self::Publish,
        Self::Claim,
        Self::Record,
        Self::Release,
        Self::QueueDepth,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Claim => "claim",
            Self::Record => "record",
            Self::Release => "release",
            Self::QueueDepth => "queue_depth",
        }
    }
}

/// The registered series of one server.
pub struct Metrics {
    handle: PrometheusHandle,
    /// The per-webhook flow gauges, as text ([`webhook_flows`]).
    webhook_flows: std::sync::Mutex<String>,
    pub events_published: Counter,
    pub deliveries_created: Counter,
    pub deliveries_succeeded: Counter,
    pub deliveries_failed: Counter,
    attempts: [Counter; ATTEMPT_CLASSES.len()],
    pub attempt_duration: Histogram,
    pub attempts_in_flight: Gauge,
    pub queue_due: Gauge,
    pub queue_scheduled: Gauge,
    pub queue_lag: Gauge,
    pub requests_rate_limited: Counter,
    pruned: [Counter; PRUNED_KINDS.len()],
    erased: [Counter; ERASED_KINDS.len()],
    store_latency: [Histogram; StoreOp::ALL.len()],
}

static METADATA: Metadata<'static> = Metadata::new("herald", Level::INFO, Some(module_path!()));

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let r = &recorder;
        let counter = |name: &'static str, labels: Vec<Label>, help: &'static str| {
            r.describe_counter(name.into(), None, help.into());
            r.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let gauge = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            r.describe_gauge(name.into(), unit, help.into());
            r.register_gauge(&Key::from_name(name), &METADATA)
        };
        let histogram = |name: &'static str, labels: Vec<Label>, help: &'static str| {
            r.describe_histogram(name.into(), Some(Unit::Seconds), help.into());
            r.register_histogram(&Key::from_parts(name, labels), &METADATA)
        };
        let outcome = |o: &'static str| {
            counter(
                "herald_deliveries_completed_total",
                vec![Label::new("outcome", o)],
                "Deliveries that reached a final state, by outcome",
            )
        };
        let metrics = Self {
            events_published: counter(
                "herald_events_published_total",
                vec![],
                "Events accepted by POST /v1/events (idempotent replays not counted)",
            ),
            deliveries_created: counter(
                "herald_deliveries_created_total",
                vec![],
                "Deliveries enqueued: one per (event, matching webhook)",
            ),
            deliveries_succeeded: outcome("succeeded"),
            deliveries_failed: outcome("failed"),
            attempts: ATTEMPT_CLASSES.map(|class| {
                counter(
                    "herald_attempts_total",
                    vec![Label::new("class", class)],
                    "Delivery attempts, by status class or error kind",
                )
            }),
            attempt_duration: histogram(
                "herald_attempt_duration_seconds",
                vec![],
                "Time from sending an attempt to its outcome",
            ),
            attempts_in_flight: gauge(
                "herald_attempts_in_flight",
                None,
                "Attempts being made right now by this node",
            ),
            queue_due: gauge(
                "herald_queue_due",
                None,
                "Pending deliveries due now and not leased",
            ),
            queue_scheduled: gauge(
                "herald_queue_scheduled",
                None,
                "Pending deliveries waiting for a later retry time",
            ),
            queue_lag: gauge(
                "herald_queue_lag_seconds",
                Some(Unit::Seconds),
                "Age of the oldest due delivery (0 when none is due)",
            ),
            requests_rate_limited: counter(
                "herald_requests_rate_limited_total",
                vec![],
                "API requests refused with 429 because their credential was over its rate limit",
            ),
            pruned: PRUNED_KINDS.map(|kind| {
                counter(
                    "herald_pruned_total",
                    vec![Label::new("kind", kind)],
                    "Records deleted by retention, by kind (idempotency keys are freed, not deleted)",
                )
            }),
            erased: ERASED_KINDS.map(|kind| {
                counter(
                    "herald_erased_total",
                    vec![Label::new("kind", kind)],
                    "Records of erased accounts deleted, by kind",
                )
            }),
            store_latency: StoreOp::ALL.map(|op| {
                histogram(
                    "herald_store_operation_duration_seconds",
                    vec![Label::new("op", op.as_str())],
                    "Latency of store operations, by operation",
                )
            }),
            handle,
            webhook_flows: std::sync::Mutex::default(),
        };
        // The registry lives on in `handle` and the registered series; the recorder was only
        // the door they were registered through.
        drop(recorder);
        metrics
    }

    /// Counts one finished attempt and its duration.
    pub fn attempt_finished(&self, outcome: &AttemptOutcome, took: Duration) {
        self.attempts[class_index(outcome)].increment(1);
        self.attempt_duration.record(took.as_secs_f64());
    }

    /// Counts `n` records of `kind` (one of [`ERASED_KINDS`]) deleted by erasure.
    pub fn erased(&self, kind: &str, n: u64) {
        let i = ERASED_KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("a listed kind");
        self.erased[i].increment(n);
    }

    /// Counts `n` records of `kind` (one of [`PRUNED_KINDS`]) pruned by retention.
    pub fn pruned(&self, kind: &str, n: u64) {
        let i = PRUNED_KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("a listed kind");
        self.pruned[i].increment(n);
    }

    pub fn store_op(&self, op: StoreOp, took: Duration) {
        self.store_latency[op as usize].record(took.as_secs_f64());
    }

    /// Times `f` as store operation `op`.
    pub async fn time_store<T>(&self, op: StoreOp, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.store_op(op, started.elapsed());
        out
    }

    pub fn set_queue(&self, depth: &QueueDepth, now: Timestamp) {
        self.queue_due.set(depth.due as f64);
        self.queue_scheduled.set(depth.scheduled as f64);
        let lag = depth.oldest_due.map_or(Duration::ZERO, |at| at.until(now));
        self.queue_lag.set(lag.as_secs_f64());
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        text.push_str(&self.webhook_flows.lock().expect("flows lock"));
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn class_index(outcome: &AttemptOutcome) -> usize {
    let class = match outcome {
        AttemptOutcome::Delivered { .. } => "2xx",
        AttemptOutcome::Status { code } => match code {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        },
        AttemptOutcome::Timeout => "timeout",
        AttemptOutcome::Connect => "connect",
        AttemptOutcome::Dns => "dns",
        AttemptOutcome::Tls => "tls",
        AttemptOutcome::Blocked => "blocked",
    };
    ATTEMPT_CLASSES
        .iter()
        .position(|c| *c == class)
        .expect("every class is listed")
}

/// Refreshes the queue gauges from the store until `shutdown` fires. The query counts pending
/// rows, so on a large backlog it is not free: the pause after each refresh is at least
/// `every` and at least twenty times what the last query took.
pub async fn refresh_queue_gauges(
    metrics: std::sync::Arc<Metrics>,
    store: std::sync::Arc<dyn QueueGauges>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let now = Timestamp::now();
        let started = Instant::now();
        // A large queue takes a while to count; shutdown does not wait for it.
        let result = tokio::select! {
            result = store.queue_depth(now) => result,
            _ = shutdown.cancelled() => break,
        };
        let took = started.elapsed();
        metrics.store_op(StoreOp::QueueDepth, took);
        match result {
            Ok(depth) => {
                metrics.set_queue(&depth, now);
                warned = false;
            }
            Err(e) if !warned => {
                warn!(error = %e, "reading the queue depth for /metrics failed");
                warned = true;
            }
            Err(_) => {}
        }
        let flows = tokio::select! {
            result = store.busiest_webhooks(now, webhook_flows::MAX_WEBHOOKS) => result,
            _ = shutdown.cancelled() => break,
        };
        match flows {
            Ok(flows) => {
                *metrics.webhook_flows.lock().expect("flows lock") =
                    webhook_flows::render(&flows, now);
            }
            Err(e) if !warned => {
                warn!(error = %e, "reading the webhooks' flow for /metrics failed");
                warned = true;
            }
            Err(_) => {}
        }
        let took = started.elapsed();
        metrics.handle.run_upkeep();
        tokio::select! {
            _ = tokio::time::sleep(every.max(took * 20)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_counts_on_its_own_registry() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.events_published.increment(3);
        a.attempt_finished(
            &AttemptOutcome::Status { code: 503 },
            Duration::from_millis(2),
        );
        a.attempt_finished(&AttemptOutcome::Timeout, Duration::from_secs(1));
        let text = a.render();
        assert!(text.contains("herald_events_published_total 3"), "{text}");
        assert!(
            text.contains("herald_attempts_total{class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herald_attempts_total{class=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herald_attempt_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            b.render().contains("herald_events_published_total 0"),
            "another instance is untouched"
        );
    }
}
