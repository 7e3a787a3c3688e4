//! Shutdown and restart: attempts in flight finish and are recorded; nothing is repeated.

use crate::common;

use common::{Backend, Reply, TestApp, TestEnv, TestReceiver};
use herald::domain::duration::HumanDuration;
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

/// An attempt still running when the shutdown grace ends is stopped, and its lease is given
/// back: the restarted server (or, on PostgreSQL, any node) tries it again at once, instead of
/// after the lease (2 minutes by default) runs out.
async fn an_attempt_stopped_at_the_end_of_the_grace_is_tried_again_at_once(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let receiver = TestReceiver::start().await;
    // Slower than the grace, within the webhook's 10 s timeout.
    receiver.set_default(Reply::status(200).after(Duration::from_secs(8)));
    let mut settings = env.settings();
    settings.delivery.shutdown_grace = HumanDuration(Duration::from_millis(300));
    let mut app = TestApp::start(settings.clone()).await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let event = app
        .publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    receiver.wait_for(1, None, Duration::from_secs(10)).await;

    app.stop().await;

    receiver.set_default(Reply::status(200));
    let app = TestApp::start(settings).await;
    let started = std::time::Instant::now();
    receiver.wait_for(2, None, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "tried again long before the lease would have run out"
    );
    let deliveries = app
        .deliveries_of(&acme, event["id"].as_str().unwrap())
        .await;
    assert_eq!(deliveries.len(), 1);
}

on_both_backends!(an_attempt_stopped_at_the_end_of_the_grace_is_tried_again_at_once);
