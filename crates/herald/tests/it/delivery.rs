//! Delivery end to end: publish → signed POST → recorded attempts, retries and timeouts.

use crate::common;

use common::Backend;

use common::{Reply, TestApp, TestReceiver, verify_with_python};
use herald::domain::duration::HumanDuration;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn a_published_event_arrives_signed_and_verifies_with_standardwebhooks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hook"), "events": ["tts.completed", "stt.completed"] }),
        )
        .await;
    assert_eq!(webhook["status"], "active");
    assert_eq!(webhook["events"], json!(["tts.completed", "stt.completed"]));
    assert!(webhook["id"].as_str().unwrap().starts_with("wh_"));
    assert!(
        webhook.get("secret").is_none(),
        "the create answer must not echo the secret"
    );
    let wh_id = webhook["id"].as_str().unwrap();
    let secret = app
        .get(&format!("/v1/webhooks/{wh_id}/secret"), &acme.key)
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("whsec_"));

    let data = json!({ "id": "tts-123", "text": "Hello, world!", "voice_id": "default-voice", "duration": 2.5 });
    let published = app.publish(&acme, "tts.completed", data.clone()).await;
    assert_eq!(published["deliveries"], 1);
    assert_eq!(published["type"], "tts.completed");

    let got = receiver.wait_for(1, None, WAIT).await;
    let req = &got[0];
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), "application/json");
    assert!(req.header("user-agent").starts_with("Herald-Webhooks/"));
    assert_eq!(req.header("herald-event-type"), "tts.completed");
    assert_eq!(req.header("herald-attempt"), "1");
    let body = req.json();
    assert_eq!(body["type"], "tts.completed");
    assert_eq!(body["timestamp"], published["timestamp"]);
    assert_eq!(body["data"], data);
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "envelope is exactly {{type, timestamp, data}}: {body}"
    );

    let deliveries = app
        .deliveries_of(&acme, published["id"].as_str().unwrap())
        .await;
    assert_eq!(deliveries.len(), 1);
    let delivery_id = deliveries[0]["id"].as_str().unwrap();
    assert_eq!(
        req.header("webhook-id"),
        delivery_id,
        "webhook-id is the delivery id"
    );
    let ts: i64 = req.header("webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60);
    assert!(req.header("webhook-signature").starts_with("v1,"));

    let delivered = app
        .wait_for_status(&acme, delivery_id, "succeeded", WAIT)
        .await;
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivered["attempts"][0]["status_code"], 200);
    assert_eq!(
        delivered["attempts"][0]["response_body"],
        "receiver says hi"
    );

    let mut case = req.signed_case();
    case["secret"] = json!(secret);
    verify_with_python("verify_standardwebhooks.py", &json!([case]));
}

async fn only_subscribed_event_types_are_delivered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    for (path, events) in [
        ("/exact", json!(["tts.completed"])),
        ("/prefix", json!(["tts.*"])),
        ("/all", json!(["*"])),
    ] {
        app.create_webhook(
            &acme,
            json!({ "url": receiver.url(path), "events": events }),
        )
        .await;
    }
    // Published in this order; expected receivers per event.
    let plan = [
        ("tts.completed", vec!["/exact", "/prefix", "/all"]),
        ("tts.failed", vec!["/prefix", "/all"]),
        ("stt.completed", vec!["/all"]),
        ("voice.ready", vec!["/all"]),
    ];
    let mut expected = 0;
    for (event_type, targets) in &plan {
        let answer = app.publish(&acme, event_type, json!({ "n": 1 })).await;
        assert_eq!(answer["deliveries"], targets.len(), "{event_type}");
        expected += targets.len();
    }
    let got = receiver.wait_for(expected, None, WAIT).await;
    // Let stray deliveries (there must be none) have a chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = receiver.received();
    assert_eq!(got_now.len(), got.len(), "no extra deliveries");
    for (event_type, targets) in &plan {
        let mut paths: Vec<&str> = got_now
            .iter()
            .filter(|r| r.header("herald-event-type") == *event_type)
            .map(|r| r.path.as_str())
            .collect();
        paths.sort();
        let mut want = targets.clone();
        want.sort();
        assert_eq!(paths, want, "{event_type} went to the wrong webhooks");
    }
}

