//! Tenancy and credentials: another account's webhook, event or delivery id answers 404 on
//! every route (and changes nothing); a missing or wrong key answers 401; an account key on an
//! admin-only route answers 403.

use crate::common;

use common::Backend;

use axum::http::StatusCode;
use common::{ADMIN, TestAccount, TestApp, TestReceiver};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Two accounts, each with a webhook, a published event and a finished delivery.
struct World {
    app: TestApp,
    _receiver: TestReceiver,
    a: Owned,
    b: Owned,
}

struct Owned {
    account: TestAccount,
    webhook: String,
    event: String,
    delivery: String,
}

async fn world(backend: Backend) -> World {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let a = own_resources(&app, &receiver, "Alpha", "/alpha").await;
    let b = own_resources(&app, &receiver, "Bravo", "/bravo").await;
    World {
        app,
        _receiver: receiver,
        a,
        b,
    }
}

async fn own_resources(app: &TestApp, receiver: &TestReceiver, name: &str, path: &str) -> Owned {
    let account = app.create_account(name).await;
    let webhook = app
        .create_webhook(
            &account,
            json!({ "url": receiver.url(path), "events": ["tts.*"] }),
        )
        .await;
    let event = app
        .publish(&account, "tts.completed", json!({ "owner": name }))
        .await;
    let event = event["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Some(path), WAIT).await;
    let deliveries = app.deliveries_of(&account, &event).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&account, &delivery, "succeeded", WAIT)
        .await;
    Owned {
        webhook: webhook["id"].as_str().unwrap().to_owned(),
        account,
        event,
        delivery,
    }
}

/// Everything account A can read about its own resources, as A sees it.
async fn snapshot(app: &TestApp, a: &Owned) -> Vec<Value> {
    let key = &a.account.key;
    let mut seen = Vec::new();
    for path in [
        format!("/v1/accounts/{}", a.account.id),
        format!("/v1/webhooks/{}", a.webhook),
        format!("/v1/webhooks/{}/secret", a.webhook),
        format!("/v1/events/{}", a.event),
        format!("/v1/deliveries/{}", a.delivery),
        "/v1/webhooks".to_owned(),
        "/v1/events".to_owned(),
        "/v1/deliveries".to_owned(),
    ] {
        seen.push(app.get(&path, key).await);
    }
    seen
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: an error carries a message: {body}"
    );
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

async fn another_accounts_ids_answer_404_on_every_route_and_change_nothing(backend: Backend) {
    let World { app, a, b, .. } = world(backend).await;
    let before = snapshot(&app, &a).await;

    let patch = json!({ "url": "http://127.0.0.1:9/stolen", "status": "disabled" });
    let mut routes: Vec<(&str, String, Option<Value>)> = Vec::new();
    // Each id route bare, naming A's account, and naming B's own account.
    for query in [
        String::new(),
        format!("?account={}", a.account.id),
        format!("?account={}", b.account.id),
    ] {
        let wh = format!("/v1/webhooks/{}{query}", a.webhook);
        routes.extend([
            ("GET", wh.clone(), None),
            ("PATCH", wh.clone(), Some(patch.clone())),
            ("DELETE", wh, None),
            (
                "GET",
                format!("/v1/webhooks/{}/secret{query}", a.webhook),
                None,
            ),
            ("GET", format!("/v1/events/{}{query}", a.event), None),
            ("GET", format!("/v1/deliveries/{}{query}", a.delivery), None),
            (
                "POST",
                format!("/v1/deliveries/{}/retry{query}", a.delivery),
                None,
            ),
        ]);
    }
    routes.push(("GET", format!("/v1/accounts/{}", a.account.id), None));

    for (method, path, body) in &routes {
        let (status, answer) = app
            .call(method, path, Some(&b.account.key), body.clone())
            .await;
        let what = format!("{method} {path} with B's key");
        assert_error(status, &answer, StatusCode::NOT_FOUND, "not_found", &what);
    }

    let after = snapshot(&app, &a).await;
    assert_eq!(
        before, after,
        "B's PATCH, DELETE and retry must leave A's resources as they were"
    );
    // The retry did not reach A's receiver either: still one attempt, still succeeded.
    let delivery = &after[4];
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
}

