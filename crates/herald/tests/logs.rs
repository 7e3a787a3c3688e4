//! Secrets never reach a log line: a server runs in this process under a DEBUG subscriber that
//! writes to a buffer; after a full flow (account and API key, webhooks with known secrets and
//! tokens, deliveries, a failing one, a retry, a rotation, all under a `HERALD_SECRETS_KEY`)
//! the buffer holds none of them.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{ADMIN, Backend, Reply, TestApp, TestReceiver};
use herald::store::seal::SecretsKey;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Everything the process logged, from the first call on.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = buffer.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || SharedWriter(sink.clone()))
                .try_init()
                .expect("the only subscriber of this test process");
            buffer
        })
        .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hmac_secret(fill: u8) -> String {
    format!("whsec_{}", STANDARD.encode([fill; 32]))
}

async fn no_secret_or_token_appears_in_debug_logs(backend: Backend) {
    let logs = captured_logs();
    let secrets_key = SecretsKey::generate();
    let app = TestApp::spawn_with(backend, |s| s.secrets_key = Some(secrets_key.clone())).await;
    let good = TestReceiver::start().await;
    let failing = TestReceiver::start().await;
    failing.set_default(Reply::status(500));

    let acme = app.create_account("Acme").await;
    let standard = hmac_secret(7);
    let rotated = hmac_secret(9);
    let ed25519 = format!("whsk_{}", STANDARD.encode([5u8; 32]));
    let bearer = "bearer-token-3f9a1c7e5d2b4a6f";
    let header_value = "header-secret-8e1d4c2a9b7f";
    let one_try = json!({ "schedule": [], "timeout": "2s" });
    let hook = |url: String, extra: serde_json::Value| {
        let mut body = json!({ "url": url, "events": ["*"] });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let signed = app
        .create_webhook(
            &acme,
            hook(good.url("/standard"), json!({ "secret": standard })),
        )
        .await;
    app.create_webhook(
        &acme,
        hook(
            good.url("/ed25519"),
            json!({ "secret": ed25519, "signing": { "mode": "ed25519" } }),
        ),
    )
    .await;
    app.create_webhook(
        &acme,
        hook(
            good.url("/bearer"),
            json!({ "signing": { "mode": "bearer", "token": bearer } }),
        ),
    )
    .await;
    app.create_webhook(
        &acme,
        hook(
            failing.url("/failing"),
            json!({ "signing": { "mode": "bearer", "token": bearer }, "retry": one_try }),
        ),
    )
    .await;
    app.create_webhook(
        &acme,
        hook(
            "http://127.0.0.1:9/refused".to_owned(),
            json!({
                "signing": { "mode": "header", "name": "secret-key", "value": header_value },
                "retry": one_try,
            }),
        ),
    )
    .await;

    let event = app
        .publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    good.wait_for(3, None, WAIT).await;
    let bearer_seen = good.wait_for(1, Some("/bearer"), WAIT).await;
    assert_eq!(
        bearer_seen[0].header("authorization"),
        format!("Bearer {bearer}")
    );
    for d in app
        .deliveries_of(&acme, event["id"].as_str().unwrap())
        .await
    {
        let id = d["id"].as_str().unwrap();
        let done = common::eventually("every delivery to end", WAIT, || async {
            let d = app.get(&format!("/v1/deliveries/{id}"), &acme.key).await;
            (d["status"] != "pending").then_some(d)
        })
        .await;
        if done["status"] == "failed" {
            let (status, _) = app
                .call(
                    "POST",
                    &format!("/v1/deliveries/{id}/retry"),
                    Some(&acme.key),
                    None,
                )
                .await;
            assert_eq!(status, 202);
        }
    }
    let rotate = format!(
        "/v1/webhooks/{}/secret/rotate",
        signed["id"].as_str().unwrap()
    );
    let (status, answer) = app
        .call(
            "POST",
            &rotate,
            Some(&acme.key),
            Some(json!({ "secret": rotated })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    app.publish(&acme, "tts.completed", json!({ "id": "tts-2" }))
        .await;
    let after_rotation = good.wait_for(2, Some("/standard"), WAIT).await;
    assert!(after_rotation[1].header("webhook-signature").contains(' '));
    // Calls with a wrong credential and with a bad body are logged too, if anything is.
    let (status, _) = app
        .call("GET", "/v1/webhooks", Some(&format!("{}x", acme.key)), None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&acme.key),
            Some(json!({ "url": "ftp://x/", "events": ["*"], "secret": standard })),
        )
        .await;
    assert_eq!(status, 422);
    // A key made, used, revoked and tried again.
    let (status, made) = app
        .call(
            "POST",
            "/v1/me/keys",
            Some(&acme.key),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let new_key = made["key"].as_str().unwrap().to_owned();
    let (status, _) = app.call("GET", "/v1/webhooks", Some(&new_key), None).await;
    assert_eq!(status, 200);
    let revoke = format!("/v1/me/keys/{}", made["id"].as_str().unwrap());
    let (status, _) = app.call("DELETE", &revoke, Some(&acme.key), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "/v1/webhooks", Some(&new_key), None).await;
    assert_eq!(status, 401);
    failing.wait_for(2, None, WAIT).await;

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("DEBUG") && text.contains("attempt finished"),
        "the subscriber captured the server's debug lines:\n{text}"
    );
    let mut secrets = vec![
        ("admin token", ADMIN.to_owned()),
        ("API key", acme.key.clone()),
        ("bearer token", bearer.to_owned()),
        ("header value", header_value.to_owned()),
        ("secrets key", secrets_key.to_base64()),
    ];
    for (what, secret) in [
        ("HMAC secret", &standard),
        ("rotated HMAC secret", &rotated),
        ("ed25519 secret", &ed25519),
    ] {
        secrets.push((what, secret.clone()));
        // The key material alone, without its prefix.
        let bare = secret.split_once('_').unwrap().1.to_owned();
        secrets.push((what, bare));
    }
    secrets.push(("API key", acme.key.strip_prefix("hk_").unwrap().to_owned()));
    secrets.push(("second API key", new_key.clone()));
    secrets.push((
        "second API key",
        new_key.strip_prefix("hk_").unwrap().to_owned(),
    ));
    for (what, secret) in secrets {
        assert!(
            !text.contains(&secret),
            "the {what} appears in the logs:\n{}",
            text.lines()
                .filter(|l| l.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

on_both_backends!(no_secret_or_token_appears_in_debug_logs);