async fn failed_attempts_are_retried_on_schedule_until_success(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply::status(500), Reply::status(500)]);
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": ["300ms", "600ms", "5s"] } }),
    )
    .await;
    let event = app
        .publish(&acme, "voice.ready", json!({ "voice": "v1" }))
        .await;
    let got = receiver.wait_for(3, None, WAIT).await;
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(290) && gap1 < Duration::from_millis(2000),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(590) && gap2 < Duration::from_millis(2500),
        "second retry after {gap2:?}"
    );
    let attempts: Vec<&str> = got.iter().map(|r| r.header("herald-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "webhook-id is stable across retries: {ids:?}"
    );

    let delivery_id = app.first_delivery(&acme, &event).await;
    let done = app
        .wait_for_status(&acme, &delivery_id, "succeeded", WAIT)
        .await;
    let codes: Vec<i64> = done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert_eq!(done["attempts_made"], 3);
}

async fn a_delivery_that_never_succeeds_fails_after_one_plus_schedule_attempts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(503));
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": ["100ms", "100ms", "100ms"] } }),
    )
    .await;
    let event = app.publish(&acme, "tts.failed", json!({})).await;
    let delivery_id = app.first_delivery(&acme, &event).await;
    let failed = app
        .wait_for_status(&acme, &delivery_id, "failed", WAIT)
        .await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(failed["next_attempt_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "no attempt after the policy is spent"
    );

    // A manual retry makes one more attempt, also after `failed`.
    receiver.set_default(Reply::status(200));
    let (status, retried) = app
        .call(
            "POST",
            &format!("/v1/deliveries/{delivery_id}/retry"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    let done = app
        .wait_for_status(&acme, &delivery_id, "succeeded", WAIT)
        .await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 5);
    assert_eq!(receiver.received()[4].header("herald-attempt"), "5");
}

async fn a_transient_policy_gives_up_at_once_on_a_client_error_and_honours_retry_after(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![
        Reply {
            status: 429,
            delay: Duration::ZERO,
            retry_after: Some(1),
        },
        Reply::status(400),
    ]);
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"],
                "retry": { "schedule": ["50ms", "50ms", "50ms"], "retry_on": "transient" } }),
    )
    .await;
    let event = app.publish(&acme, "tts.completed", json!({})).await;
    let delivery_id = app.first_delivery(&acme, &event).await;
    let failed = app
        .wait_for_status(&acme, &delivery_id, "failed", WAIT)
        .await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "429 is retried, 400 ends it");
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(990),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(failed["attempts"][1]["status_code"], 400);
}

async fn a_receiver_that_hangs_past_the_timeout_is_recorded_as_a_timeout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(200).after(Duration::from_secs(5)));
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": [], "timeout": "500ms" } }),
    )
    .await;
    let event = app.publish(&acme, "stt.completed", json!({})).await;
    let delivery_id = app.first_delivery(&acme, &event).await;
    let failed = app
        .wait_for_status(&acme, &delivery_id, "failed", WAIT)
        .await;
    let attempt = &failed["attempts"][0];
    assert_eq!(attempt["error_kind"], "timeout");
    assert_eq!(attempt["status_code"], Value::Null);
    let ms = attempt["duration_ms"].as_u64().unwrap();
    assert!((450..2000).contains(&ms), "attempt took {ms} ms");
}

async fn a_slow_receiver_does_not_delay_deliveries_to_another_webhook(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slow = TestReceiver::start().await;
    slow.set_default(Reply::status(200).after(Duration::from_secs(5)));
    let fast = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": slow.url("/"), "events": ["*"], "retry": { "timeout": "10s" } }),
    )
    .await;
    app.create_webhook(&acme, json!({ "url": fast.url("/"), "events": ["*"] }))
        .await;

    // Enough events to fill the slow webhook's concurrency cap several times over.
    let started = std::time::Instant::now();
    for n in 0..40 {
        app.publish(&acme, "tts.completed", json!({ "n": n })).await;
    }
    let got = fast.wait_for(40, None, WAIT).await;
    let last = got.iter().map(|r| r.at).max().unwrap();
    assert!(
        last - started < Duration::from_secs(3),
        "the fast webhook got all 40 events only after {:?}",
        last - started
    );
    assert!(
        !slow.received().is_empty(),
        "the slow webhook is being attempted meanwhile"
    );
}

