//! Jobs: status events, the per-job webhook_url, and exactly one terminal event under races.

use crate::common;

use common::{ADMIN, Backend, TestApp, TestReceiver, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn fifty_concurrent_completions_publish_exactly_one_terminal_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/sub"), "events": ["tts.*"] }),
    )
    .await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/done"), "events": ["tts.completed"] }),
    )
    .await;
    let (status, job) = app
        .call(
            "POST",
            "/v1/jobs",
            Some(ADMIN),
            Some(json!({ "account": acme.id, "kind": "tts", "input": { "text": "Hello" }, "webhook_url": receiver.url("/job") })),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        (job["status"].as_str(), job["progress"].as_f64()),
        (Some("queued"), Some(0.0))
    );
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/v1/jobs/{id}"),
            Some(ADMIN),
            Some(json!({ "status": "processing", "progress": 0.4 })),
        )
        .await;
    assert_eq!(status, 200);

    let mut racers = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{id}")));
        racers.spawn(async move {
            let body = json!({ "status": "completed", "result": { "audio_url": format!("https://cdn.example.com/{n}.mp3") } });
            client.patch(url).bearer_auth(ADMIN).json(&body).send().await.unwrap().status().as_u16()
        });
    }
    let mut codes = Vec::new();
    while let Some(code) = racers.join_next().await {
        codes.push(code.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 49, "{codes:?}");

    // /sub: queued, processing, completed; /done: completed; /job: completed. Then nothing more.
    receiver.wait_for(5, None, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    // Herald does not promise order between deliveries to one webhook; compare as sets.
    let at = |path: &str| -> Vec<String> {
        let mut types: Vec<String> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.header("herald-event-type").to_owned())
            .collect();
        types.sort();
        types
    };
    assert_eq!(
        at("/sub"),
        ["tts.completed", "tts.processing", "tts.queued"]
    );
    assert_eq!(at("/done"), ["tts.completed"]);
    assert_eq!(
        at("/job"),
        ["tts.completed"],
        "the job's webhook_url gets its terminal event only, once"
    );

    // The event's data is the job exactly as GET shows it.
    let shown = app.get(&format!("/v1/jobs/{id}"), &acme.key).await;
    let delivered = got.iter().find(|r| r.path == "/job").unwrap().json();
    assert_eq!(delivered["data"], shown);
    assert_eq!(
        (shown["status"].as_str(), shown["progress"].as_f64()),
        (Some("completed"), Some(1.0))
    );
    assert!(shown["completed_at"].is_string());

    // The job webhook's deliveries verify with the account's signing secret.
    let secret = app.get("/v1/me/signing-secret", &acme.key).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = herald::domain::SigningSecret::parse(&secret).unwrap();
    let job_req = got.iter().find(|r| r.path == "/job").unwrap();
    let ts = job_req.header("webhook-timestamp").parse().unwrap();
    assert!(secret.verify(
        job_req.header("webhook-id"),
        ts,
        &job_req.body,
        job_req.header("webhook-signature")
    ));

    // A finished job refuses every change, and publishes nothing.
    let (status, err) = app
        .call(
            "PATCH",
            &format!("/v1/jobs/{id}"),
            Some(ADMIN),
            Some(json!({ "progress": 1.0 })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (409, Some("job_conflict"))
    );
}

async fn job_rules_are_enforced_with_clear_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let create = |body: Value| app.call("POST", "/v1/jobs", Some(ADMIN), Some(body));
    let (s, e) = create(json!({ "account": acme.id, "kind": "video" })).await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (422, Some("kind"))
    );
    let (s, e) = create(json!({ "account": acme.id, "kind": "stt", "id": "has space" })).await;
    assert_eq!(
        (s.as_u16(), e["error"]["field"].as_str()),
        (422, Some("id"))
    );
    let (s, _) = create(json!({ "account": acme.id, "kind": "stt", "id": "stt-1" })).await;
    assert_eq!(s, 201);
    let (s, e) = create(json!({ "account": acme.id, "kind": "stt", "id": "stt-1" })).await;
    assert_eq!(
        (s.as_u16(), e["error"]["code"].as_str()),
        (409, Some("job_exists"))
    );
    let patch = |body: Value| app.call("PATCH", "/v1/jobs/stt-1", Some(ADMIN), Some(body));
    assert_eq!(patch(json!({ "progress": 1.5 })).await.0, 422);
    assert_eq!(patch(json!({ "status": "exploded" })).await.0, 422);
    assert_eq!(
        patch(json!({ "status": "processing", "progress": 0.6 }))
            .await
            .0,
        200
    );
    let (s, e) = patch(json!({ "progress": 0.3 })).await;
    assert_eq!(s, 409, "progress only rises: {e}");
    let (s, _) = patch(json!({ "status": "queued" })).await;
    assert_eq!(s, 409, "no way back to queued");
    let (s, _) = app
        .call(
            "PATCH",
            "/v1/jobs/stt-1",
            Some(&acme.key),
            Some(json!({ "progress": 0.9 })),
        )
        .await;
    assert_eq!(s, 403, "only the provider moves jobs");
    let other = app.create_account("Other").await;
    let (s, _) = app
        .call("GET", "/v1/jobs/stt-1", Some(&other.key), None)
        .await;
    assert_eq!(s, 404);
    let job = app.get("/v1/jobs/stt-1", &acme.key).await;
    assert_eq!(
        (job["status"].as_str(), job["progress"].as_f64()),
        (Some("processing"), Some(0.6))
    );
}

async fn the_callback_url_gets_every_event_and_is_replaced_by_a_second_put(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let put = |url: String| {
        app.call(
            "PUT",
            "/v1/me/callback-url",
            Some(&acme.key),
            Some(json!({ "callback_url": url })),
        )
    };
    let (s, first) = put(receiver.url("/one")).await;
    assert_eq!(s, 200, "{first}");
    app.publish(&acme, "voice.created", json!({ "n": 1 })).await;
    receiver.wait_for(1, Some("/one"), WAIT).await;
    let (_, second) = put(receiver.url("/two")).await;
    assert_eq!(
        second["webhook_id"], first["webhook_id"],
        "one callback URL per account"
    );
    app.publish(&acme, "stt.failed", json!({ "n": 2 })).await;
    receiver.wait_for(1, Some("/two"), WAIT).await;
    let shown = app.get("/v1/me/callback-url", &acme.key).await;
    assert_eq!(shown["callback_url"], receiver.url("/two"));
    // Recorded before the delete below: deleting the webhook cancels its unfinished deliveries
    // and takes their leases, so a result written after it changes nothing, and waiting for it
    // afterwards would race the result writer.
    eventually("both deliveries recorded", WAIT, || async {
        let list = app.get("/v1/deliveries?status=succeeded", &acme.key).await;
        (list["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let (s, _) = app
        .call("DELETE", "/v1/me/callback-url", Some(&acme.key), None)
        .await;
    assert_eq!(s, 204);
    let shown = app.get("/v1/me/callback-url", &acme.key).await;
    assert_eq!(shown["callback_url"], Value::Null);
}

on_both_backends!(
    fifty_concurrent_completions_publish_exactly_one_terminal_event,
    job_rules_are_enforced_with_clear_errors,
    the_callback_url_gets_every_event_and_is_replaced_by_a_second_put,
);
