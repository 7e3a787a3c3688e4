//! Signing modes and secret rotation, checked with independent verifiers.

mod common;

use common::{Backend, TestApp, TestReceiver, verify_with_python};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn with(mut case: Value, key: &str, value: &str) -> Value {
    case[key] = json!(value);
    case
}

async fn during_a_rotation_deliveries_verify_with_the_old_and_the_new_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let id = webhook["id"].as_str().unwrap();
    let old = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, rotated) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(&acme.key),
            Some(json!({ "grace_period": "1h" })),
        )
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    app.publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    let got = receiver.wait_for(1, None, WAIT).await;
    let signatures = got[0].header("webhook-signature");
    assert_eq!(
        signatures.split(' ').count(),
        2,
        "both signatures, single-space separated: {signatures}"
    );
    let case = got[0].signed_case();
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([
            with(case.clone(), "secret", &old),
            with(case, "secret", &new)
        ]),
    );

    // A rotation without grace drops the old secret at once.
    let (_, again) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(&acme.key),
            Some(json!({ "grace_period": "0s" })),
        )
        .await;
    app.publish(&acme, "tts.completed", json!({ "id": "tts-2" }))
        .await;
    let got = receiver.wait_for(2, None, WAIT).await;
    assert_eq!(got[1].header("webhook-signature").split(' ').count(), 1);
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([with(
            got[1].signed_case(),
            "secret",
            again["secret"].as_str().unwrap()
        )]),
    );
}

async fn ed25519_deliveries_verify_against_the_published_public_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/"), "events": ["*"], "signing": { "mode": "ed25519" } }),
        )
        .await;
    assert_eq!(webhook["signing"], json!({ "mode": "ed25519" }));
    let id = webhook["id"].as_str().unwrap();
    let keys = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    let public_key = keys["public_key"].as_str().unwrap().to_owned();
    assert!(
        public_key.starts_with("whpk_") && keys["secret"].as_str().unwrap().starts_with("whsk_")
    );
    app.publish(&acme, "voice.ready", json!({ "voice": "v1" }))
        .await;
    let got = receiver.wait_for(1, None, WAIT).await;
    assert!(got[0].header("webhook-signature").starts_with("v1a,"));
    verify_with_python(
        "verify_ed25519.py",
        &json!([with(got[0].signed_case(), "public_key", &public_key)]),
    );

    // Rotating an ed25519 webhook signs with both key pairs during the grace period.
    let (_, rotated) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(&acme.key),
            None,
        )
        .await;
    let new_public = rotated["public_key"].as_str().unwrap().to_owned();
    app.publish(&acme, "voice.ready", json!({ "voice": "v2" }))
        .await;
    let got = receiver.wait_for(2, None, WAIT).await;
    let case = got[1].signed_case();
    verify_with_python(
        "verify_ed25519.py",
        &json!([
            with(case.clone(), "public_key", &public_key),
            with(case, "public_key", &new_public)
        ]),
    );
}

async fn bearer_header_and_none_modes_send_what_they_say(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    for (path, signing) in [
        ("/bearer", json!({ "mode": "bearer", "token": "tok_123" })),
        (
            "/header",
            json!({ "mode": "header", "name": "secret-key", "value": "sk_456" }),
        ),
        ("/none", json!({ "mode": "none" })),
    ] {
        let w = app
            .create_webhook(&acme, json!({ "url": receiver.url(path), "events": ["*"], "signing": signing, "format": "raw" }))
            .await;
        assert!(
            w["signing"].get("token").is_none() && w["signing"].get("value").is_none(),
            "credentials are not shown: {w}"
        );
    }
    let (s, e) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&acme.key),
            Some(json!({ "url": receiver.url("/x"), "events": ["*"],
            "signing": { "mode": "header", "name": "Content-Length", "value": "1" } })),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (422, Some("signing"))
    );
    app.publish(&acme, "stt.completed", json!({ "text": "hi" }))
        .await;
    let got = receiver.wait_for(3, None, WAIT).await;
    let at = |p: &str| got.iter().find(|r| r.path == p).unwrap().clone();
    assert_eq!(at("/bearer").header("authorization"), "Bearer tok_123");
    assert_eq!(at("/header").header("secret-key"), "sk_456");
    let none = at("/none");
    assert!(
        none.headers.get("webhook-signature").is_none()
            && none.headers.get("authorization").is_none()
    );
    assert_eq!(
        none.json(),
        json!({ "text": "hi" }),
        "format raw sends the bare data"
    );
}

on_both_backends!(
    during_a_rotation_deliveries_verify_with_the_old_and_the_new_secret,
    ed25519_deliveries_verify_against_the_published_public_key,
    bearer_header_and_none_modes_send_what_they_say,
);
