//! `POST /v1/webhooks/{id}/replay-missing`: the events a webhook missed while disabled are
//! delivered to it once, however often it is called, and nothing else changes.

use crate::common;

use common::{ADMIN, Backend, TestAccount, TestApp, TestReceiver};
use herald::domain::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The `n` of each event `path` received.
fn numbers(receiver: &TestReceiver, path: &str) -> BTreeSet<u64> {
    receiver
        .received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.json()["data"]["n"].as_u64().unwrap())
        .collect()
}

async fn delivery_count(app: &TestApp, account: &TestAccount, webhook: &str) -> usize {
    let list = app
        .get(
            &format!("/v1/deliveries?webhook={webhook}&limit=200"),
            &account.key,
        )
        .await;
    list["data"].as_array().unwrap().len()
}

async fn the_events_missed_while_disabled_are_delivered_once(backend: Backend) {
    let app = &TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let since = Timestamp::now().minus(Duration::from_secs(1)).to_rfc3339();
    let (acme, other) = (
        app.create_account("Acme").await,
        app.create_account("Other").await,
    );
    let hook = |account, path: &str| {
        let body = json!({ "url": receiver.url(path), "events": ["tts.*"] });
        async move {
            app.create_webhook(account, body).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (a, b, c) = (
        hook(&acme, "/a").await,
        hook(&acme, "/b").await,
        hook(&other, "/c").await,
    );
    let publish = |account: &TestAccount, n: u64| {
        let body = json!({ "account": account.id, "type": "tts.completed", "data": { "n": n } });
        async move {
            let (status, answer) = app
                .call("POST", "/v1/events", Some(ADMIN), Some(body))
                .await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    for n in 0..10 {
        publish(&acme, n).await;
    }
    receiver.wait_for(20, None, WAIT).await;
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{a}"),
            Some(&acme.key),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(status, 200);
    for n in 10..60 {
        publish(&acme, n).await;
    }
    for n in 1000..1005 {
        publish(&other, n).await;
    }
    // Not subscribed: never replayed either.
    let (status, _) = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN),
            Some(json!({ "account": acme.id, "type": "voice.ready", "data": { "n": 9999 } })),
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(75, None, WAIT).await;
    let (status, _) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{a}/enable"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let replay = |dry_run: bool| {
        let (path, key) = (format!("/v1/webhooks/{a}/replay-missing"), acme.key.clone());
        let body = json!({ "since": since, "dry_run": dry_run });
        async move {
            let (status, answer): (_, Value) =
                app.call("POST", &path, Some(&key), Some(body)).await;
            assert_eq!(status, 200, "{answer}");
            answer["deliveries"].as_u64().unwrap()
        }
    };
    assert_eq!(replay(true).await, 50, "a dry run counts the missed events");
    assert_eq!(
        delivery_count(app, &acme, &a).await,
        10,
        "and makes nothing"
    );
    assert_eq!(replay(false).await, 50);
    receiver.wait_for(60, Some("/a"), WAIT).await;
    assert_eq!(
        numbers(&receiver, "/a"),
        (0..60).collect(),
        "exactly the missed ones, once"
    );
    assert_eq!(
        replay(false).await,
        0,
        "a second call finds nothing missing"
    );
    assert_eq!(replay(true).await, 0);
    assert_eq!(delivery_count(app, &acme, &a).await, 60);
    assert_eq!(
        delivery_count(app, &acme, &b).await,
        60,
        "the other webhook is untouched"
    );
    assert_eq!(
        delivery_count(app, &other, &c).await,
        5,
        "the other account too"
    );
    assert_eq!(numbers(&receiver, "/b"), (0..60).collect());
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.path == "/a")
            .count(),
        60
    );

    // Refusals: another account's webhook, a bad time.
    let (status, _) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{a}/replay-missing"),
            Some(&other.key),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, err) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{a}/replay-missing"),
            Some(&acme.key),
            Some(json!({ "since": "yesterday" })),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "since");
}

on_both_backends!(the_events_missed_while_disabled_are_delivered_once);
