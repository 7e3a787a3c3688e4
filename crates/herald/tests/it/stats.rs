//! `GET /v1/webhooks/{id}/stats`: a webhook's attempts over a window, matching what a scripted
//! receiver answered.

use crate::common;

use common::{Backend, Reply, TestApp, TestReceiver, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn stats_match_what_the_receiver_answered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    // 30 of the first 100 requests answered 500, spread through them.
    receiver.script(
        (0..100)
            .map(|i| Reply::status(if i % 10 < 3 { 500 } else { 200 }))
            .collect(),
    );
    let acme = app.create_account("Acme").await;
    let once = json!({ "schedule": [], "timeout": "2s" });
    let scripted = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hook"), "events": ["*"], "retry": once }),
        )
        .await;
    let refused = app
        .create_webhook(
            &acme,
            json!({ "url": "http://127.0.0.1:9/closed", "events": ["*"], "retry": once }),
        )
        .await;
    for i in 0..100 {
        app.publish(&acme, "tts.completed", json!({ "i": i })).await;
    }
    let stats_of = |hook: &Value, query: &str| {
        let path = format!("/v1/webhooks/{}/stats{query}", hook["id"].as_str().unwrap());
        let (app, key) = (&app, acme.key.clone());
        async move { app.call("GET", &path, Some(&key), None).await }
    };
    let s = eventually("every attempt to be counted", WAIT, || async {
        let (status, s) = stats_of(&scripted, "").await;
        assert_eq!(status, 200, "{s}");
        (s["attempts"] == 100).then_some(s)
    })
    .await;
    assert_eq!(receiver.count(), 100);
    assert_eq!(
        (s["successes"].as_u64(), s["failures"].as_u64()),
        (Some(70), Some(30)),
        "{s}"
    );
    assert_eq!(s["success_rate"], 0.7);
    assert_eq!(
        s["failures_by_class"],
        json!({ "status_4xx": 0, "status_5xx": 30, "status_other": 0, "timeout": 0,
                "connection": 0, "blocked": 0 })
    );
    assert_eq!(s["last_error"]["message"], "HTTP 500");
    assert!(s["latency_ms"]["p50"].as_u64().unwrap() <= s["latency_ms"]["p99"].as_u64().unwrap());
    assert_eq!(
        (s["window"].as_str(), s["status"].as_str()),
        (Some("1d"), Some("active"))
    );

    let s = eventually("every refused attempt to be counted", WAIT, || async {
        let (_, s) = stats_of(&refused, "?window=1h").await;
        (s["attempts"] == 100).then_some(s)
    })
    .await;
    assert_eq!(
        (s["successes"].as_u64(), s["success_rate"].as_f64()),
        (Some(0), Some(0.0))
    );
    assert_eq!(s["failures_by_class"]["connection"], 100, "{s}");
    assert!(s["failing_since"].is_string(), "{s}");
    assert!(s["last_error"]["message"].is_string());

    // A window without attempts, bad windows, and another account's webhook.
    let other = app.create_account("Other").await;
    let (status, _) = app
        .call(
            "GET",
            &format!("/v1/webhooks/{}/stats", scripted["id"].as_str().unwrap()),
            Some(&other.key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    for bad in ["?window=30s", "?window=8d", "?window=soon"] {
        let (status, err) = stats_of(&scripted, bad).await;
        assert_eq!(status, 422, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "window");
    }
    let fresh = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/fresh"), "events": ["voice.ready"] }),
        )
        .await;
    let (status, s) = stats_of(&fresh, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (s["attempts"].as_u64(), &s["success_rate"]),
        (Some(0), &Value::Null)
    );
    assert_eq!(s["latency_ms"], json!({ "p50": null, "p99": null }));
}

on_both_backends!(stats_match_what_the_receiver_answered);
