//! The ed25519 private key signs deliveries, so whoever reads it can forge them: no API answer
//! shows one, on any route that shows webhooks or their keys, to an account or to the operator.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{ADMIN, Backend, TestApp, TestReceiver, verify_with_python};
use herald::domain::{SigningMode, SigningSecret};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn with(mut case: Value, key: &str, value: &str) -> Value {
    case[key] = json!(value);
    case
}

/// Every answer an API call gets, to search for private keys.
struct Answers<'a> {
    app: &'a TestApp,
    seen: Vec<(String, String)>,
}

impl Answers<'_> {
    /// Makes a call that must succeed, keeps its answer and returns it.
    async fn call(&mut self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.app.call(method, path, Some(token), body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        self.seen
            .push((format!("{method} {path}"), answer.to_string()));
        answer
    }

    async fn get(&mut self, path: &str, token: &str) -> Value {
        self.call("GET", path, token, None).await
    }
}

fn ed25519_key(byte: u8) -> String {
    format!("whsk_{}", STANDARD.encode([byte; 32]))
}

fn public_of(private: &str) -> String {
    SigningSecret::parse(private).unwrap().public_key().unwrap()
}

/// Create, get, list, secret, rotate (generated and given keys), PATCH (also a switch to
/// ed25519), enable, the callback URL, the signing secret, jobs and deliveries: the public key is
/// shown instead, and deliveries of every registration model verify with it.
async fn no_answer_holds_an_ed25519_private_key(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.registration.job.signing = SigningMode::Ed25519;
    })
    .await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let key = acme.key.clone();
    let mut a = Answers {
        app: &app,
        seen: Vec::new(),
    };
    let (given, rotated_to) = (ed25519_key(7), ed25519_key(9));
    let ed = json!({ "mode": "ed25519" });

    let generated = a
        .call(
            "POST",
            "/v1/webhooks",
            &key,
            Some(json!({ "url": receiver.url("/generated"), "events": ["*"], "signing": ed })),
        )
        .await;
    let own = a
        .call("POST", "/v1/webhooks", &key, Some(json!({ "url": receiver.url("/own"), "events": ["*"], "signing": ed, "secret": given }))).await;
    let standard = a
        .call(
            "POST",
            "/v1/webhooks",
            &key,
            Some(json!({ "url": receiver.url("/switched"), "events": ["*"] })),
        )
        .await;
    let [generated, own, standard] =
        [generated, own, standard].map(|w| w["id"].as_str().unwrap().to_owned());
    let keys = a.get(&format!("/v1/webhooks/{own}/secret"), &key).await;
    assert_eq!(keys["public_key"], json!(public_of(&given)), "{keys}");
    a.get(&format!("/v1/webhooks/{generated}"), &key).await;
    a.get("/v1/webhooks", &key).await;
    a.get(&format!("/v1/webhooks/{generated}/secret"), &key)
        .await;
    a.call(
        "PATCH",
        &format!("/v1/webhooks/{own}"),
        &key,
        Some(json!({ "description": "mine" })),
    )
    .await;
    a.call(
        "PATCH",
        &format!("/v1/webhooks/{standard}"),
        &key,
        Some(json!({ "signing": ed })),
    )
    .await;
    a.get(&format!("/v1/webhooks/{standard}/secret"), &key)
        .await;
    let rotated = a
        .call(
            "POST",
            &format!("/v1/webhooks/{own}/secret/rotate"),
            &key,
            Some(json!({ "secret": rotated_to })),
        )
        .await;
    assert_eq!(
        rotated["public_key"],
        json!(public_of(&rotated_to)),
        "{rotated}"
    );
    a.call(
        "POST",
        &format!("/v1/webhooks/{generated}/secret/rotate"),
        &key,
        None,
    )
    .await;
    let keys = a.get(&format!("/v1/webhooks/{own}/secret"), &key).await;
    assert_eq!(
        keys["previous_secret"]["public_key"],
        json!(public_of(&given)),
        "{keys}"
    );
    a.call("POST", &format!("/v1/webhooks/{own}/enable"), &key, None)
        .await;
    let callback = a
        .call(
            "PUT",
            "/v1/me/callback-url",
            &key,
            Some(json!({ "callback_url": receiver.url("/callback"), "signing": ed })),
        )
        .await;
    let callback = callback["webhook_id"].as_str().unwrap().to_owned();
    a.get("/v1/me/callback-url", &key).await;
    a.get("/v1/me/signing-secret", &key).await;
    // The operator sees no more: nothing outside the server needs the private key.
    let acc = format!("?account={}", acme.id);
    a.get(&format!("/v1/webhooks{acc}"), ADMIN).await;
    a.get(&format!("/v1/webhooks/{own}{acc}"), ADMIN).await;
    a.get(&format!("/v1/webhooks/{own}/secret{acc}"), ADMIN)
        .await;
    a.call(
        "POST",
        &format!("/v1/webhooks/{own}/secret/rotate{acc}"),
        ADMIN,
        Some(json!({ "grace_period": "1h" })),
    )
    .await;

    // Every registration model delivers with a key whose public half the API shows.
    a.call("POST", "/v1/jobs", ADMIN, Some(json!({ "account": acme.id, "kind": "tts", "id": "tts-1", "webhook_url": receiver.url("/job") }))).await;
    a.call(
        "PATCH",
        "/v1/jobs/tts-1",
        ADMIN,
        Some(json!({ "status": "completed" })),
    )
    .await;
    a.get("/v1/jobs/tts-1", &key).await;
    app.publish(&acme, "voice.ready", json!({ "voice": "v1" }))
        .await;
    let paths = ["/generated", "/own", "/switched", "/callback", "/job"];
    for path in paths {
        receiver.wait_for(1, Some(path), WAIT).await;
    }
    let deliveries = a.get("/v1/deliveries", &key).await;
    let named = [&generated, &own, &standard, &callback].map(String::as_str);
    let job_webhook = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap())
        .find(|w| !named.contains(w))
        .expect("a delivery to the job's webhook")
        .to_owned();
    let mut cases = Vec::new();
    for (path, webhook) in
        paths
            .into_iter()
            .zip([&generated, &own, &standard, &callback, &job_webhook])
    {
        let got = receiver.wait_for(1, Some(path), WAIT).await;
        let keys = a.get(&format!("/v1/webhooks/{webhook}/secret"), &key).await;
        assert!(
            got[0].header("webhook-signature").contains("v1a,"),
            "{path}"
        );
        cases.push(with(
            got[0].signed_case(),
            "public_key",
            keys["public_key"].as_str().unwrap(),
        ));
    }
    verify_with_python("verify_ed25519.py", &Value::Array(cases));

    assert!(a.seen.len() > 25, "{} answers", a.seen.len());
    for (call, answer) in &a.seen {
        for private in [&given, &rotated_to] {
            let bare = private.strip_prefix("whsk_").unwrap();
            assert!(
                !answer.contains(bare),
                "{call} shows a private key: {answer}"
            );
        }
        assert!(
            !answer.contains("whsk_"),
            "{call} shows a private key: {answer}"
        );
    }
}

on_both_backends!(no_answer_holds_an_ed25519_private_key);
