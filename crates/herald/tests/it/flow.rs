//! Flow control per webhook (issue 18): a receiver's `429`/`503` with `Retry-After` pauses the
//! whole webhook, a rate limit holds deliveries to their rate without spending attempts, and the
//! API shows and changes the limit. The three-node rate test is in `flow_nodes.rs`.

use crate::common;

use common::{Backend, Received, Reply, TestApp, TestReceiver};
use herald::domain::duration::HumanDuration;
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Most requests that arrived within any one second (a sliding window).
pub fn busiest_second(received: &[Received]) -> usize {
    let mut at: Vec<Instant> = received.iter().map(|r| r.at).collect();
    at.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A receiver answers its first request `429` with `Retry-After: 5`: nothing reaches it for
/// five seconds after (but what was in flight then, within `grace`), then the rest arrive.
async fn a_429_with_retry_after_pauses_the_whole_webhook(
    backend: Backend,
    concurrency: usize,
    grace: Duration,
) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.per_webhook_concurrency = concurrency;
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply {
        status: 429,
        delay: Duration::ZERO,
        retry_after: Some(5),
    }]);
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": ["100ms", "100ms"] } }),
    )
    .await;
    // Held, so that the first `concurrency` requests are in flight together when the 429
    // goes back.
    receiver.hold();
    const EVENTS: usize = 12;
    for i in 0..EVENTS {
        app.publish(&acme, "tts.completed", json!({ "i": i })).await;
    }
    receiver.wait_for(concurrency, None, WAIT).await;
    receiver.release();
    // Every delivery succeeds: the one that got the 429 once more.
    let got = receiver.wait_for(EVENTS + 1, None, WAIT).await;
    let paused_at = got[0].at;
    let early: Vec<Duration> = got[1..]
        .iter()
        .map(|r| r.at.saturating_duration_since(paused_at))
        .filter(|d| *d > grace && *d < Duration::from_millis(4_950))
        .collect();
    assert!(
        early.is_empty(),
        "requests reached the receiver during its pause, at {early:?} after the 429"
    );
    let resumed = got
        .iter()
        .skip(1)
        .map(|r| r.at - paused_at)
        .find(|d| *d >= Duration::from_millis(4_950));
    assert!(resumed.is_some(), "deliveries resumed after the pause");
    let resumed = resumed.unwrap();
    assert!(
        resumed < Duration::from_millis(6_500),
        "deliveries resumed only {resumed:?} after the 429"
    );
}

async fn a_429_pauses_one_at_a_time(backend: Backend) {
    a_429_with_retry_after_pauses_the_whole_webhook(backend, 1, Duration::ZERO).await;
}

async fn a_429_pauses_four_at_a_time_after_those_in_flight(backend: Backend) {
    a_429_with_retry_after_pauses_the_whole_webhook(backend, 4, Duration::from_millis(300)).await;
}

/// A rate limit of 20/s (burst 2): 60 deliveries take three seconds, never more than 22 in a
/// second, each attempted once; another webhook of the account is not held up meanwhile.
async fn a_rate_limit_holds_deliveries_to_the_rate_without_spending_attempts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let limited = TestReceiver::start().await;
    let other = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": limited.url("/"), "events": ["tts.*"],
                    "rate_limit": { "per_second": 20, "burst": 2 } }),
        )
        .await;
    assert_eq!(
        hook["rate_limit"],
        json!({ "per_second": 20.0, "burst": 2 })
    );
    app.create_webhook(&acme, json!({ "url": other.url("/"), "events": ["stt.*"] }))
        .await;
    const EVENTS: usize = 60;
    let started = Instant::now();
    for i in 0..EVENTS {
        app.publish(&acme, "tts.completed", json!({ "i": i })).await;
    }
    // Meanwhile the other webhook's deliveries go at once.
    let sent = Instant::now();
    app.publish(&acme, "stt.completed", json!({})).await;
    let ping = other.wait_for(1, None, WAIT).await;
    assert!(
        ping[0].at - sent < Duration::from_millis(500),
        "the other webhook waited {:?}",
        ping[0].at - sent
    );
    let (claims_before, delivered_before) = (app.claims_made().await, limited.received().len());
    let got = limited.wait_for(EVENTS, None, WAIT).await;
    // A claim per burst of two, and a few more (the poll): not one per token, nor claims
    // that find the allowance taken.
    let claims = app.claims_made().await - claims_before;
    let bursts = (EVENTS - delivered_before).div_ceil(2) as u64;
    assert!(claims <= bursts + 5, "{claims} claims for {bursts} bursts");
    let took = got.iter().map(|r| r.at).max().unwrap() - started;
    assert!(
        took >= Duration::from_millis(2_800),
        "60 deliveries at 20/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(6), "60 deliveries took {took:?}");
    let busiest = busiest_second(&got);
    assert!(
        busiest <= 23,
        "{busiest} deliveries arrived within one second"
    );
    // Each attempted exactly once: the waits spent no attempts.
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    assert!(got.iter().all(|r| r.header("herald-attempt") == "1"));
}

