//! `/metrics`: the Prometheus series count what the server did.
//!
//! Each server has its own registry, so the counts here are absolute even though other tests
//! run servers in the same process.

use crate::common;

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

/// Every delivery is counted, whatever made it: single events, batches, job status changes
/// (to subscriptions, the callback URL and the job's own webhook) and test sends.
async fn every_delivery_made_is_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/all"), "events": ["*"] }),
        )
        .await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/tts"), "events": ["tts.*"] }),
    )
    .await;
    let (status, _) = app
        .call(
            "PUT",
            "/v1/me/callback-url",
            Some(&acme.key),
            Some(json!({ "callback_url": receiver.url("/callback") })),
        )
        .await;
    assert_eq!(status, 200);

    app.publish(&acme, "tts.completed", json!({ "n": 1 })).await;
    let batch = json!({ "events": [
        { "account": acme.id, "type": "tts.completed", "data": {} },
        { "account": acme.id, "type": "stt.completed", "data": {} },
        { "account": acme.id, "type": "voice.ready", "data": {} },
    ] });
    let (status, body) = app
        .call("POST", "/v1/events/batch", Some(common::ADMIN), Some(batch))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            "POST",
            "/v1/jobs",
            Some(common::ADMIN),
            Some(json!({ "account": acme.id, "kind": "tts", "id": "job-1",
                          "webhook_url": receiver.url("/job") })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for change in [
        json!({ "status": "processing", "progress": 0.5 }),
        json!({ "progress": 0.7 }),
        json!({ "status": "completed", "result": {} }),
    ] {
        let (status, body) = app
            .call("PATCH", "/v1/jobs/job-1", Some(common::ADMIN), Some(change))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let path = format!("/v1/webhooks/{}/test", webhook["id"].as_str().unwrap());
    let (status, body) = app.call("POST", &path, Some(&acme.key), None).await;
    assert_eq!(status, 202, "{body}");

    let mut stored = 0;
    let mut cursor = String::new();
    loop {
        let page = app
            .get(&format!("/v1/deliveries?limit=200{cursor}"), &acme.key)
            .await;
        stored += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    // The job publishes three events (queued, processing, completed; a change of progress alone
    // publishes none). `*`: 1 + 3 + 3 + the test send; `tts.*`: 1 + 1 + 3; the callback URL:
    // 1 + 3 + 3; the job's own webhook: its terminal event.
    assert_eq!(stored, 8 + 5 + 7 + 1);
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "herald_deliveries_created_total"),
        Some(stored as f64),
        "{text}"
    );
}

on_both_backends!(
    metrics_count_events_deliveries_attempts_and_the_queue,
    an_idempotent_replay_is_not_counted_again,
    every_delivery_made_is_counted,
);
