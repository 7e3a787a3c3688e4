//! `POST /v1/events/batch`: many events in one transaction, a result per event.

use crate::common;

use common::{ADMIN, Backend, TestApp, TestReceiver};
use serde_json::{Value, json};
use std::time::Duration;

async fn a_batch_publishes_each_valid_event_and_answers_each_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["tts.*"] }),
    )
    .await;
    let event = |t: &str, n: i64| json!({ "account": acme.id, "type": t, "data": { "n": n } });
    let batch = json!({ "events": [
        event("tts.completed", 0),
        event("stt.completed", 1),
        event("tts.exploded", 2),
        { "account": "acc_00000000000000000000000000000000", "type": "tts.completed", "data": {} },
        merge(event("tts.failed", 4), json!({ "idempotency_key": "job-4" })),
        merge(event("tts.failed", 4), json!({ "idempotency_key": "job-4" })),
        merge(event("tts.failed", 5), json!({ "idempotency_key": "job-4" })),
        { "account": acme.id, "type": "tts.completed" },
    ] });
    let (status, answer) = app
        .call("POST", "/v1/events/batch", Some(ADMIN), Some(batch))
        .await;
    assert_eq!(status, 200, "{answer}");
    let r = answer["data"].as_array().unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(
        (r[0]["type"].as_str(), r[0]["deliveries"].as_u64()),
        (Some("tts.completed"), Some(1))
    );
    assert_eq!(r[1]["deliveries"], 0, "stt.completed matches no webhook");
    assert_eq!(
        (
            r[2]["error"]["code"].as_str(),
            r[2]["error"]["field"].as_str()
        ),
        (Some("invalid_value"), Some("events[2].type"))
    );
    assert_eq!(r[3]["error"]["code"], "not_found");
    assert_eq!(
        r[5]["id"], r[4]["id"],
        "the same idempotency key in one batch is one event"
    );
    assert_eq!(r[5]["replayed"], true);
    assert_eq!(r[6]["error"]["code"], "idempotency_conflict");
    assert_eq!(r[7]["error"]["field"], "events[7].data");

    // Two deliveries (events 0 and 4); nothing of the refused ones.
    let got = receiver.wait_for(2, None, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 2);
    let mut ns: Vec<i64> = got
        .iter()
        .map(|g| g.json()["data"]["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, [0, 4]);
    let events = app.get("/v1/events?limit=200", &acme.key).await;
    assert_eq!(
        events["data"].as_array().unwrap().len(),
        3,
        "events 0, 1 and 4 were stored"
    );

    // A later batch repeating the key answers with the first event.
    let (_, again) = app
        .call("POST", "/v1/events/batch", Some(ADMIN), Some(json!({ "events": [merge(event("tts.failed", 4), json!({ "idempotency_key": "job-4" }))] })))
        .await;
    assert_eq!(again["data"][0]["id"], r[4]["id"]);
}

async fn a_batch_must_hold_1_to_1000_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let (s, e) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": [] })),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (422, Some("events"))
    );
    let many: Vec<Value> = (0..1001)
        .map(|n| json!({ "account": acme.id, "type": "tts.completed", "data": { "n": n } }))
        .collect();
    let (s, _) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": many })),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(&acme.key),
            Some(json!({ "events": [] })),
        )
        .await;
    assert_eq!(s, 403, "publishing is the provider's");
    let full: Vec<Value> = (0..1000)
        .map(|n| json!({ "account": acme.id, "type": "tts.completed", "data": { "n": n } }))
        .collect();
    let (s, answer) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": full })),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"].is_string())
    );
}

fn merge(mut a: Value, b: Value) -> Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

on_both_backends!(
    a_batch_publishes_each_valid_event_and_answers_each_in_order,
    a_batch_must_hold_1_to_1000_events
);
