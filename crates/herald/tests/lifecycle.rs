//! Shutdown and restart: attempts in flight finish and are recorded; nothing is repeated.

mod common;

use common::{Backend, Reply, TestApp, TestEnv, TestReceiver};
use serde_json::json;
use std::time::Duration;

async fn a_graceful_shutdown_finishes_the_attempt_in_flight_and_records_it(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(200).after(Duration::from_millis(800)));
    let mut app = TestApp::start(env.settings()).await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let event = app
        .publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    receiver.wait_for(1, None, Duration::from_secs(10)).await;

    app.stop().await; // returns only after the dispatcher has finished

    let app = TestApp::start(env.settings()).await;
    let deliveries = app
        .deliveries_of(&acme, event["id"].as_str().unwrap())
        .await;
    assert_eq!(
        deliveries[0]["status"], "succeeded",
        "the attempt in flight was finished and recorded before exit"
    );
    assert_eq!(deliveries[0]["attempts_made"], 1);
    // Give a wrongly repeated attempt time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the restarted server does not repeat a recorded attempt"
    );
}

on_both_backends!(a_graceful_shutdown_finishes_the_attempt_in_flight_and_records_it);
