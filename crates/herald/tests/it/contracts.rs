//! Each seed provider's webhook contract, reproduced from `examples/contracts/` alone: the
//! configuration file configures Herald, the script sets it up and publishes as the provider
//! would, and the receiver checks body shape, headers, authentication and retry schedule.

use crate::common;

use common::{ADMIN, Backend, Received, Reply, TestApp, TestReceiver, eventually};
use herald::config::Settings;
use herald::domain::{RetryPolicyDoc, SigningSecret};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn contract(name: &str) -> String {
    format!(
        "{}/../../examples/contracts/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs a contract script against `app`, delivering to `receiver_url`; returns its output.
async fn run_script(app: &TestApp, script: &str, receiver_url: String) -> String {
    let (path, base) = (contract(script), app.url(""));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(path)
            .env("HERALD", base)
            .env("RECEIVER", receiver_url)
            .env("HERALD_ADMIN_TOKEN", ADMIN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The JSON documents a script printed, one per line of output.
fn documents(stdout: &str) -> Vec<Value> {
    let mut de = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    std::iter::from_fn(|| de.next().map(|d| d.unwrap())).collect()
}

fn names(r: &Received) -> Vec<String> {
    let mut n: Vec<String> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
    n.sort();
    n
}

/// A delivery's retry policy as the API shows it (the job's own webhook included).
async fn policy_of_delivery(app: &TestApp, r: &Received) -> Value {
    let delivery = app
        .get(&format!("/v1/deliveries/{}", r.header("webhook-id")), ADMIN)
        .await;
    app.get(
        &format!("/v1/webhooks/{}", delivery["webhook_id"].as_str().unwrap()),
        ADMIN,
    )
    .await["retry"]
        .clone()
}

async fn seed_000_subscription_envelope_and_hmac(backend: Backend) {
    let app =
        TestApp::spawn_with_file(backend, &contract("000_1a48be493346b54b.toml"), |_| {}).await;
    let receiver = TestReceiver::start().await;
    let out =
        documents(&run_script(&app, "000_1a48be493346b54b.sh", receiver.url("/webhook")).await);
    let created = &out[0];
    for key in ["id", "url", "events", "status", "created_at"] {
        assert!(
            created.get(key).is_some(),
            "the create answer has {key}: {created}"
        );
    }
    assert_eq!(
        (created["status"].as_str(), &created["events"]),
        (Some("active"), &json!(["tts.completed", "stt.completed"]))
    );

    let got = receiver.wait_for(1, None, WAIT).await;
    let body = got[0].json();
    assert_eq!(
        body,
        json!({ "event": "tts.completed", "timestamp": body["timestamp"], "data": {
            "id": "tts-123", "text": "Hello, world!", "voice_id": "default-voice",
            "audio_url": "https://cdn.60db.com/audio/tts-123.mp3", "duration": 2.5 } })
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[0].header("content-type"), "application/json");
    let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let ts = got[0].header("webhook-timestamp").parse().unwrap();
    assert!(secret.verify(
        got[0].header("webhook-id"),
        ts,
        &got[0].body,
        got[0].header("webhook-signature")
    ));
    assert_eq!(
        names(&got[0]),
        [
            "accept",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "webhook-id",
            "webhook-signature",
            "webhook-timestamp"
        ]
    );
    assert_eq!(
        policy_of_delivery(&app, &got[0]).await["schedule"],
        json!(["5s", "5m", "30m", "2h", "5h", "10h", "10h"])
    );
}

async fn seed_001_account_url_flat_status_and_api_key_auth(backend: Backend) {
    let app =
        TestApp::spawn_with_file(backend, &contract("001_3f4a436ce5f861c8.toml"), |_| {}).await;
    let receiver = TestReceiver::start().await;
    let out = documents(&run_script(&app, "001_3f4a436ce5f861c8.sh", receiver.url("/hook")).await);
    let got = receiver.wait_for(2, None, WAIT).await;
    let mut bodies: Vec<Value> = got.iter().map(Received::json).collect();
    bodies.sort_by_key(|b| b["progress"].as_f64().unwrap() as i64);
    assert_eq!(
        bodies[0],
        json!({ "version": "2", "id": "3nxzD2szLZGQW7PXWn", "status": "queued", "progress": 0 })
    );
    assert_eq!(
        bodies[1],
        json!({ "version": "2", "id": "3nxzD2szLZGQW7PXWn", "status": "complete", "progress": 1,
                "url": "https://peregrine-results.s3.amazonaws.com/pigeon/3nxzD2szLZGQW7PXWn_0.mp3",
                "duration": 1.344, "size": 28365 })
    );
    // Newer API: the customer's own API key as a bearer token; it is the key Herald issued.
    let auth = got[0].header("authorization").to_owned();
    let key = auth.strip_prefix("Bearer ").expect("a bearer token");
    assert!(got.iter().all(|r| r.header("authorization") == auth));
    assert!(
        got.iter()
            .all(|r| r.headers.get("webhook-signature").is_none())
    );
    let callback = app.get("/v1/me/callback-url", key).await;
    assert_eq!(callback["callback_url"], receiver.url("/hook"));
    assert_eq!(out[0]["webhook_id"], callback["webhook_id"]);

    // Older API: `secret-key: <API key>`.
    let webhook = callback["webhook_id"].as_str().unwrap();
    let (s, _) = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{webhook}"),
            Some(key),
            Some(json!({ "signing": { "mode": "header", "name": "secret-key", "value": key } })),
        )
        .await;
    assert_eq!(s, 200);
    let account = app.get("/v1/accounts", ADMIN).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN),
            Some(json!({ "account": account, "type": "tts.error",
            "data": { "version": "2", "id": "x", "status": "error", "progress": 1 } })),
        )
        .await;
    assert_eq!(s, 202);
    let got = receiver.wait_for(3, None, WAIT).await;
    assert_eq!(got[2].header("secret-key"), key);
    assert!(got[2].headers.get("authorization").is_none());
}

async fn seed_002_job_webhook_url_headers_and_fixed_retries(backend: Backend) {
    let app =
        TestApp::spawn_with_file(backend, &contract("002_e46484b4e0721fd8.toml"), |_| {}).await;
    let receiver = TestReceiver::start().await;
    run_script(
        &app,
        "002_e46484b4e0721fd8.sh",
        receiver.url("/hooks/quillai"),
    )
    .await;
    let got = receiver.wait_for(1, None, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.count(),
        1,
        "exactly one event per job, at its terminal state"
    );
    let r = &got[0];
    let job = app
        .get("/v1/jobs/trs_01HZX9K7Q2M4YV8BTA6JRN3PDE", ADMIN)
        .await;
    assert_eq!(
        r.json(),
        job,
        "the body is the job, the same shape GET returns"
    );
    assert_eq!(job["status"], "completed");
    assert_eq!(r.header("x-quillai-event"), "transcription.completed");
    assert_eq!(r.header("user-agent"), "QuillAI-Webhooks/1.0");
    assert_eq!(r.header("content-type"), "application/json");
    let delivery_uuid = r.header("x-quillai-delivery");
    assert!(
        uuid::Uuid::try_parse(delivery_uuid).is_ok(),
        "a UUID: {delivery_uuid}"
    );
    assert_eq!(
        delivery_uuid.replace('-', ""),
        r.header("webhook-id").trim_start_matches("dlv_")
    );
    assert!(
        r.headers.get("webhook-signature").is_none() && r.headers.get("authorization").is_none(),
        "unsigned"
    );
    let policy = policy_of_delivery(&app, r).await;
    assert_eq!(
        policy,
        json!({ "schedule": ["1m", "5m", "30m", "2h", "12h"], "retry_on": "any", "timeout": "10s", "jitter": 0.0 })
    );
}

/// The fixed schedule's timing, on a copy scaled from minutes to tens of milliseconds.
async fn seed_002_retry_timing_on_a_scaled_schedule(backend: Backend) {
    let scaled = |s: &mut Settings| {
        s.registration.job.retry = Some(RetryPolicyDoc {
            schedule: Some(
                ["100ms", "500ms", "3s", "12s", "72s"]
                    .map(String::from)
                    .to_vec(),
            ),
            retry_on: Some(herald::domain::RetryOn::Any),
            preset: None,
            timeout: None,
            jitter: None,
        });
    };
    let app =
        TestApp::spawn_with_file(backend, &contract("002_e46484b4e0721fd8.toml"), scaled).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply::status(404), Reply::status(500)]); // any failure is retried
    run_script(
        &app,
        "002_e46484b4e0721fd8.sh",
        receiver.url("/hooks/quillai"),
    )
    .await;
    let got = receiver.wait_for(3, None, WAIT).await;
    let gaps = [got[1].at - got[0].at, got[2].at - got[1].at];
    assert!(
        gaps[0] >= Duration::from_millis(95) && gaps[0] < Duration::from_millis(1500),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(495) && gaps[1] < Duration::from_millis(2500),
        "{gaps:?}"
    );
    let ids: Vec<&str> = got.iter().map(|r| r.header("x-quillai-delivery")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the delivery id is the same on every retry: {ids:?}"
    );
}

