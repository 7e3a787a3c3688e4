//! `herald listen --forward-to` (issue 16, acceptance 5): the built CLI against a server started
//! without `--dev`, which never connects to the customer: deliveries come down the CLI's stream
//! and reach a local receiver signed as over HTTP; the local answer is the attempt's outcome;
//! Ctrl-C removes the ephemeral webhook; a stream cut mid-delivery loses nothing; a listener's
//! deliveries go out through the node holding its stream; and a listener whose node died is
//! removed by retention.

use crate::common;

use common::listen_cli::ListenCli;
use common::{
    ADMIN, Backend, Reply, ServerProcess, TestAccount, TestApp, TestEnv, TestReceiver, eventually,
    verify_with_python,
};
use herald::config::Settings;
use herald::domain::duration::HumanDuration;
use herald::domain::{RetryOn, RetryPolicyDoc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A server without `--dev`, whose subscription-model retries (the listeners') are quick.
async fn server(backend: Backend, schedule: &[&str]) -> TestApp {
    let schedule: Vec<String> = schedule.iter().map(|s| s.to_string()).collect();
    TestApp::spawn_with(backend, move |s: &mut Settings| {
        s.dev = false;
        s.registration.subscription.retry = Some(RetryPolicyDoc {
            schedule: Some(schedule),
            retry_on: Some(RetryOn::Any),
            preset: None,
            timeout: Some("5s".to_owned()),
            jitter: None,
        });
    })
    .await
}

async fn webhooks(app: &TestApp, account: &TestAccount) -> Vec<Value> {
    app.get("/v1/webhooks", &account.key).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn attempts(app: &TestApp, account: &TestAccount, delivery: &str) -> Vec<Value> {
    app.get(&format!("/v1/deliveries/{delivery}"), &account.key)
        .await["attempts"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_published_event_reaches_the_local_receiver_signed_under_the_printed_secret(
    backend: Backend,
) {
    let app = server(backend, &["1s"]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    // Not in dev mode: the server itself refuses to deliver to a loopback URL…
    let (status, refused) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&account.key),
            Some(json!({ "url": receiver.url("/hook"), "events": ["*"] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    // …and the CLI beside the receiver brings the deliveries to it all the same.
    let cli = ListenCli::start(
        &app.url(""),
        &account.key,
        &receiver.url("/hook"),
        &["--events", "tts.*"],
    );
    let (secret, webhook) = cli.ready().await;
    let listed = webhooks(&app, &account).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], webhook.as_str());
    assert_eq!(listed[0]["kind"], "listener");
    assert_eq!(listed[0]["events"], json!(["tts.*"]));

    let data = json!({ "id": "tts_1", "text": "héllo", "duration": 1.5 });
    let published = app.publish(&account, "tts.completed", data.clone()).await;
    let got = receiver.wait_for(1, Some("/hook"), WAIT).await;
    let delivery = app.first_delivery(&account, &published).await;
    assert_eq!(got[0].header("webhook-id"), delivery);
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].json()["type"], "tts.completed");
    assert_eq!(got[0].json()["data"], data);
    let mut case = got[0].signed_case();
    case["secret"] = json!(secret);
    verify_with_python("verify_standardwebhooks.py", &json!([case]));

    let done = app
        .wait_for_status(&account, &delivery, "succeeded", WAIT)
        .await;
    assert_eq!(done["attempts_made"], 1);
    let tried = attempts(&app, &account, &delivery).await;
    assert_eq!(tried[0]["status_code"], 200, "{tried:?}");
    assert_eq!(tried[0]["response_body"], "receiver says hi");
    let line = cli.line(&delivery).await;
    assert!(
        line.contains("tts.completed") && line.contains("[200]"),
        "one line per delivery with its type, id and local status: {line}"
    );
    // Not subscribed: no delivery for the listener.
    let other = app.publish(&account, "stt.completed", json!({})).await;
    assert_eq!(other["deliveries"], 0, "{other}");
}

async fn a_local_500_is_the_attempts_status_and_is_retried(backend: Backend) {
    let app = server(backend, &["200ms", "200ms"]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply::status(500)]);
    let cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    cli.ready().await;
    let published = app
        .publish(&account, "tts.completed", json!({ "id": "tts_2" }))
        .await;
    let delivery = app.first_delivery(&account, &published).await;
    app.wait_for_status(&account, &delivery, "succeeded", WAIT)
        .await;
    let tried = attempts(&app, &account, &delivery).await;
    let codes: Vec<&Value> = tried.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(200)], "{tried:?}");
    let got = receiver.wait_for(2, Some("/hook"), WAIT).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].header("herald-attempt"), "2");
    assert!(cli.line("[500]").await.contains(&delivery));
}

