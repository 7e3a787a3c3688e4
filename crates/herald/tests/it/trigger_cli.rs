//! `herald trigger`, the built binary against a real server: the catalog's example (or the data
//! given) reaches the subscribed webhooks, signed, with the type asked; refusals exit non-zero
//! with the API's message.

use crate::common::listen_cli::ListenCli;
use crate::common::{Backend, TestAccount, TestApp, TestReceiver};
use herald::domain::SigningSecret;
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;

async fn trigger(app: &TestApp, account: &TestAccount, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("trigger")
        .args(args)
        .args(["--api", &app.url(""), "--key", &account.key]);
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().await.expect("herald runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn secret_of(app: &TestApp, account: &TestAccount, webhook: &Value) -> SigningSecret {
    let id = webhook["id"].as_str().unwrap();
    let shown = app
        .get(&format!("/v1/webhooks/{id}/secret"), &account.key)
        .await;
    SigningSecret::parse(shown["secret"].as_str().unwrap()).unwrap()
}

async fn trigger_sends_the_example_signed_to_subscribed_webhooks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("acme").await;
    let tts = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/tts"), "events": ["tts.*"] }),
        )
        .await;
    let voice = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/voice"), "events": ["voice.ready"] }),
        )
        .await;

    let out = trigger(&app, &acme, &["tts.completed"]).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line per webhook triggered: {stdout}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        fields[..2],
        [tts["id"].as_str().unwrap(), tts["url"].as_str().unwrap()],
        "{stdout}"
    );
    assert!(fields[2].starts_with("dlv_"), "{stdout}");

    let got = receiver
        .wait_for(1, Some("/tts"), Duration::from_secs(10))
        .await;
    let r = &got[0];
    assert_eq!(r.header("herald-event-type"), "tts.completed");
    assert_eq!(r.header("webhook-id"), fields[2]);
    let (_, catalog) = app.call("GET", "/v1/event-types", None, None).await;
    let example = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tts.completed")
        .unwrap()["example"]
        .clone();
    assert_eq!(r.json()["type"], "tts.completed");
    assert_eq!(r.json()["data"], example);
    let secret = secret_of(&app, &acme, &tts).await;
    let timestamp = r.header("webhook-timestamp").parse().unwrap();
    assert!(secret.verify(
        r.header("webhook-id"),
        timestamp,
        &r.body,
        r.header("webhook-signature")
    ));

    // Given data, to one webhook named, even one that does not subscribe to the type.
    let voice_id = voice["id"].as_str().unwrap();
    let out = trigger(
        &app,
        &acme,
        &[
            "tts.failed",
            "--data",
            r#"{"id": "tts-9", "error": "boom"}"#,
            "--webhook",
            voice_id,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(voice_id),
        "{}",
        text(&out.stdout)
    );
    let got = receiver
        .wait_for(1, Some("/voice"), Duration::from_secs(10))
        .await;
    assert_eq!(got[0].header("herald-event-type"), "tts.failed");
    assert_eq!(
        got[0].json()["data"],
        json!({ "id": "tts-9", "error": "boom" })
    );
    assert_eq!(
        receiver.count(),
        2,
        "the tts webhook did not get the second one"
    );
}

async fn trigger_exits_non_zero_with_the_apis_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/tts"), "events": ["tts.*"] }),
    )
    .await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["tts.completed", "--data", r#"{"duration": "long"}"#],
            "data.duration",
        ),
        (&["tts.exploded"], "unknown event type"),
        (
            &["voice.ready"],
            "no active webhook of this account subscribes to voice.ready",
        ),
        (
            &["tts.completed", "--data", "{not json"],
            "--data is not JSON",
        ),
    ];
    for (args, says) in cases {
        let out = trigger(&app, &acme, args).await;
        assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let wrong_key = TestAccount {
        id: acme.id.clone(),
        key: "hk_wrong".into(),
    };
    let out = trigger(&app, &wrong_key, &["tts.completed"]).await;
    assert!(
        !out.status.success() && text(&out.stderr).contains("401"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(receiver.count(), 0, "nothing refused was sent");
}

/// `herald listen --forward-to` and `herald trigger` together, as `stripe listen` and
/// `stripe trigger`: the listener's ephemeral webhook is one of the account's, so the trigger
/// reaches the local receiver through the stream, signed under the secret the listener printed.
async fn trigger_reaches_a_listen_forward_to_listener(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("acme").await;
    let cli = ListenCli::start(
        &app.url(""),
        &acme.key,
        &receiver.url("/local"),
        &["--events", "voice.*"],
    );
    let (secret, webhook) = cli.ready().await;

    let out = trigger(&app, &acme, &["voice.ready"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&webhook),
        "the listener was triggered: {stdout}"
    );
    let got = receiver
        .wait_for(1, Some("/local"), Duration::from_secs(20))
        .await;
    let r = &got[0];
    assert_eq!(r.json()["type"], "voice.ready");
    assert_eq!(
        r.json()["data"],
        json!({ "id": "voice-789", "name": "Narrator" })
    );
    let timestamp = r.header("webhook-timestamp").parse().unwrap();
    let secret = SigningSecret::parse(&secret).unwrap();
    assert!(secret.verify(
        r.header("webhook-id"),
        timestamp,
        &r.body,
        r.header("webhook-signature")
    ));
    let (status, _) = cli.interrupt().await;
    assert!(status.success());
}

on_both_backends!(
    trigger_sends_the_example_signed_to_subscribed_webhooks,
    trigger_exits_non_zero_with_the_apis_message,
    trigger_reaches_a_listen_forward_to_listener,
);
