//! Fresh deliveries first: a backlog of retries runs on the workers left after
//! `delivery.fresh_reserve`, so a first attempt to a healthy webhook goes out at once even while
//! every retry slot hangs on a slow endpoint.

use crate::common;

use common::{Backend, Reply, TestAccount, TestApp, TestReceiver, eventually};
use herald::domain::duration::HumanDuration;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A receiver behind a webhook of `acme`'s for `stt.*`, retried once at once: its first
/// attempts fail (500) and its retries hang (the tests end long before they answer).
async fn hanging_retries(app: &TestApp, acme: &TestAccount) -> TestReceiver {
    let slow = TestReceiver::start().await;
    slow.answer_first_attempts(Reply::status(500));
    slow.set_default(Reply::status(200).after(Duration::from_secs(45)));
    app.create_webhook(
        acme,
        json!({ "url": slow.url("/slow"), "events": ["stt.*"],
                "retry": { "schedule": ["0s"], "timeout": "50s" } }),
    )
    .await;
    slow
}

/// Retries that hang, to a webhook allowed every worker: with four workers and one kept for
/// first attempts, three retries hang and the healthy webhook's delivery still goes.
async fn a_hanging_retry_backlog_leaves_first_attempts_a_worker(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.workers = 4;
        s.delivery.per_webhook_concurrency = 4;
        s.delivery.fresh_reserve = Some(1);
        s.delivery.shutdown_grace = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let acme = app.create_account("Acme").await;
    let slow = hanging_retries(&app, &acme).await;
    let healthy = TestReceiver::start().await;
    app.create_webhook(
        &acme,
        json!({ "url": healthy.url("/healthy"), "events": ["tts.*"] }),
    )
    .await;
    app.publish_batch(&acme, "stt.completed", 0, 8).await;
    let retries = || {
        slow.received()
            .iter()
            .filter(|r| r.header("herald-attempt") != "1")
            .count()
    };
    // Every first attempt failed, and the retries have taken their three workers.
    eventually("three retries hanging", WAIT, || async {
        (slow.count() >= 8 + 3).then_some(())
    })
    .await;

    app.publish(&acme, "tts.completed", json!({ "fresh": true }))
        .await;
    let got = healthy
        .wait_for(1, Some("/healthy"), Duration::from_secs(5))
        .await;
    assert_eq!(got[0].json()["data"], json!({ "fresh": true }));
    assert_eq!(
        retries(),
        3,
        "retries run on the workers left after the reserve, no more"
    );
}

on_both_backends!(a_hanging_retry_backlog_leaves_first_attempts_a_worker);

/// Retries hold a turn only while they may be using the cores: one still waiting on its
/// endpoint after a few milliseconds lets the next start. With a single turn, a slow endpoint's
/// retries still run at its lane's concurrency (one at a time if the turn were held to the end).
async fn retries_waiting_on_a_slow_endpoint_give_their_turns_to_the_next(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.per_webhook_concurrency = 4;
        s.delivery.retry_turns = Some(1);
        s.delivery.shutdown_grace = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let acme = app.create_account("Acme").await;
    let slow = hanging_retries(&app, &acme).await;
    app.publish_batch(&acme, "stt.completed", 0, 8).await;
    // Every first attempt failed (8), then the lane's four retries hang together.
    eventually("four retries in flight at once", WAIT, || async {
        (slow.count() >= 8 + 4).then_some(())
    })
    .await;
    let retries = slow
        .received()
        .iter()
        .filter(|r| r.header("herald-attempt") == "2")
        .count();
    assert_eq!(retries, 4, "the lane's concurrency, no more");
}

on_both_backends!(retries_waiting_on_a_slow_endpoint_give_their_turns_to_the_next);