async fn ctrl_c_removes_the_ephemeral_webhook(backend: Backend) {
    let app = server(backend, &["1s"]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    let cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    let (_, webhook) = cli.ready().await;
    assert_eq!(webhooks(&app, &account).await.len(), 1);
    let (status, output) = cli.interrupt().await;
    assert!(status.success(), "{status}: {output}");
    assert!(output.contains("Stopped"), "{output}");
    eventually("the listener webhook to be deleted", WAIT, || async {
        webhooks(&app, &account).await.is_empty().then_some(())
    })
    .await;
    let (code, _) = app
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook}"),
            Some(&account.key),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let published = app.publish(&account, "tts.completed", json!({})).await;
    assert_eq!(published["deliveries"], 0, "{published}");
}

async fn a_stream_cut_mid_delivery_is_retried_when_a_listener_is_back(backend: Backend) {
    let app = server(backend, &["300ms"; 20]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    // The local receiver holds the first request until the CLI is gone.
    receiver.script(vec![Reply::status(200).after(Duration::from_secs(60))]);
    let mut cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    let (secret, webhook) = cli.ready().await;
    let published = app
        .publish(&account, "tts.completed", json!({ "id": "tts_3" }))
        .await;
    receiver.wait_for(1, Some("/hook"), WAIT).await;
    cli.kill_9().await;
    let delivery = app.first_delivery(&account, &published).await;
    // The cut attempt, and those made while no listener is connected, fail and are retried.
    eventually(
        "attempts to fail while no listener is connected",
        WAIT,
        || async {
            let tried = attempts(&app, &account, &delivery).await;
            (tried.len() >= 2).then_some(())
        },
    )
    .await;
    let tried = attempts(&app, &account, &delivery).await;
    assert_eq!(tried[0]["error_kind"], "connect", "{tried:?}");
    assert!(
        tried[0]["error"]
            .as_str()
            .unwrap()
            .contains("stream closed"),
        "{tried:?}"
    );
    assert!(
        tried[1]["error"]
            .as_str()
            .unwrap()
            .contains("no `herald listen` stream"),
        "{tried:?}"
    );
    // A listener back on the same webhook (same secret) gets the delivery.
    let back = ListenCli::start(
        &app.url(""),
        &account.key,
        &receiver.url("/hook"),
        &["--resume", &webhook],
    );
    let (same_secret, same_webhook) = back.ready().await;
    assert_eq!((&same_secret, &same_webhook), (&secret, &webhook));
    app.wait_for_status(&account, &delivery, "succeeded", WAIT)
        .await;
    let got = receiver.wait_for(2, Some("/hook"), WAIT).await;
    let last = got.last().unwrap();
    assert_eq!(last.header("webhook-id"), delivery);
    let mut case = last.signed_case();
    case["secret"] = json!(secret);
    verify_with_python("verify_standardwebhooks.py", &json!([case]));
}

async fn a_stream_cut_mid_delivery_with_no_listener_back_fails_per_its_policy(backend: Backend) {
    let app = server(backend, &["200ms", "200ms"]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(200).after(Duration::from_secs(60)));
    let mut cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    cli.ready().await;
    let published = app
        .publish(&account, "tts.completed", json!({ "id": "tts_4" }))
        .await;
    receiver.wait_for(1, Some("/hook"), WAIT).await;
    cli.kill_9().await;
    let delivery = app.first_delivery(&account, &published).await;
    let failed = app
        .wait_for_status(&account, &delivery, "failed", WAIT)
        .await;
    assert_eq!(failed["attempts_made"], 3, "{failed}");
    let tried = attempts(&app, &account, &delivery).await;
    assert!(
        tried.iter().all(|a| a["error_kind"] == "connect"),
        "{tried:?}"
    );
}

/// The server shuts down (its streams close, "going away") and comes back: the CLI reconnects by
/// itself to the same webhook, and deliveries go on under the same secret.
async fn the_cli_reconnects_to_its_webhook_when_the_server_restarts(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut settings = env.settings();
    settings.dev = false;
    let mut app = TestApp::start(settings.clone()).await;
    settings.listen = app.addr;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    let cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    let (secret, webhook) = cli.ready().await;
    app.stop().await;
    cli.line("Lost the stream").await;
    let app = TestApp::start(settings).await;
    cli.line("Reconnected").await;
    let listed = webhooks(&app, &account).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], webhook.as_str(), "the same webhook");
    let published = app
        .publish(&account, "tts.completed", json!({ "id": "tts_5" }))
        .await;
    let got = receiver.wait_for(1, Some("/hook"), WAIT).await;
    assert_eq!(
        got[0].header("webhook-id"),
        app.first_delivery(&account, &published).await
    );
    let mut case = got[0].signed_case();
    case["secret"] = json!(secret);
    verify_with_python("verify_standardwebhooks.py", &json!([case]));
    cli.interrupt().await;
}

