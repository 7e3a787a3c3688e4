//! What a full lane leaves behind is claimed as the lane runs low, not at the next poll: a batch
//! larger than a webhook's lanes hold arrives in one go, however long the poll interval.

use crate::common;

use common::{Backend, Reply, TestApp, TestReceiver};
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