/// A slow endpoint's backlog fills the whole due window of a claim; the other webhook's
/// deliveries must still be found (webhook by webhook) and sent at once.
async fn a_slow_endpoints_backlog_does_not_hide_other_due_work(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.workers = 4;
        s.delivery.per_webhook_concurrency = 1;
    })
    .await;
    let slow = TestReceiver::start().await;
    slow.set_default(Reply::status(200).after(Duration::from_secs(3)));
    let fast = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": slow.url("/"), "events": ["tts.*"] }))
        .await;
    app.create_webhook(&acme, json!({ "url": fast.url("/"), "events": ["stt.*"] }))
        .await;
    for n in 0..60 {
        app.publish(&acme, "tts.completed", json!({ "n": n })).await;
    }
    slow.wait_for(1, None, WAIT).await; // the slow webhook is at its cap now
    let started = std::time::Instant::now();
    for n in 0..10 {
        app.publish(&acme, "stt.completed", json!({ "n": n })).await;
    }
    fast.wait_for(10, None, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fast webhook waited {:?}",
        started.elapsed()
    );
}

async fn an_idempotency_key_repeat_returns_the_first_answer_and_delivers_nothing_new(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let body = json!({ "account": acme.id, "type": "tts.completed", "data": { "id": "tts-1" } })
        .to_string();
    let headers = [("idempotency-key", "job-42-done")];
    let (s1, first) = app
        .call_raw(
            "POST",
            "/v1/events",
            Some(common::ADMIN),
            Some(&body),
            &headers,
        )
        .await;
    let (s2, second) = app
        .call_raw(
            "POST",
            "/v1/events",
            Some(common::ADMIN),
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (202, 202));
    assert_eq!(first, second);
    receiver.wait_for(1, None, WAIT).await;
    let other = json!({ "account": acme.id, "type": "tts.completed", "data": { "id": "tts-2" } })
        .to_string();
    let (s3, conflict) = app
        .call_raw(
            "POST",
            "/v1/events",
            Some(common::ADMIN),
            Some(&other),
            &headers,
        )
        .await;
    assert_eq!(s3.as_u16(), 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_conflict");
    let events = app.get("/v1/events", &acme.key).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

async fn a_published_event_goes_to_the_dispatcher_without_a_claim(backend: Backend) {
    // No poll tick during the test: only publishing's hand-over can start the attempt (a
    // wake-up would show as a claim).
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.poll_interval = HumanDuration(Duration::from_secs(3600));
    })
    .await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/hook"), "events": ["*"] }),
    )
    .await;
    // The dispatcher's claims at start (they find nothing) are over: none for 200 ms.
    let before = common::eventually("the start-up claims to end", WAIT, || async {
        let n = app.claims_made().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (n > 0 && app.claims_made().await == n).then_some(n)
    })
    .await;

    let published = app.publish(&acme, "tts.completed", json!({ "n": 1 })).await;
    receiver.wait_for(1, None, WAIT).await;
    let delivery = app.first_delivery(&acme, &published).await;
    let delivered = app
        .wait_for_status(&acme, &delivery, "succeeded", WAIT)
        .await;
    assert_eq!(delivered["attempts_made"], 1, "{delivered}");
    assert_eq!(
        app.claims_made().await,
        before,
        "the delivery was handed over by publishing, not claimed"
    );
}

on_both_backends!(
    a_slow_endpoints_backlog_does_not_hide_other_due_work,
    a_published_event_arrives_signed_and_verifies_with_standardwebhooks,
    only_subscribed_event_types_are_delivered,
    failed_attempts_are_retried_on_schedule_until_success,
    a_delivery_that_never_succeeds_fails_after_one_plus_schedule_attempts,
    a_transient_policy_gives_up_at_once_on_a_client_error_and_honours_retry_after,
    a_receiver_that_hangs_past_the_timeout_is_recorded_as_a_timeout,
    a_slow_receiver_does_not_delay_deliveries_to_another_webhook,
    an_idempotency_key_repeat_returns_the_first_answer_and_delivers_nothing_new,
    a_published_event_goes_to_the_dispatcher_without_a_claim,
);
