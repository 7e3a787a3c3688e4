//! `/metrics`: the Prometheus series count what the server did.
//!
//! Each server has its own registry, so the counts here are absolute even though other tests
//! run servers in the same process.

mod common;

use common::Backend;

use common::{Reply, TestApp, TestReceiver, eventually};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// The value of one sample, by its full name with labels, e.g. `herald_attempts_total{class="2xx"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(app: &TestApp) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().await.unwrap()
}

async fn metrics_count_events_deliveries_attempts_and_the_queue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ok = TestReceiver::start().await;
    let failing = TestReceiver::start().await;
    failing.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": ok.url("/ok"), "events": ["tts.*"] }))
        .await;
    // Fails twice (one retry at once), then the delivery is spent.
    app.create_webhook(
        &acme,
        json!({ "url": failing.url("/now"), "events": ["stt.failed"],
                "retry": { "schedule": ["0s"], "timeout": "2s" } }),
    )
    .await;
    // Fails once, then waits an hour: a scheduled delivery.
    app.create_webhook(
        &acme,
        json!({ "url": failing.url("/later"), "events": ["voice.failed"],
                "retry": { "schedule": ["1h"], "timeout": "2s" } }),
    )
    .await;

    let before = scrape(&app).await;
    assert_eq!(sample(&before, "herald_events_published_total"), Some(0.0));
    for i in 0..4 {
        app.publish(&acme, "tts.completed", json!({ "i": i })).await;
    }
    app.publish(&acme, "stt.failed", json!({})).await;
    app.publish(&acme, "voice.failed", json!({})).await;
    app.publish(&acme, "voice.ready", json!({})).await; // matches no webhook

    let text = eventually("every delivery to settle", WAIT, || async {
        let text = scrape(&app).await;
        let settled = sample(
            &text,
            "herald_deliveries_completed_total{outcome=\"succeeded\"}",
        ) == Some(4.0)
            && sample(
                &text,
                "herald_deliveries_completed_total{outcome=\"failed\"}",
            ) == Some(1.0)
            && sample(&text, "herald_attempts_total{class=\"5xx\"}") == Some(3.0)
            && sample(&text, "herald_queue_scheduled") == Some(1.0);
        settled.then_some(text)
    })
    .await;
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));

    assert_eq!(value("herald_events_published_total"), 7.0);
    assert_eq!(value("herald_deliveries_created_total"), 6.0);
    assert_eq!(value("herald_attempts_total{class=\"2xx\"}"), 4.0);
    assert_eq!(value("herald_attempts_total{class=\"timeout\"}"), 0.0);
    assert_eq!(value("herald_attempts_total{class=\"connect\"}"), 0.0);
    assert_eq!(value("herald_attempt_duration_seconds_count"), 7.0);
    assert!(value("herald_attempt_duration_seconds_sum") > 0.0);
    assert_eq!(
        value("herald_attempt_duration_seconds_bucket{le=\"+Inf\"}"),
        7.0
    );
    assert_eq!(value("herald_attempts_in_flight"), 0.0);
    assert_eq!(value("herald_queue_due"), 0.0);
    assert_eq!(value("herald_queue_lag_seconds"), 0.0);
    assert_eq!(
        value("herald_store_operation_duration_seconds_count{op=\"publish\"}"),
        7.0
    );
    assert!(value("herald_store_operation_duration_seconds_count{op=\"claim\"}") >= 1.0);
    assert!(value("herald_store_operation_duration_seconds_count{op=\"record\"}") >= 1.0);
    assert!(value("herald_store_operation_duration_seconds_count{op=\"queue_depth\"}") >= 1.0);
    for help in [
        "# HELP herald_events_published_total",
        "# TYPE herald_attempt_duration_seconds histogram",
        "# TYPE herald_queue_due gauge",
    ] {
        assert!(text.contains(help), "{help} in\n{text}");
    }
    assert_eq!(ok.received().len(), 4);
    assert_eq!(failing.received().len(), 3);
}

async fn an_idempotent_replay_is_not_counted_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let body = json!({ "account": acme.id, "type": "tts.completed", "data": {} }).to_string();
    for _ in 0..3 {
        let (status, _) = app
            .call_raw(
                "POST",
                "/v1/events",
                Some(common::ADMIN),
                Some(&body),
                &[("idempotency-key", "k-1")],
            )
            .await;
        assert_eq!(status, 202);
    }
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "herald_events_published_total"), Some(1.0));
}

on_both_backends!(
    metrics_count_events_deliveries_attempts_and_the_queue,
    an_idempotent_replay_is_not_counted_again,
);
