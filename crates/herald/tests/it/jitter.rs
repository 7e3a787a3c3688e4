//! Retry jitter: 1,000 deliveries that fail together are due again spread evenly over the jitter
//! window, never before their schedule, while a webhook without jitter has all its retries due
//! exactly one wait after each failure.

use crate::common;

use common::{Backend, Reply, TestAccount, TestApp, TestReceiver, eventually};
use herald::domain::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;

const EVENTS: usize = 1000;
/// The one scheduled wait, long enough that no retry is made while the test reads the queue.
const WAIT_S: f64 = 20.0;

/// The webhook's deliveries, once each has failed its first attempt.
async fn after_first_failures(app: &TestApp, acme: &TestAccount, webhook: &str) -> Vec<Value> {
    eventually(
        "every first attempt to fail",
        Duration::from_secs(60),
        || async {
            let (mut all, mut cursor) = (Vec::new(), String::new());
            loop {
                let page = app
                    .get(
                        &format!("/v1/deliveries?webhook={webhook}&limit=200{cursor}"),
                        &acme.key,
                    )
                    .await;
                all.extend(page["data"].as_array().unwrap().iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
            (all.len() == EVENTS && all.iter().all(|d| d["attempts_made"] == 1)).then_some(all)
        },
    )
    .await
}

fn millis(v: &Value) -> i64 {
    Timestamp::parse_rfc3339(v.as_str().unwrap())
        .unwrap()
        .millis()
}

/// Sorted seconds; `quantile(0.5)` is the median.
struct Spread(Vec<f64>);

impl Spread {
    fn of(mut xs: Vec<f64>) -> Self {
        xs.sort_by(f64::total_cmp);
        Self(xs)
    }
    fn quantile(&self, q: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }
    fn summary(&self) -> String {
        let q = |x| self.quantile(x);
        format!(
            "min {:.2} p10 {:.2} p50 {:.2} p90 {:.2} max {:.2}",
            q(0.0),
            q(0.1),
            q(0.5),
            q(0.9),
            q(1.0)
        )
    }
}

async fn retries_that_fail_together_are_due_spread_over_the_jitter_window(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.delivery.per_webhook_concurrency = 64).await;
    let receiver = TestReceiver::start().await;
    receiver.answer_first_attempts(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let mut hooks = Vec::new();
    for (path, jitter) in [("/jitter", 1.0), ("/exact", 0.0)] {
        let hook = app
            .create_webhook(
                &acme,
                json!({ "url": receiver.url(path), "events": ["*"],
                        "retry": { "schedule": ["20s"], "jitter": jitter, "timeout": "5s" } }),
            )
            .await;
        assert_eq!(hook["retry"]["jitter"], jitter);
        hooks.push(hook["id"].as_str().unwrap().to_owned());
    }
    app.publish_batch(&acme, "tts.completed", 0, EVENTS).await;

    // Per delivery: the wait from its failure (when it was last updated) to its next attempt,
    // and when that attempt is due.
    let mut measured = Vec::new();
    for hook in &hooks {
        let deliveries = after_first_failures(&app, &acme, hook).await;
        let waits = deliveries
            .iter()
            .map(|d| (millis(&d["next_attempt_at"]) - millis(&d["updated_at"])) as f64 / 1000.0);
        let due = deliveries
            .iter()
            .map(|d| millis(&d["next_attempt_at"]) as f64 / 1000.0);
        measured.push((Spread::of(waits.collect()), Spread::of(due.collect())));
    }
    let [(waits, due), (exact_waits, exact_due)] = <[_; 2]>::try_from(measured).ok().unwrap();
    println!(
        "{backend:?}, {EVENTS} deliveries failed together, schedule [20s]:\n  jitter 1.0: wait {} s; due over {:.2} s (p10–p90)\n  no jitter:  wait {} s; due over {:.2} s (p10–p90)",
        waits.summary(),
        due.quantile(0.9) - due.quantile(0.1),
        exact_waits.summary(),
        exact_due.quantile(0.9) - exact_due.quantile(0.1),
    );
    // Without jitter: the schedule. With it: never less, at most twice as long… (a delivery's
    // `updated_at` is when its result was written, a moment after the wait was set: up to
    // `LAG` on a machine running the whole suite).
    const LAG: f64 = 2.0;
    let within = |s: &Spread, lo: f64, hi: f64| s.quantile(0.0) >= lo && s.quantile(1.0) <= hi;
    assert!(
        within(&exact_waits, WAIT_S - LAG, WAIT_S + LAG),
        "{}",
        exact_waits.summary()
    );
    assert!(
        within(&waits, WAIT_S - LAG, 2.0 * WAIT_S + LAG),
        "{}",
        waits.summary()
    );
    // …and evenly spread: each quarter of the window holds about a quarter of the retries.
    for quarter in 0..4 {
        let lo = WAIT_S + f64::from(quarter) * WAIT_S / 4.0;
        let n = waits
            .0
            .iter()
            .filter(|w| (lo..lo + WAIT_S / 4.0).contains(*w))
            .count();
        assert!(
            (150..=350).contains(&n),
            "{n} of {EVENTS} waits in {lo}–{} s: {}",
            lo + WAIT_S / 4.0,
            waits.summary()
        );
    }
    // So the retries are due spread over the window rather than in one burst.
    let spread = due.quantile(0.9) - due.quantile(0.1);
    let burst = exact_due.quantile(0.9) - exact_due.quantile(0.1);
    assert!(
        spread > 0.6 * WAIT_S && spread > burst + 10.0,
        "{spread} vs {burst}"
    );
    assert_eq!(receiver.count(), 2 * EVENTS, "no retry was made early");
}

on_both_backends!(retries_that_fail_together_are_due_spread_over_the_jitter_window);
