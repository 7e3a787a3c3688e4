//! Endpoint health figures: each batch of attempt results is folded into one row per webhook
//! and minute (counts by outcome class, a latency histogram, the last error), added to the
//! stored row in the same transaction as the results. `GET /v1/webhooks/{id}/stats` sums the
//! rows of its window, so reading a day costs at most 1,440 small rows whatever the traffic,
//! and recording costs one upsert per webhook per batch.

use super::AttemptRecord;
use crate::domain::Timestamp;
use std::collections::HashMap;

/// Upper bounds (ms) of the latency histogram's buckets; a last bucket holds the slower ones.
pub const LATENCY_BOUNDS_MS: [u64; 11] =
    [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// How long the rows are kept, and so the longest window.
pub const KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
const MINUTE_MS: i64 = 60_000;

/// Failed attempts by what went wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureClasses {
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// A status that is neither success nor 4xx/5xx (1xx, 3xx: redirects are not followed).
    pub status_other: u64,
    pub timeout: u64,
    /// Connection refused or reset, DNS, TLS.
    pub connection: u64,
    /// Refused by Herald's own egress policy.
    pub blocked: u64,
}

/// Attempt figures over some span: a minute's row, or a window's sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptStats {
    pub attempts: u64,
    pub successes: u64,
    pub failures: FailureClasses,
    /// Attempts per latency bucket ([`LATENCY_BOUNDS_MS`], then slower).
    pub latency: [u64; BUCKETS],
    /// The latest failure: when it started, and what it was.
    pub last_error: Option<(Timestamp, String)>,
}

