//! What a full lane leaves behind is claimed as the lane runs low, not at the next poll: a batch
//! larger than a webhook's lanes hold arrives in one go, however long the poll interval.

use crate::common;

use common::{Backend, Reply, TestApp, TestReceiver, eventually};
use herald::domain::duration::HumanDuration;
use serde_json::json;
use std::time::Duration;

/// Four workers, two at once per webhook: a lane holds 16, and the claims may bring 24 (one
/// worker's share is kept for first attempts), so the per-webhook cap, not the claims' room,
/// stops each claim short. Of 120 deliveries in two batches, the rest wait in the store, behind
/// the 16 leased in due order (more than the scheduler once read past). No poll tick during the
/// test.
async fn a_batch_beyond_what_a_lane_holds_arrives_without_waiting_for_a_poll(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.workers = 4;
        s.delivery.per_webhook_concurrency = 2;
        s.delivery.poll_interval = HumanDuration(Duration::from_secs(3600));
    })
    .await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/hook"), "events": ["*"] }),
    )
    .await;
    // Answers take a while, so the first batch's deliveries are still leased (and first in due
    // order) when the second batch's wait in the store behind them.
    receiver.set_default(Reply::status(200).after(Duration::from_millis(100)));
    for (first, n) in [(0, 40), (40, 80)] {
        app.publish_batch(&acme, "tts.completed", first, n).await;
    }
    // Far less than the poll interval: a refill that waited for a poll would not make it.
    receiver
        .wait_for(120, Some("/hook"), Duration::from_secs(30))
        .await;
}

on_both_backends!(a_batch_beyond_what_a_lane_holds_arrives_without_waiting_for_a_poll);

/// A slot freed in a lane fed by hand-overs is no reason to claim while the due work left behind
/// is another webhook's: a slow endpoint's backlog, its lane at the cap. Such a claim finds
/// nothing; the slow lane's own slots freeing (or new work) bring the next.
async fn first_attempts_beside_a_full_lane_ask_for_no_claims(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.workers = 8;
        s.delivery.per_webhook_concurrency = 2;
        s.delivery.poll_interval = HumanDuration(Duration::from_secs(3600));
        s.delivery.shutdown_grace = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let acme = app.create_account("Acme").await;
    let slow = TestReceiver::start().await;
    slow.set_default(Reply::status(200).after(Duration::from_secs(45)));
    app.create_webhook(
        &acme,
        json!({ "url": slow.url("/slow"), "events": ["stt.*"], "retry": { "timeout": "50s" } }),
    )
    .await;
    let healthy = TestReceiver::start().await;
    app.create_webhook(
        &acme,
        json!({ "url": healthy.url("/healthy"), "events": ["tts.*"] }),
    )
    .await;
    // The slow lane holds 16 (two of them hanging), and 24 wait in the store behind it.
    app.publish_batch(&acme, "stt.completed", 0, 40).await;
    eventually("two attempts hanging", Duration::from_secs(10), || async {
        (slow.count() >= 2).then_some(())
    })
    .await;
    let before = app.claims_made().await;
    for n in 0..20 {
        app.publish(&acme, "tts.completed", json!({ "n": n })).await;
        healthy
            .wait_for(n + 1, Some("/healthy"), Duration::from_secs(10))
            .await;
    }
    let claims = app.claims_made().await - before;
    assert!(
        claims <= 2,
        "{claims} claims for 20 first attempts handed over beside a full lane"
    );
    assert_eq!(slow.count(), 2, "the slow lane still runs two at once");
}

on_both_backends!(first_attempts_beside_a_full_lane_ask_for_no_claims);
