//! Signing modes and secret rotation, checked with independent verifiers.

use crate::common;

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
        public_key.starts_with("whpk_") && keys.get("secret").is_none(),
        "the public key only: {keys}"
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
    assert!(rotated.get("secret").is_none(), "{rotated}");
    let keys = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    assert_eq!(
        (
            keys["public_key"].as_str(),
            keys["previous_secret"]["public_key"].as_str()
        ),
        (Some(new_public.as_str()), Some(public_key.as_str())),
        "{keys}"
    );
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

/// The `webhook-signature` of a delivery during a switch: `v1,<hmac> v1a,<ed25519>`, one space.
fn assert_signed_both_ways(header: &str) {
    let entries: Vec<&str> = header.split(' ').collect();
    assert!(
        entries.len() == 2 && entries[0].starts_with("v1,") && entries[1].starts_with("v1a,"),
        "v1 then v1a, single-space separated: {header:?}"
    );
}

async fn patch(app: &TestApp, key: &str, id: &str, body: Value) -> (u16, Value) {
    let (status, answer) = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(key),
            Some(body),
        )
        .await;
    (status.as_u16(), answer)
}

/// A change of signing mode between `standard` and `ed25519` keeps the old scheme signing beside
/// the new one for the grace period: receivers still verifying with the old key are not cut off.
async fn a_switch_of_signing_mode_keeps_the_old_signature_during_the_grace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let id = webhook["id"].as_str().unwrap();
    let secret_path = format!("/v1/webhooks/{id}/secret");
    let old = app.get(&secret_path, &acme.key).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, answer) = patch(
        &app,
        &acme.key,
        id,
        json!({ "signing": { "mode": "ed25519" } }),
    )
    .await;
    assert_eq!(
        (status, &answer["signing"]),
        (200, &json!({ "mode": "ed25519" })),
        "{answer}"
    );
    let keys = app.get(&secret_path, &acme.key).await;
    let public_key = keys["public_key"].as_str().unwrap().to_owned();
    assert!(keys.get("secret").is_none(), "{keys}");
    assert_eq!(keys["previous_secret"]["secret"], json!(old), "{keys}");
    assert!(keys["previous_secret"]["expires_at"].is_string(), "{keys}");
    app.publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    let got = receiver.wait_for(1, None, WAIT).await;
    assert_signed_both_ways(got[0].header("webhook-signature"));
    let case = got[0].signed_case();
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([with(case.clone(), "secret", &old)]),
    );
    verify_with_python(
        "verify_ed25519.py",
        &json!([with(case, "public_key", &public_key)]),
    );

    // And back, with a grace period of the customer's choosing: v1a goes on beside the new v1.
    let (status, answer) = patch(
        &app,
        &acme.key,
        id,
        json!({ "signing": { "mode": "standard" }, "grace_period": "1h" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let keys = app.get(&secret_path, &acme.key).await;
    let new = keys["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old, "{keys}");
    assert_eq!(
        keys["previous_secret"]["public_key"],
        json!(public_key),
        "{keys}"
    );
    app.publish(&acme, "tts.completed", json!({ "id": "tts-2" }))
        .await;
    let got = receiver.wait_for(2, None, WAIT).await;
    assert_signed_both_ways(got[1].header("webhook-signature"));
    let case = got[1].signed_case();
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([with(case.clone(), "secret", &new)]),
    );
    verify_with_python(
        "verify_ed25519.py",
        &json!([with(case, "public_key", &public_key)]),
    );

    // `0s`: the new scheme alone, at once.
    let (status, answer) = patch(
        &app,
        &acme.key,
        id,
        json!({ "signing": { "mode": "ed25519" }, "grace_period": "0s" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let keys = app.get(&secret_path, &acme.key).await;
    assert!(keys.get("previous_secret").is_none(), "{keys}");
    app.publish(&acme, "tts.completed", json!({ "id": "tts-3" }))
        .await;
    let got = receiver.wait_for(3, None, WAIT).await;
    let signature = got[2].header("webhook-signature");
    assert!(
        signature.starts_with("v1a,") && !signature.contains(' '),
        "{signature}"
    );
    verify_with_python(
        "verify_ed25519.py",
        &json!([with(
            got[2].signed_case(),
            "public_key",
            keys["public_key"].as_str().unwrap()
        )]),
    );

    // A grace period needs a change of signing, and is at most 7 days; a refusal changes nothing.
    for body in [
        json!({ "grace_period": "1h" }),
        json!({ "signing": { "mode": "standard" }, "grace_period": "8d" }),
    ] {
        let (status, answer) = patch(&app, &acme.key, id, body).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some("grace_period")),
            "{answer}"
        );
    }
    assert_eq!(app.get(&secret_path, &acme.key).await, keys);
}

/// The callback URL switches the same way: `PUT /v1/me/callback-url` with another `signing`
/// gives it a key of the new kind, and the account's HMAC secret keeps signing during the grace.
async fn a_callback_url_switched_between_hmac_and_ed25519_keeps_both_during_the_grace(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let put = |signing: &str| {
        let body =
            json!({ "callback_url": receiver.url("/callback"), "signing": { "mode": signing } });
        let (app, key) = (&app, acme.key.clone());
        async move {
            let (status, answer) = app
                .call("PUT", "/v1/me/callback-url", Some(&key), Some(body))
                .await;
            assert_eq!(status, 200, "{answer}");
            answer["webhook_id"].as_str().unwrap().to_owned()
        }
    };
    let id = put("standard").await;
    let account_secret = app.get("/v1/me/signing-secret", &acme.key).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(put("ed25519").await, id, "the same callback webhook");
    let keys = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    let public_key = keys["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        keys["previous_secret"]["secret"],
        json!(account_secret),
        "{keys}"
    );
    assert_eq!(put("ed25519").await, id);
    let again = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    assert_eq!(again, keys, "setting the same mode again keeps the key");
    app.publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;

    put("standard").await;
    let keys = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    assert_eq!(
        (&keys["secret"], &keys["previous_secret"]["public_key"]),
        (&json!(account_secret), &json!(public_key)),
        "{keys}"
    );
    app.publish(&acme, "tts.completed", json!({ "id": "tts-2" }))
        .await;
    let got = receiver.wait_for(2, None, WAIT).await;
    for delivery in &got {
        assert_signed_both_ways(delivery.header("webhook-signature"));
    }
    let cases: Vec<Value> = got.iter().map(|r| r.signed_case()).collect();
    verify_with_python(
        "verify_standardwebhooks.py",
        &Value::Array(
            cases
                .iter()
                .map(|c| with(c.clone(), "secret", &account_secret))
                .collect(),
        ),
    );
    verify_with_python(
        "verify_ed25519.py",
        &Value::Array(
            cases
                .iter()
                .map(|c| with(c.clone(), "public_key", &public_key))
                .collect(),
        ),
    );
    let (status, answer) = app
        .call(
            "PUT",
            "/v1/me/callback-url",
            Some(&acme.key),
            Some(json!({ "callback_url": receiver.url("/callback"), "grace_period": "8d" })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), answer["error"]["field"].as_str()),
        (422, Some("grace_period")),
        "{answer}"
    );
}

on_both_backends!(
    a_callback_url_switched_between_hmac_and_ed25519_keeps_both_during_the_grace,
    a_switch_of_signing_mode_keeps_the_old_signature_during_the_grace,
    during_a_rotation_deliveries_verify_with_the_old_and_the_new_secret,
    ed25519_deliveries_verify_against_the_published_public_key,
    bearer_header_and_none_modes_send_what_they_say,
);