impl AttemptStats {
    fn add_attempt(&mut self, r: &AttemptRecord) {
        let a = &r.attempt;
        self.attempts += 1;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| a.duration_ms <= *b)
            .unwrap_or(BUCKETS - 1);
        self.latency[bucket] += 1;
        if a.status_code.is_some_and(|c| (200..300).contains(&c)) {
            self.successes += 1;
            return;
        }
        let f = &mut self.failures;
        match (a.status_code, a.error_kind) {
            (Some(c), _) if (400..500).contains(&c) => f.status_4xx += 1,
            (Some(c), _) if (500..600).contains(&c) => f.status_5xx += 1,
            (Some(_), _) => f.status_other += 1,
            (None, Some(crate::domain::ErrorKind::Timeout)) => f.timeout += 1,
            (None, Some(crate::domain::ErrorKind::Blocked)) => f.blocked += 1,
            (None, _) => f.connection += 1,
        }
        let what = match (a.status_code, &a.error) {
            (Some(c), _) => format!("HTTP {c}"),
            (None, Some(e)) => e.clone(),
            (None, None) => a.error_kind.map_or("failed", |k| k.as_str()).to_owned(),
        };
        self.note_error(a.started_at, what);
    }

    fn note_error(&mut self, at: Timestamp, what: String) {
        if self.last_error.as_ref().is_none_or(|(t, _)| at >= *t) {
            self.last_error = Some((at, what));
        }
    }

    /// The figures of several spans together.
    pub fn sum(spans: impl IntoIterator<Item = AttemptStats>) -> Self {
        spans.into_iter().fold(Self::default(), |mut all, s| {
            all.add(s);
            all
        })
    }

    /// Adds another span's figures to these.
    pub fn add(&mut self, other: AttemptStats) {
        self.attempts += other.attempts;
        self.successes += other.successes;
        let (f, o) = (&mut self.failures, other.failures);
        f.status_4xx += o.status_4xx;
        f.status_5xx += o.status_5xx;
        f.status_other += o.status_other;
        f.timeout += o.timeout;
        f.connection += o.connection;
        f.blocked += o.blocked;
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine += theirs;
        }
        if let Some((at, what)) = other.last_error {
            self.note_error(at, what);
        }
    }

    pub fn failed(&self) -> u64 {
        self.attempts - self.successes
    }

    /// Successes over attempts; `None` without attempts.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.successes as f64 / self.attempts as f64)
    }

    /// The latency at or under which a share `q` of the attempts ended, as the upper bound of
    /// its histogram bucket (`None` past the last bound, or without attempts).
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        if self.attempts == 0 {
            return None;
        }
        let rank = ((self.attempts as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

/// A batch of results as one row per (webhook, minute), each to add to the stored one.
pub(crate) fn minute_rows(records: &[AttemptRecord]) -> Vec<(String, i64, AttemptStats)> {
    let mut rows: HashMap<(&str, i64), AttemptStats> = HashMap::new();
    for r in records {
        let minute = r.attempt.started_at.millis().div_euclid(MINUTE_MS) * MINUTE_MS;
        rows.entry((r.webhook_id.as_str(), minute))
            .or_default()
            .add_attempt(r);
    }
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|((id, minute), s)| (id.to_owned(), minute, s))
        .collect();
    // One order on every node, so concurrent upserts on PostgreSQL take row locks in it.
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

/// The first minute a window of `window` ending `now` covers.
pub fn window_start(now: Timestamp, window: std::time::Duration) -> Timestamp {
    let since = now.minus(window).millis();
    Timestamp::from_millis(since.div_euclid(MINUTE_MS) * MINUTE_MS)
}

/// The stored row's columns after `webhook_id, minute`, in the order [`values`] gives them.
pub(crate) const STAT_COLUMNS: &str = "attempts, successes, status_4xx, status_5xx, status_other, timeouts, connection, blocked, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, last_error, last_error_at";

/// How an upsert adds a batch's row to the stored one (the same in both dialects).
pub(crate) const ADD_TO_STORED: &str = "ON CONFLICT (webhook_id, minute) DO UPDATE SET
    attempts = webhook_stats.attempts + excluded.attempts,
    successes = webhook_stats.successes + excluded.successes,
    status_4xx = webhook_stats.status_4xx + excluded.status_4xx,
    status_5xx = webhook_stats.status_5xx + excluded.status_5xx,
    status_other = webhook_stats.status_other + excluded.status_other,
    timeouts = webhook_stats.timeouts + excluded.timeouts,
    connection = webhook_stats.connection + excluded.connection,
    blocked = webhook_stats.blocked + excluded.blocked,
    l0 = webhook_stats.l0 + excluded.l0, l1 = webhook_stats.l1 + excluded.l1,
    l2 = webhook_stats.l2 + excluded.l2, l3 = webhook_stats.l3 + excluded.l3,
    l4 = webhook_stats.l4 + excluded.l4, l5 = webhook_stats.l5 + excluded.l5,
    l6 = webhook_stats.l6 + excluded.l6, l7 = webhook_stats.l7 + excluded.l7,
    l8 = webhook_stats.l8 + excluded.l8, l9 = webhook_stats.l9 + excluded.l9,
    l10 = webhook_stats.l10 + excluded.l10, l11 = webhook_stats.l11 + excluded.l11,
    last_error = CASE WHEN excluded.last_error_at >= COALESCE(webhook_stats.last_error_at, excluded.last_error_at)
                      THEN COALESCE(excluded.last_error, webhook_stats.last_error) ELSE webhook_stats.last_error END,
    last_error_at = CASE WHEN excluded.last_error_at >= COALESCE(webhook_stats.last_error_at, excluded.last_error_at)
                      THEN COALESCE(excluded.last_error_at, webhook_stats.last_error_at) ELSE webhook_stats.last_error_at END";

/// A row's values in [`STAT_COLUMNS`] order: 20 counts, then the last error and its time.
pub(crate) fn values(s: &AttemptStats) -> ([i64; 20], Option<String>, Option<i64>) {
    let f = &s.failures;
    let mut counts = [0i64; 20];
    let head = [
        s.attempts,
        s.successes,
        f.status_4xx,
        f.status_5xx,
        f.status_other,
        f.timeout,
        f.connection,
        f.blocked,
    ];
    for (slot, n) in counts.iter_mut().zip(head.into_iter().chain(s.latency)) {
        *slot = n as i64;
    }
    let (at, what) = match &s.last_error {
        Some((at, what)) => (Some(at.millis()), Some(what.clone())),
        None => (None, None),
    };
    (counts, what, at)
}

/// A stored row back: the inverse of [`values`].
pub(crate) fn from_values(
    counts: [i64; 20],
    last_error: Option<String>,
    at: Option<i64>,
) -> AttemptStats {
    let n = |i: usize| counts[i].max(0) as u64;
    let mut latency = [0u64; BUCKETS];
    for (i, slot) in latency.iter_mut().enumerate() {
        *slot = n(8 + i);
    }
    AttemptStats {
        attempts: n(0),
        successes: n(1),
        failures: FailureClasses {
            status_4xx: n(2),
            status_5xx: n(3),
            status_other: n(4),
            timeout: n(5),
            connection: n(6),
            blocked: n(7),
        },
        latency,
        last_error: at
            .zip(last_error)
            .map(|(at, what)| (Timestamp::from_millis(at), what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attempt, AttemptId, DeliveryId, ErrorKind, WebhookId};
    use crate::store::NextStep;

    fn result(
        webhook: &str,
        at: i64,
        ms: u64,
        status: Option<u16>,
        kind: Option<ErrorKind>,
    ) -> AttemptRecord {
        AttemptRecord {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::from_trusted(webhook.to_owned()),
            lease: "l".to_owned(),
            attempt: Attempt {
                id: AttemptId::generate(),
                number: 1,
                started_at: Timestamp::from_millis(at),
                duration_ms: ms,
                status_code: status,
                error_kind: kind,
                error: kind.map(|k| format!("{} error", k.as_str())),
                response_body: None,
                node: None,
            },
            next: NextStep::Failed,
            gone: false,
            pause_until: None,
            ordered: false,
        }
    }

    #[test]
    fn a_batch_folds_into_a_row_per_webhook_and_minute_by_outcome_class() {
        let rows = minute_rows(&[
            result("a", 60_000, 5, Some(200), None),
            result("a", 61_000, 30, Some(503), None),
            result("a", 62_000, 3000, Some(404), None),
            result("a", 119_999, 40_000, None, Some(ErrorKind::Timeout)),
            result("a", 120_000, 1, None, Some(ErrorKind::Dns)),
            result("b", 60_500, 7, Some(302), None),
        ]);
        let keys: Vec<_> = rows.iter().map(|(w, m, _)| (w.as_str(), *m)).collect();
        assert_eq!(keys, [("a", 60_000), ("a", 120_000), ("b", 60_000)]);
        let a = &rows[0].2;
        assert_eq!((a.attempts, a.successes, a.failed()), (4, 1, 3));
        assert_eq!(
            (
                a.failures.status_5xx,
                a.failures.status_4xx,
                a.failures.timeout
            ),
            (1, 1, 1)
        );
        assert_eq!(
            a.latency[0] + a.latency[2] + a.latency[8] + a.latency[11],
            4
        );
        assert_eq!(
            a.last_error,
            Some((Timestamp::from_millis(119_999), "timeout error".into()))
        );
        assert_eq!(rows[1].2.failures.connection, 1);
        assert_eq!(rows[2].2.failures.status_other, 1);
    }

    #[test]
    fn rows_survive_storage_and_sum_with_quantiles_from_the_histogram() {
        let rows = minute_rows(&[
            result("a", 0, 5, Some(200), None),
            result("a", 1, 80, Some(500), None),
        ]);
        let row = rows[0].2.clone();
        let (counts, what, at) = values(&row);
        assert_eq!(from_values(counts, what, at), row);
        let mut sum = AttemptStats::default();
        for _ in 0..49 {
            sum.add(row.clone());
        }
        sum.add(
            minute_rows(&[result("a", 9, 20_000, Some(200), None)])[0]
                .2
                .clone(),
        );
        assert_eq!((sum.attempts, sum.successes), (99, 50));
        assert_eq!(
            sum.latency_quantile_ms(0.49),
            Some(10),
            "49 of 99 at ≤ 10 ms"
        );
        assert_eq!(sum.latency_quantile_ms(0.5), Some(100));
        assert_eq!(sum.latency_quantile_ms(0.98), Some(100));
        assert_eq!(sum.latency_quantile_ms(0.99), Some(30_000));
        assert_eq!(sum.latency_quantile_ms(1.0), Some(30_000));
        assert_eq!(AttemptStats::default().latency_quantile_ms(0.5), None);
    }
}