async fn seed_003_callback_url_raw_body_and_burst_exponential(backend: Backend) {
    let app =
        TestApp::spawn_with_file(backend, &contract("003_c2848130e5973dc8.toml"), |_| {}).await;
    let receiver = TestReceiver::start().await;
    run_script(
        &app,
        "003_c2848130e5973dc8.sh",
        receiver.url("/here-is-the-webhook"),
    )
    .await;
    let got = receiver.wait_for(1, None, WAIT).await;
    assert_eq!(
        got[0].json(),
        json!({ "speak_url": "https://typecast.ai/api/speak/5d47ff94e6c00800075726d3",
                "audio_url_no_redirect": "https://typecast.ai/files/speak/ZGF0YS9jkwNC53YXY=/no-redirect",
                "status": "done", "kind": "/api/speak",
                "audio_download_url": "https://cdn.typecast.ai/blah_the_audio_file_url_blah" })
    );
    assert!(got[0].headers.get("webhook-signature").is_none());
    let minutes: Vec<String> = (0..13).map(|i| format!("{}m", 1u32 << i)).collect();
    let mut schedule = vec!["0s".to_owned(); 5];
    schedule.extend(minutes);
    let policy = policy_of_delivery(&app, &got[0]).await;
    assert_eq!(
        policy,
        json!({ "schedule": schedule, "retry_on": "transient", "timeout": "10s", "jitter": 0.0 })
    );
}

