//! Listener webhooks (`herald listen --forward-to`): their deliveries are claimed only by the
//! node holding their stream, a resume moves them to the resuming node and makes them due, a
//! renewal tells a node what it no longer holds, and a lapsed lease is retention's.

use super::*;

/// A claim of up to ten due deliveries by `node` at `now`.
async fn claim_by(f: &Fixture, node: &str, now: Timestamp) -> Vec<ClaimedDelivery> {
    let request = ClaimRequest {
        now,
        lease_until: now.plus(LEASE),
        limit: 10,
        per_webhook_cap: 10,
        in_flight: Default::default(),
        node: node.to_owned(),
        probe_interval: std::time::Duration::from_secs(30),
    };
    f.store.claim_due(&request).await.expect("claim")
}

/// A listener webhook of the fixture's account, held by `node` until `until`.
async fn listener(f: &Fixture, node: &str, until: Timestamp) -> Webhook {
    let w = webhook(&f.account, &["*"], WebhookKind::Listener, None);
    f.store
        .open_listener(&w, node, until)
        .await
        .expect("open listener");
    w
}

async fn a_listener_webhooks_deliveries_are_claimed_only_by_its_node(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = listener(&f, "node-a", Timestamp::now().plus(LEASE)).await;
    let plain = f.subscribe(&["*"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let t0 = Timestamp::now();

    let by_b = claim_by(&f, "node-b", t0).await;
    assert_eq!(by_b.len(), 1, "node B claims the subscription's only");
    assert_eq!(by_b[0].webhook.id, plain.id);
    let by_a = claim_by(&f, "node-a", t0).await;
    assert_eq!(by_a.len(), 1);
    assert_eq!(by_a[0].webhook.id, hook.id);
    assert_eq!(by_a[0].webhook.kind, WebhookKind::Listener);

    // Node B takes the stream over: from then on it claims, once A's lease on the delivery is
    // out, and A's renewal says A holds it no more.
    let t1 = t0.plus(LEASE).plus(Duration::from_secs(1));
    let resumed = f
        .store
        .resume_listener(&f.account, &hook.id, "node-b", t1.plus(LEASE), t1)
        .await
        .unwrap()
        .expect("the listener is there to resume");
    assert_eq!(resumed.secret, hook.secret, "the same secret");
    let by_a_now = claim_by(&f, "node-a", t1).await;
    assert!(
        by_a_now.iter().all(|c| c.webhook.id != hook.id),
        "A no longer claims the listener's"
    );
    let again = claim_by(&f, "node-b", t1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, by_a[0].delivery_id);
    let held = f
        .store
        .renew_listeners(std::slice::from_ref(&hook.id), "node-a", t1.plus(LEASE))
        .await
        .unwrap();
    assert!(held.is_empty(), "A holds it no more");
    let held = f
        .store
        .renew_listeners(std::slice::from_ref(&hook.id), "node-b", t1.plus(LEASE))
        .await
        .unwrap();
    assert_eq!(held, std::slice::from_ref(&hook.id));
    // Another account cannot take it up.
    let other = add_account(&f.store, "Other").await;
    let foreign = f
        .store
        .resume_listener(&other, &hook.id, "node-c", t1.plus(LEASE), t1)
        .await
        .unwrap();
    assert!(foreign.is_none());
}

async fn a_resume_makes_the_listeners_waiting_deliveries_due(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = listener(&f, "node-a", Timestamp::now().plus(LEASE)).await;
    f.publish(vec![f.event("order.created")]).await;
    let t0 = Timestamp::now();
    let claimed = claim_by(&f, "node-a", t0).await;
    assert_eq!(claimed.len(), 1);
    // The attempt failed (no stream): retried in an hour.
    let later = t0.plus(Duration::from_secs(3600));
    let mut record = result(&claimed[0], 0, NextStep::RetryAt(later), t0);
    record.attempt.status_code = None;
    f.record(&[record], t0).await;
    let t1 = t0.plus(Duration::from_secs(1));
    assert!(claim_by(&f, "node-a", t1).await.is_empty(), "not due yet");
    f.store
        .resume_listener(&f.account, &hook.id, "node-a", t1.plus(LEASE), t1)
        .await
        .unwrap()
        .expect("resumed");
    let due = claim_by(&f, "node-a", t1).await;
    assert_eq!(due.len(), 1, "due at once when the listener is back");
    assert_eq!(due[0].attempt_number, 2);
}

async fn a_lapsed_listener_is_removed_by_retention_with_its_pending_deliveries(backend: Backend) {
    let f = Fixture::new(backend).await;
    let t0 = Timestamp::now();
    let lapsing = listener(&f, "node-a", t0.plus(LEASE)).await;
    let renewed = listener(&f, "node-a", t0.plus(LEASE)).await;
    f.publish(vec![f.event("order.created")]).await;
    let t1 = t0.plus(LEASE).minus(Duration::from_secs(1));
    f.store
        .renew_listeners(std::slice::from_ref(&renewed.id), "node-a", t1.plus(LEASE))
        .await
        .unwrap();
    let before = f.store.remove_lapsed_listeners(t1, 100).await.unwrap();
    assert_eq!(before, 0, "nothing has lapsed yet");
    let t2 = t0.plus(LEASE).plus(Duration::from_secs(1));
    assert_eq!(f.store.remove_lapsed_listeners(t2, 100).await.unwrap(), 1);
    assert!(
        f.store
            .get_webhook(None, &lapsing.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .get_webhook(None, &renewed.id)
            .await
            .unwrap()
            .is_some()
    );
    let of_lapsed = f
        .deliveries(DeliveryQuery {
            webhook: Some(lapsing.id.clone()),
            ..DeliveryQuery::default()
        })
        .await;
    assert_eq!(of_lapsed.len(), 1);
    assert_eq!(of_lapsed[0].status, DeliveryStatus::Cancelled);
    let of_renewed = f
        .deliveries(DeliveryQuery {
            webhook: Some(renewed.id.clone()),
            ..DeliveryQuery::default()
        })
        .await;
    assert_eq!(of_renewed[0].status, DeliveryStatus::Pending);
    // A renewal of a removed listener says it is not held.
    let held = f
        .store
        .renew_listeners(std::slice::from_ref(&lapsing.id), "node-a", t2.plus(LEASE))
        .await
        .unwrap();
    assert!(held.is_empty());
}

contract!(
    a_listener_webhooks_deliveries_are_claimed_only_by_its_node,
    a_resume_makes_the_listeners_waiting_deliveries_due,
    a_lapsed_listener_is_removed_by_retention_with_its_pending_deliveries,
);