/// Node A holds the stream and dies (kill -9, with its CLI); node B, on the same store, neither
/// claims the listener's deliveries nor keeps the webhook once its lease lapses.
async fn a_listener_whose_node_died_is_removed_by_retention(backend: Backend) {
    herald::install_tls_provider();
    let env = TestEnv::new(backend).await;
    // Long enough that node B is up before it lapses, short enough for the test.
    let mut node_a = ServerProcess::start(&env, "node-a", "[listeners]\nlease = \"5s\"\n").await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/v1/accounts", node_a.base))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = TestAccount {
        id: created["id"].as_str().unwrap().to_owned(),
        key: created["api_key"].as_str().unwrap().to_owned(),
    };
    let receiver = TestReceiver::start().await;
    let mut cli = ListenCli::start(&node_a.base, &account.key, &receiver.url("/hook"), &[]);
    let (_, webhook) = cli.ready().await;
    node_a.kill_9();
    cli.kill_9().await;

    let mut settings = env.settings();
    settings.node_id = Some("node-b".to_owned());
    settings.retention.interval = HumanDuration(Duration::from_millis(200));
    let node_b = TestApp::start(settings).await;
    // Published while the listener's lease still runs: B does not claim it (A held it).
    let published = node_b.publish(&account, "tts.completed", json!({})).await;
    assert_eq!(published["deliveries"], 1, "{published}");
    let delivery = node_b.first_delivery(&account, &published).await;
    eventually("retention to remove the lapsed listener", WAIT, || async {
        webhooks(&node_b, &account).await.is_empty().then_some(())
    })
    .await;
    let (code, _) = node_b
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook}"),
            Some(&account.key),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let cancelled = node_b
        .wait_for_status(&account, &delivery, "cancelled", WAIT)
        .await;
    assert_eq!(cancelled["attempts_made"], 0, "node B never attempted it");
    assert_eq!(receiver.count(), 0);
    let metrics = node_b.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_pruned_total{kind=\"listeners\"} 1")),
        "the janitor counts it: {metrics}"
    );
}