/// Five immediate retries then doubling waits, on a copy scaled from minutes to 50 ms; and a
/// status that is not transient ends the delivery at once.
async fn seed_003_retry_timing_on_a_scaled_schedule(backend: Backend) {
    let scaled = |s: &mut Settings| {
        let mut schedule = vec!["0s".to_owned(); 5];
        schedule.extend(["50ms", "100ms", "200ms"].map(String::from));
        s.registration.callback.retry = Some(RetryPolicyDoc {
            schedule: Some(schedule),
            retry_on: Some(herald::domain::RetryOn::Transient),
            preset: None,
            timeout: None,
            jitter: None,
        });
    };
    let app =
        TestApp::spawn_with_file(backend, &contract("003_c2848130e5973dc8.toml"), scaled).await;
    let receiver = TestReceiver::start().await;
    receiver.script(vec![Reply::status(503); 7]);
    run_script(&app, "003_c2848130e5973dc8.sh", receiver.url("/cb")).await;
    let got = receiver.wait_for(8, None, WAIT).await;
    let burst = got[5].at - got[0].at;
    assert!(
        burst < Duration::from_millis(1000),
        "the first five retries come at once: {burst:?}"
    );
    let gaps = [got[6].at - got[5].at, got[7].at - got[6].at];
    assert!(
        gaps[0] >= Duration::from_millis(45) && gaps[1] >= Duration::from_millis(95),
        "{gaps:?}"
    );

    // 404 is not transient: the next delivery ends after one attempt.
    receiver.script(vec![Reply::status(404)]);
    let account = app.get("/v1/accounts", ADMIN).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, event) = app
        .call("POST", "/v1/events", Some(ADMIN), Some(json!({ "account": account, "type": "speak.failed", "data": { "status": "failed" } })))
        .await;
    assert_eq!(s, 202);
    let event_id = event["id"].as_str().unwrap().to_owned();
    eventually("the 404 delivery to fail", WAIT, || async {
        let list = app
            .get(&format!("/v1/deliveries?event={event_id}"), ADMIN)
            .await;
        (list["data"][0]["status"] == "failed")
            .then(|| assert_eq!(list["data"][0]["attempts_made"], 1))
    })
    .await;
}

on_both_backends!(
    seed_000_subscription_envelope_and_hmac,
    seed_001_account_url_flat_status_and_api_key_auth,
    seed_002_job_webhook_url_headers_and_fixed_retries,
    seed_002_retry_timing_on_a_scaled_schedule,
    seed_003_callback_url_raw_body_and_burst_exponential,
    seed_003_retry_timing_on_a_scaled_schedule,
);
