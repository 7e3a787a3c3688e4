//! Which failures are retried, and when an endpoint is disabled and enabled again.

use crate::common;

use common::{Backend, Reply, TestApp, TestReceiver, eventually};
use herald::domain::duration::HumanDuration;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn transient_stops_at_the_first_404_and_any_retries_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(404));
    let acme = app.create_account("Acme").await;
    for (path, retry_on) in [("/transient", "transient"), ("/any", "any")] {
        app.create_webhook(
            &acme,
            json!({ "url": receiver.url(path), "events": ["*"], "retry": { "schedule": ["50ms", "50ms"], "retry_on": retry_on } }),
        )
        .await;
    }
    let event = app.publish(&acme, "tts.completed", json!({})).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    eventually("both deliveries to fail", WAIT, || async {
        let list = app
            .get(
                &format!("/v1/deliveries?event={event_id}&status=failed"),
                &acme.key,
            )
            .await;
        (list["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let count = |p: &str| receiver.received().iter().filter(|r| r.path == p).count();
    assert_eq!(
        count("/transient"),
        1,
        "transient: a 404 ends the delivery at once"
    );
    assert_eq!(
        count("/any"),
        3,
        "any: the 404 is retried until the schedule is spent"
    );
}

async fn retry_after_2_on_a_429_is_honoured(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply {
        status: 429,
        delay: Duration::ZERO,
        retry_after: Some(2),
    }]);
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": ["100ms"] } }),
    )
    .await;
    app.publish(&acme, "tts.completed", json!({})).await;
    let got = receiver.wait_for(2, None, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1990) && gap < Duration::from_secs(4),
        "retried after {gap:?}"
    );
}

async fn a_410_disables_the_webhook_announces_it_and_enable_restores_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply::status(410)]);
    let acme = app.create_account("Acme").await;
    let gone = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/gone"), "events": ["tts.*"] }),
        )
        .await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/ops"), "events": ["webhook.disabled"] }),
    )
    .await;
    let id = gone["id"].as_str().unwrap().to_owned();
    app.publish(&acme, "tts.completed", json!({ "n": 1 })).await;

    let notice = receiver.wait_for(1, Some("/ops"), WAIT).await;
    let body = notice[0].json();
    assert_eq!(body["type"], "webhook.disabled");
    assert_eq!(
        (
            body["data"]["webhook_id"].as_str(),
            body["data"]["reason"].as_str()
        ),
        (Some(id.as_str()), Some("gone"))
    );
    let shown = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(
        (shown["status"].as_str(), shown["disabled_reason"].as_str()),
        (Some("disabled"), Some("gone"))
    );

    // While disabled, new events are not queued for it, and it takes no test events.
    let skipped = app.publish(&acme, "tts.completed", json!({ "n": 2 })).await;
    assert_eq!(skipped["deliveries"], 0);
    let (s, _) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/test"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(s, 409, "no test events to a disabled webhook");

    let (s, enabled) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/enable"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), enabled["status"].as_str()),
        (200, Some("active"))
    );
    let after = app.publish(&acme, "tts.completed", json!({ "n": 3 })).await;
    assert_eq!(after["deliveries"], 1);
    receiver.wait_for(2, Some("/gone"), WAIT).await;
    let (s, test) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/test"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(s, 202, "{test}");
    let got = receiver.wait_for(3, Some("/gone"), WAIT).await;
    assert_eq!(got[2].header("herald-event-type"), "webhook.test");
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/ops")
            .count(),
        1,
        "the test event went to that webhook only"
    );
}

async fn a_webhook_failing_for_the_configured_span_is_disabled(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.disable_after = HumanDuration(Duration::from_millis(600))
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let failing = app
        .create_webhook(&acme, json!({ "url": receiver.url("/down"), "events": ["tts.*"], "retry": { "schedule": vec!["200ms"; 20] } }))
        .await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/ops"), "events": ["*"] }),
    )
    .await;
    app.publish(&acme, "tts.failed", json!({})).await;
    let id = failing["id"].as_str().unwrap().to_owned();
    let shown = common::eventually("the failing webhook to be disabled", WAIT, || async {
        let w = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
        (w["status"] == "disabled").then_some(w)
    })
    .await;
    assert_eq!(shown["disabled_reason"], "failing");
    let attempts = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/down")
        .count();
    assert!(
        attempts >= 3,
        "it kept failing for the span first ({attempts} attempts)"
    );
    let notices = receiver.wait_for(2, Some("/ops"), WAIT).await; // tts.failed itself, then the notice
    assert!(
        notices
            .iter()
            .any(|r| r.json()["data"]["reason"] == "failing")
    );

    // Its delivery had retries left: it waits, unattempted, and goes out once enabled.
    let pending = app
        .get(
            &format!("/v1/deliveries?webhook={id}&status=pending"),
            &acme.key,
        )
        .await;
    let delivery = pending["data"][0]["id"]
        .as_str()
        .expect("the delivery still pending")
        .to_owned();
    let before = receiver
        .received()
        .iter()
        .filter(|r| r.path == "/down")
        .count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/down")
            .count(),
        before,
        "not attempted while disabled"
    );
    receiver.set_default(Reply::status(200));
    let (s, _) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/enable"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(s, 200);
    app.wait_for_status(&acme, &delivery, "succeeded", WAIT)
        .await;
}

on_both_backends!(
    transient_stops_at_the_first_404_and_any_retries_it,
    retry_after_2_on_a_429_is_honoured,
    a_410_disables_the_webhook_announces_it_and_enable_restores_it,
    a_webhook_failing_for_the_configured_span_is_disabled,
);