async fn the_newer_routes_answer_404_for_another_accounts_ids_too(backend: Backend) {
    let World { app, a, b, .. } = world(backend).await;
    let (s, job) = app
        .call(
            "POST",
            "/v1/jobs",
            Some(ADMIN),
            Some(json!({ "account": a.account.id, "kind": "tts", "id": "a-job" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let secret_before = app
        .get(
            &format!("/v1/webhooks/{}/secret", a.webhook),
            &a.account.key,
        )
        .await;
    let acc = &a.account.id;
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            format!("/v1/webhooks/{}/secret/rotate", a.webhook),
            Some(json!({ "grace_period": "0s" })),
        ),
        ("POST", format!("/v1/webhooks/{}/enable", a.webhook), None),
        ("POST", format!("/v1/webhooks/{}/test", a.webhook), None),
        (
            "POST",
            format!("/v1/webhooks/{}/recover", a.webhook),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        ),
        ("GET", "/v1/jobs/a-job".to_owned(), None),
        ("GET", format!("/v1/me/callback-url?account={acc}"), None),
        (
            "PUT",
            "/v1/me/callback-url".to_owned(),
            Some(json!({ "callback_url": "http://127.0.0.1:9/x", "account": acc })),
        ),
        ("DELETE", format!("/v1/me/callback-url?account={acc}"), None),
        ("GET", format!("/v1/me/signing-secret?account={acc}"), None),
    ];
    for (method, path, body) in &routes {
        let (status, answer) = app
            .call(method, path, Some(&b.account.key), body.clone())
            .await;
        assert_error(
            status,
            &answer,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{method} {path} with B's key"),
        );
    }
    let secret_after = app
        .get(
            &format!("/v1/webhooks/{}/secret", a.webhook),
            &a.account.key,
        )
        .await;
    assert_eq!(secret_before, secret_after, "B's rotate changed nothing");
    let callback = app.get("/v1/me/callback-url", &a.account.key).await;
    assert_eq!(
        callback["callback_url"],
        Value::Null,
        "B's PUT set nothing for A"
    );
    let events = app
        .get("/v1/events?type=webhook.test", &a.account.key)
        .await;
    assert!(
        events["data"].as_array().unwrap().is_empty(),
        "B's test sent nothing to A's webhook"
    );
}

async fn naming_another_account_answers_404_on_lists_and_create(backend: Backend) {
    let World { app, a, b, .. } = world(backend).await;
    let acc = &a.account.id;
    for path in [
        format!("/v1/webhooks?account={acc}"),
        format!("/v1/events?account={acc}"),
        format!("/v1/deliveries?account={acc}"),
        format!("/v1/deliveries?account={acc}&webhook={}", a.webhook),
    ] {
        let (status, body) = app.call("GET", &path, Some(&b.account.key), None).await;
        let what = format!("GET {path} with B's key");
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found", &what);
    }

    let (status, body) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&b.account.key),
            Some(json!({ "account": acc, "url": "http://127.0.0.1:9/x", "events": ["*"] })),
        )
        .await;
    let what = "B creating a webhook in A's account";
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found", what);
    let a_hooks = app.get("/v1/webhooks", &a.account.key).await;
    assert_eq!(ids(&a_hooks), vec![a.webhook.as_str()]);
}

async fn each_accounts_lists_hold_only_its_own_resources(backend: Backend) {
    let World { app, a, b, .. } = world(backend).await;
    for (me, other) in [(&a, &b), (&b, &a)] {
        let key = &me.account.key;
        let webhooks = app.get("/v1/webhooks", key).await;
        assert_eq!(ids(&webhooks), vec![me.webhook.as_str()]);
        let events = app.get("/v1/events", key).await;
        assert_eq!(ids(&events), vec![me.event.as_str()]);
        let events = app.get("/v1/events?type=tts.completed", key).await;
        assert_eq!(ids(&events), vec![me.event.as_str()]);
        let deliveries = app.get("/v1/deliveries", key).await;
        assert_eq!(ids(&deliveries), vec![me.delivery.as_str()]);
        for item in [&webhooks, &events, &deliveries]
            .iter()
            .flat_map(|l| l["data"].as_array().unwrap())
        {
            assert_eq!(item["account"], me.account.id.as_str(), "{item}");
        }

        // Filtering by the other account's ids finds nothing rather than leaking.
        for path in [
            format!("/v1/deliveries?webhook={}", other.webhook),
            format!("/v1/deliveries?event={}", other.event),
        ] {
            let list = app.get(&path, key).await;
            assert!(ids(&list).is_empty(), "GET {path} leaked: {list}");
        }
    }
    // The admin, by contrast, sees both.
    let all = app.get("/v1/events", ADMIN).await;
    let mut seen = ids(&all);
    seen.sort_unstable();
    let mut want = vec![a.event.as_str(), b.event.as_str()];
    want.sort_unstable();
    assert_eq!(seen, want);
}