async fn a_refused_stream_is_a_json_error_and_writes_nothing(backend: Backend) {
    let app = server(backend, &["1s"]).await;
    let account = app.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    // Not a WebSocket upgrade.
    let (code, body) = app
        .call("GET", "/v1/listen", Some(&account.key), None)
        .await;
    assert_eq!(code, StatusCode::UPGRADE_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "upgrade_required");
    // The CLI says why, and stops: an unknown event type, a bad key, a listener that is gone.
    for (key, extra, says) in [
        (account.key.as_str(), vec!["--events", "nope.never"], "422"),
        ("hk_wrong", vec![], "401"),
        (
            account.key.as_str(),
            vec!["--resume", "wh_0000000000000000000000000000000"],
            "expired",
        ),
    ] {
        let mut cli = ListenCli::start(&app.url(""), key, &receiver.url("/hook"), &extra);
        if says == "expired" {
            // A listener to resume that is gone: a new one is made, its new secret printed.
            cli.ready().await;
            cli.line(says).await;
            cli.interrupt().await;
            continue;
        }
        let status = tokio::time::timeout(WAIT, cli.child.wait())
            .await
            .expect("herald listen stops")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!status.success());
        assert!(cli.output().contains(says), "{}", cli.output());
    }
    eventually("the resumed-then-stopped listener to go", WAIT, || async {
        webhooks(&app, &account).await.is_empty().then_some(())
    })
    .await;
    // A listener webhook cannot be edited into something else.
    let cli = ListenCli::start(&app.url(""), &account.key, &receiver.url("/hook"), &[]);
    let (_, webhook) = cli.ready().await;
    let (code, body) = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{webhook}"),
            Some(&account.key),
            Some(json!({ "url": "https://example.com/hook" })),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "listener_webhook");
    cli.interrupt().await;
}

/// Two nodes on one PostgreSQL: events published on node A go out through node B, which holds
/// the stream; A never attempts them (it has no stream to send them down).
#[tokio::test]
async fn a_listeners_deliveries_go_out_through_the_node_holding_its_stream() {
    let env = TestEnv::new(Backend::Postgres).await;
    let node = |name: &str| {
        let mut s = env.settings();
        s.dev = false;
        s.node_id = Some(name.to_owned());
        s
    };
    let node_a = TestApp::start(node("node-a")).await;
    let node_b = TestApp::start(node("node-b")).await;
    let account = node_a.create_account("Acme").await;
    let receiver = TestReceiver::start().await;
    let cli = ListenCli::start(&node_b.url(""), &account.key, &receiver.url("/hook"), &[]);
    cli.ready().await;
    let mut deliveries = Vec::new();
    for i in 0..5 {
        let published = node_a
            .publish(&account, "tts.completed", json!({ "n": i }))
            .await;
        deliveries.push(node_a.first_delivery(&account, &published).await);
    }
    receiver.wait_for(5, Some("/hook"), WAIT).await;
    for delivery in &deliveries {
        node_a
            .wait_for_status(&account, delivery, "succeeded", WAIT)
            .await;
        let tried = attempts(&node_a, &account, delivery).await;
        assert_eq!(tried.len(), 1, "{tried:?}");
        assert_eq!(tried[0]["node"], "node-b", "{tried:?}");
    }
    cli.interrupt().await;
}

on_both_backends!(
    a_published_event_reaches_the_local_receiver_signed_under_the_printed_secret,
    a_local_500_is_the_attempts_status_and_is_retried,
    ctrl_c_removes_the_ephemeral_webhook,
    a_stream_cut_mid_delivery_is_retried_when_a_listener_is_back,
    a_stream_cut_mid_delivery_with_no_listener_back_fails_per_its_policy,
    the_cli_reconnects_to_its_webhook_when_the_server_restarts,
    a_listener_whose_node_died_is_removed_by_retention,
    a_refused_stream_is_a_json_error_and_writes_nothing,
);

/// A stream's deliveries go out only through the node holding it, so a node with
/// `delivery.enabled = false` refuses to hold one rather than keep its deliveries waiting.
#[tokio::test]
async fn a_node_that_sends_nothing_refuses_a_stream() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.delivery.enabled = false).await;
    let account = app.create_account("Acme").await;
    let (code, body) = app
        .call("GET", "/v1/listen", Some(&account.key), None)
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "delivery_disabled");
    assert!(webhooks(&app, &account).await.is_empty());
}