/// The API takes a rate limit on create and update, shows it, checks it, and `null` lifts it.
async fn the_rate_limit_is_set_shown_checked_and_lifted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": "https://example.com/h", "events": ["*"] }),
        )
        .await;
    assert_eq!(hook["rate_limit"], json!(null));
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let (status, body) = app
        .call(
            "PATCH",
            &path,
            Some(&acme.key),
            Some(json!({ "rate_limit": { "per_second": 2.5 } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rate_limit"], json!({ "per_second": 2.5, "burst": 1 }));
    let shown = app.get(&path, &acme.key).await;
    assert_eq!(
        shown["rate_limit"],
        json!({ "per_second": 2.5, "burst": 1 })
    );
    let (status, body) = app
        .call(
            "PATCH",
            &path,
            Some(&acme.key),
            Some(json!({ "rate_limit": { "per_second": 0, "burst": 1 } })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "rate_limit");
    let (status, body) = app
        .call(
            "PATCH",
            &path,
            Some(&acme.key),
            Some(json!({ "rate_limit": null })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rate_limit"], json!(null));
    let (status, body) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&acme.key),
            Some(json!({ "url": "https://example.com/h", "events": ["*"],
                         "rate_limit": { "per_second": 5, "burst": 0 } })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "rate_limit");
}

/// A rate limit above what the webhook's lane holds (concurrency 1: eight deliveries at a time)
/// runs at its rate, not at one lane's worth per poll: a freed slot brings the next claim while
/// the allowance lasts. The poll is an hour away, so only that can bring it.
async fn a_rate_limit_above_the_lane_runs_at_its_rate(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.per_webhook_concurrency = 1;
        s.delivery.poll_interval = HumanDuration(Duration::from_secs(3600));
    })
    .await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"],
                "rate_limit": { "per_second": 100, "burst": 20 } }),
    )
    .await;
    const EVENTS: usize = 150;
    let started = Instant::now();
    app.publish_batch(&acme, "tts.completed", 0, EVENTS).await;
    let got = receiver.wait_for(EVENTS, None, WAIT).await;
    let took = got.iter().map(|r| r.at).max().unwrap() - started;
    // 20 at once, then 100 a second: 1.3 s.
    assert!(
        took >= Duration::from_millis(1_100),
        "{EVENTS} deliveries at 100/s took only {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{EVENTS} deliveries took {took:?}"
    );
    let busiest = busiest_second(&got);
    assert!(
        busiest <= 125,
        "{busiest} deliveries arrived within one second"
    );
    assert!(got.iter().all(|r| r.header("herald-attempt") == "1"));
}

on_both_backends!(
    a_rate_limit_above_the_lane_runs_at_its_rate,
    a_429_pauses_one_at_a_time,
    a_429_pauses_four_at_a_time_after_those_in_flight,
    a_rate_limit_holds_deliveries_to_the_rate_without_spending_attempts,
    the_rate_limit_is_set_shown_checked_and_lifted,
);