async fn every_route_answers_401_without_a_valid_credential(backend: Backend) {
    let World { app, a, b, .. } = world(backend).await;
    let accounts_before = app.get("/v1/accounts", ADMIN).await;
    let before = snapshot(&app, &a).await;

    let hook = json!({ "url": "http://127.0.0.1:9/x", "events": ["*"] });
    let publish = json!({ "account": a.account.id, "type": "tts.completed", "data": {} });
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/accounts".into(), None),
        (
            "POST",
            "/v1/accounts".into(),
            Some(json!({ "name": "Mallory" })),
        ),
        ("GET", format!("/v1/accounts/{}", a.account.id), None),
        ("GET", "/v1/webhooks".into(), None),
        ("POST", "/v1/webhooks".into(), Some(hook.clone())),
        ("GET", format!("/v1/webhooks/{}", a.webhook), None),
        ("PATCH", format!("/v1/webhooks/{}", a.webhook), Some(hook)),
        ("DELETE", format!("/v1/webhooks/{}", a.webhook), None),
        ("GET", format!("/v1/webhooks/{}/secret", a.webhook), None),
        ("GET", "/v1/events".into(), None),
        ("POST", "/v1/events".into(), Some(publish)),
        ("GET", format!("/v1/events/{}", a.event), None),
        ("GET", "/v1/deliveries".into(), None),
        ("GET", format!("/v1/deliveries/{}", a.delivery), None),
        ("POST", format!("/v1/deliveries/{}/retry", a.delivery), None),
        (
            "POST",
            format!("/v1/webhooks/{}/recover", a.webhook),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        ),
        (
            "POST",
            "/v1/deliveries/retry".into(),
            Some(json!({ "status": "failed", "since": "2020-01-01T00:00:00Z",
                         "until": "2040-01-01T00:00:00Z" })),
        ),
        ("GET", "/v1/tasks".into(), None),
    ];
    let mut almost_a_key = b.account.key.clone();
    almost_a_key.pop();
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("an unknown key", Some("Bearer hk_not-a-real-key".into())),
        (
            "a key missing its last character",
            Some(format!("Bearer {almost_a_key}")),
        ),
        (
            "the admin token plus a character",
            Some(format!("Bearer {ADMIN}x")),
        ),
        (
            "the admin token under Basic",
            Some(format!("Basic {ADMIN}")),
        ),
        ("the admin token without a scheme", Some(ADMIN.to_owned())),
        ("an empty bearer token", Some("Bearer ".into())),
        (
            "an over-long token",
            Some(format!("Bearer {}", "k".repeat(300))),
        ),
    ];
    for (method, path, body) in &routes {
        for (label, header) in &credentials {
            let raw = body.as_ref().map(Value::to_string);
            let headers: Vec<(&str, &str)> = header
                .iter()
                .map(|h| ("authorization", h.as_str()))
                .collect();
            let (status, answer) = app
                .call_raw(method, path, None, raw.as_deref(), &headers)
                .await;
            let what = format!("{method} {path} with {label}");
            assert_error(
                status,
                &answer,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &what,
            );
        }
    }

    assert_eq!(app.get("/v1/accounts", ADMIN).await, accounts_before);
    assert_eq!(
        snapshot(&app, &a).await,
        before,
        "no 401 call wrote anything"
    );
    // The health check and the event type catalog are public by design.
    for path in ["/healthz", "/v1/event-types"] {
        let (status, body) = app.call("GET", path, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }
}

async fn an_account_key_on_admin_only_routes_answers_403(backend: Backend) {
    let World { app, a, .. } = world(backend).await;
    let accounts_before = app.get("/v1/accounts", ADMIN).await;
    let events_before = app.get("/v1/events", ADMIN).await;
    let key = Some(a.account.key.as_str());
    let publish = json!({ "account": a.account.id, "type": "tts.completed", "data": {} });
    for (method, path, body) in [
        ("POST", "/v1/accounts", Some(json!({ "name": "Mallory" }))),
        ("GET", "/v1/accounts", None),
        ("POST", "/v1/events", Some(publish)),
    ] {
        let (status, answer) = app.call(method, path, key, body).await;
        let what = format!("{method} {path} with an account key");
        assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden", &what);
    }
    assert_eq!(app.get("/v1/accounts", ADMIN).await, accounts_before);
    assert_eq!(app.get("/v1/events", ADMIN).await, events_before);
}

on_both_backends!(
    the_newer_routes_answer_404_for_another_accounts_ids_too,
    another_accounts_ids_answer_404_on_every_route_and_change_nothing,
    naming_another_account_answers_404_on_lists_and_create,
    each_accounts_lists_hold_only_its_own_resources,
    every_route_answers_401_without_a_valid_credential,
    an_account_key_on_admin_only_routes_answers_403,
);
