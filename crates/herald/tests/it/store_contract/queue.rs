//! The queue: claims lease, leases run out, late results change nothing, caps hold, results
//! keep the webhooks' health.

use super::*;

async fn a_claim_leases_what_it_returns_and_a_second_claim_skips_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    let published = f
        .store
        .publish_event(f.event("order.created"))
        .await
        .unwrap();
    assert_eq!((published.deliveries, published.replayed), (1, false));

    let now = Timestamp::now();
    let first = f.claim(now, 10, 10).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt_number, 1);
    assert_eq!(first[0].event.id, published.event.id);
    assert_eq!(first[0].event.data.get(), r#"{"n":1}"#);
    assert_eq!(first[0].webhook.id, hook.id);
    assert_eq!(
        first[0].webhook.secret, hook.secret,
        "the secret reads back"
    );
    assert!(
        f.claim(now, 10, 10).await.is_empty(),
        "leased: not claimed twice"
    );
    let depth = f.store.queue_depth(now).await.unwrap();
    assert_eq!((depth.due, depth.scheduled), (0, 0));
}

async fn an_expired_lease_is_claimed_again(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let t0 = Timestamp::now();
    let first = f.claim(t0, 10, 10).await;
    assert_eq!(first.len(), 1);
    assert!(
        f.claim(t0.plus(LEASE).minus(Duration::from_millis(1)), 10, 10)
            .await
            .is_empty()
    );
    let again = f
        .claim(t0.plus(LEASE).plus(Duration::from_secs(1)), 10, 10)
        .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, first[0].delivery_id);
    assert_eq!(again[0].attempt_number, 1, "no attempt was recorded");
    assert_ne!(again[0].lease, first[0].lease, "a new lease");
}

async fn a_late_result_of_a_lost_lease_is_kept_but_changes_nothing(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let t0 = Timestamp::now();
    let lost = f.claim(t0, 10, 10).await.remove(0);
    let t1 = t0.plus(LEASE).plus(Duration::from_secs(1));
    let current = f.claim(t1, 10, 10).await.remove(0);

    // The first lease's attempt ends late, after the delivery was claimed again.
    f.record(&[result(&lost, 200, NextStep::Succeeded, t0)], t1)
        .await;
    let d = f.delivery(&current).await;
    assert_eq!((d.status, d.attempts_made), (DeliveryStatus::Pending, 0));
    assert!(
        f.claim(t1, 10, 10).await.is_empty(),
        "still leased to the second claim"
    );

    let retry_at = t1.plus(Duration::from_secs(3600));
    f.record(
        &[result(&current, 500, NextStep::RetryAt(retry_at), t1)],
        t1,
    )
    .await;
    let d = f.delivery(&current).await;
    assert_eq!((d.status, d.attempts_made), (DeliveryStatus::Pending, 1));
    assert_eq!(d.next_attempt_at, Some(retry_at));
    let attempts = f.store.list_attempts(&current.delivery_id).await.unwrap();
    assert_eq!(attempts.len(), 2, "both attempts are kept");

    // Not due before its retry time, and the lost lease's result is not an attempt made.
    assert!(
        f.claim(t1.plus(Duration::from_secs(60)), 10, 10)
            .await
            .is_empty()
    );
    let third = f.claim(retry_at, 10, 10).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].attempt_number, 2);
}

async fn a_claim_keeps_to_the_per_webhook_cap_and_its_limit(backend: Backend) {
    let f = Fixture::new(backend).await;
    let a = f.subscribe(&["a.*"]).await;
    let b = f.subscribe(&["b.*"]).await;
    f.publish(
        (0..5)
            .map(|_| f.event("a.x"))
            .chain((0..5).map(|_| f.event("b.x")))
            .collect(),
    )
    .await;
    let now = Timestamp::now();
    let first = f.claim(now, 10, 2).await;
    assert_eq!(
        per_webhook(&first),
        BTreeMap::from([(a.id.clone(), 2), (b.id.clone(), 2)])
    );
    // What is already in flight counts against the cap.
    let second = f.claim_with(now, 10, 2, &[(&a.id, 1)]).await;
    assert_eq!(
        per_webhook(&second),
        BTreeMap::from([(a.id.clone(), 1), (b.id.clone(), 2)])
    );
    let third = f.claim(now, 3, 10).await;
    assert_eq!(
        per_webhook(&third),
        BTreeMap::from([(a.id.clone(), 2), (b.id.clone(), 1)])
    );
    assert!(f.claim(now, 10, 10).await.is_empty());
}

async fn a_backlog_at_its_cap_does_not_hide_other_webhooks_due_work(backend: Backend) {
    let f = Fixture::new(backend).await;
    let slow = f.subscribe(&["slow.*"]).await;
    let other = f.subscribe(&["other.*"]).await;
    f.publish((0..40).map(|_| f.event("slow.x")).collect())
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.publish((0..2).map(|_| f.event("other.x")).collect())
        .await;
    let now = Timestamp::now();
    let first = f.claim(now, 4, 1).await;
    assert_eq!(
        per_webhook(&first),
        BTreeMap::from([(slow.id.clone(), 1), (other.id.clone(), 1)])
    );
    let second = f.claim_with(now, 4, 3, &[(&slow.id, 3)]).await;
    assert_eq!(
        per_webhook(&second),
        BTreeMap::from([(other.id.clone(), 1)])
    );
}

/// A claim with more room than the webhooks with pending work have between them, beside a
/// backlog at its cap: it takes each webhook's due work from its own index, and none of a
/// disabled webhook's.
async fn a_claim_with_room_to_spare_beside_a_backlog_takes_each_webhooks_due_work(
    backend: Backend,
) {
    let f = Fixture::new(backend).await;
    let slow = f.subscribe(&["slow.*"]).await;
    let off = f.subscribe(&["off.*"]).await;
    let other = f.subscribe(&["other.*"]).await;
    f.publish((0..50).map(|_| f.event("slow.x")).collect())
        .await;
    f.publish((0..5).map(|_| f.event("off.x")).collect()).await;
    let done = f.store.set_webhook_status(
        None,
        &off.id,
        WebhookStatus::Disabled,
        None,
        Timestamp::now(),
    );
    assert!(done.await.unwrap().is_some());
    f.publish((0..3).map(|_| f.event("other.x")).collect())
        .await;
    let now = Timestamp::now();
    // `slow` at its cap of 4; `other` has 4 of room, less than the 100 asked.
    let claimed = f.claim_with(now, 100, 4, &[(&slow.id, 4)]).await;
    assert_eq!(
        per_webhook(&claimed),
        BTreeMap::from([(other.id.clone(), 3)])
    );
    // Room for 2 of `slow`'s now (none left out: in due order): two of its, nothing else.
    let claimed = f.claim_with(now, 100, 4, &[(&slow.id, 2)]).await;
    assert_eq!(
        per_webhook(&claimed),
        BTreeMap::from([(slow.id.clone(), 2)])
    );
}

/// As above with more webhooks with pending work than a claim looks at one by one (1,000): a
/// backlog at its cap that fills the due window never hides the due work of a webhook past them.
async fn a_backlog_at_its_cap_does_not_hide_a_webhook_past_the_listing(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(f.subscribe(&["idle.*"]).await);
    }
    // A delivery pending for each, none of them claimable.
    f.publish(vec![f.event("idle.x")]).await;
    for hook in &idle {
        let now = Timestamp::now();
        let status = WebhookStatus::Disabled;
        let done = f
            .store
            .set_webhook_status(None, &hook.id, status, None, now);
        assert!(done.await.unwrap().is_some());
    }
    let slow = f.subscribe(&["slow.*"]).await;
    f.publish((0..100).map(|_| f.event("slow.x")).collect())
        .await;
    let last = webhook_sorting_last(&f.account, &["last.*"]);
    f.store.insert_webhook(&last).await.unwrap();
    f.publish(vec![f.event("last.x")]).await;
    let claims = f
        .claim_with(Timestamp::now(), 10, 10, &[(&slow.id, 10)])
        .await;
    assert_eq!(per_webhook(&claims), BTreeMap::from([(last.id.clone(), 1)]));
}

async fn a_released_lease_is_due_again_at_once(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let now = Timestamp::now();
    let claim = f.claim(now, 10, 10).await.remove(0);
    // A release under another lease changes nothing.
    let wrong = Release {
        delivery_id: claim.delivery_id.clone(),
        lease: "not-the-lease".to_owned(),
    };
    f.store.release(&[wrong]).await.unwrap();
    assert!(f.claim(now, 10, 10).await.is_empty());
    let release = Release {
        delivery_id: claim.delivery_id.clone(),
        lease: claim.lease.clone(),
    };
    f.store.release(&[release]).await.unwrap();
    let again = f.claim(now, 10, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].delivery_id.clone(), again[0].attempt_number),
        (claim.delivery_id, 1)
    );
}

async fn a_gone_or_long_failing_webhook_is_disabled_and_announced(backend: Backend) {
    let f = Fixture::new(backend).await;
    let gone = f.subscribe(&["order.*"]).await;
    let failing = f.subscribe(&["order.*"]).await;
    let watcher = f.subscribe(&["webhook.disabled"]).await;
    f.publish(vec![f.event("order.created")]).await;
    let t0 = Timestamp::now();
    let claims = f.claim(t0, 10, 10).await;
    let of = |w: &Webhook| claims.iter().find(|c| c.webhook.id == w.id).unwrap();
    let health = HealthPolicy {
        now: t0,
        disable_after: Duration::from_secs(60),
        operator: None,
        circuit_after: 0,
        probe_interval: Duration::from_secs(30),
    };
    let records = [
        result(of(&gone), 410, NextStep::Failed, t0),
        result(
            of(&failing),
            500,
            NextStep::RetryAt(t0),
            t0.minus(Duration::from_secs(61)),
        ),
    ];
    f.store.record_attempts(&records, &health).await.unwrap();
    for (w, reason) in [(&gone, "gone"), (&failing, "failing")] {
        let now = f.store.get_webhook(None, &w.id).await.unwrap().unwrap();
        assert_eq!(
            (now.status, now.disabled_reason.as_deref()),
            (WebhookStatus::Disabled, Some(reason))
        );
    }
    assert_eq!(f.events_of_type("webhook.disabled").await, 2);
    let announced = f
        .deliveries(DeliveryQuery {
            webhook: Some(watcher.id.clone()),
            ..DeliveryQuery::default()
        })
        .await;
    let types: Vec<_> = announced.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(types, ["webhook.disabled", "webhook.disabled"]);
    // A disabled webhook's due work is not claimed.
    let due = f.claim(t0.plus(Duration::from_secs(1)), 10, 10).await;
    assert_eq!(per_webhook(&due), BTreeMap::from([(watcher.id.clone(), 2)]));
}

async fn queue_depth_counts_due_and_scheduled_work(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("a.x"), f.event("a.y"), f.event("a.z")])
        .await;
    let t0 = Timestamp::now();
    let depth = f.store.queue_depth(t0).await.unwrap();
    assert_eq!((depth.due, depth.scheduled), (3, 0));
    assert!(depth.oldest_due.is_some_and(|at| at <= t0));
    let claims = f.claim(t0, 2, 10).await;
    let retry_at = t0.plus(Duration::from_secs(600));
    f.record(
        &[result(&claims[0], 503, NextStep::RetryAt(retry_at), t0)],
        t0,
    )
    .await;
    let depth = f.store.queue_depth(t0).await.unwrap();
    assert_eq!(
        (depth.due, depth.scheduled),
        (1, 1),
        "one leased, one later, one due"
    );
    let unclaimed = f
        .deliveries(DeliveryQuery::default())
        .await
        .into_iter()
        .find(|d| claims.iter().all(|c| c.delivery_id != d.id))
        .unwrap();
    assert!(unclaimed.next_attempt_at.is_some_and(|at| at <= t0));
}

/// The look after a claim that found fewer than it asked: work due now counts only behind a
/// full lane of an unordered webhook whose gate the claim left open (the scheduler leaves out
/// those in the claim's `closed`); otherwise the next delivery to fall due.
async fn the_next_look_sees_what_a_full_lane_left_and_what_falls_due_later(backend: Backend) {
    let f = Fixture::new(backend).await;
    let plain = f.subscribe(&["*"]).await;
    let mut limited = webhook(&f.account, &["*"], WebhookKind::Subscription, None);
    limited.rate_limit = Some(herald::domain::RateLimit::new(1.0, 1).unwrap());
    f.store.insert_webhook(&limited).await.unwrap();
    let mut keyed = webhook(&f.account, &["*"], WebhookKind::Subscription, None);
    keyed.ordering = WebhookOrdering::Fifo;
    f.store.insert_webhook(&keyed).await.unwrap();
    f.publish(vec![f.event("a.x"), f.event("a.y"), f.event("a.z")])
        .await;
    let t0 = Timestamp::now();
    let everyone = [plain.id.clone(), limited.id.clone(), keyed.id.clone()];
    assert_eq!(
        f.store.next_due(&[]).await.unwrap(),
        NextDue::default(),
        "nothing later"
    );
    // One of the plain webhook's three, taken and retried in ten minutes.
    let claims = f
        .claim_with(t0, 10, 1, &[(&limited.id, 1), (&keyed.id, 1)])
        .await;
    assert_eq!(
        per_webhook(&claims),
        BTreeMap::from([(plain.id.clone(), 1)])
    );
    let retry_at = t0.plus(Duration::from_secs(600));
    f.record(
        &[result(&claims[0], 503, NextStep::RetryAt(retry_at), t0)],
        t0,
    )
    .await;
    let later = NextDue {
        at: Some(retry_at),
        behind: vec![],
    };
    assert_eq!(f.store.next_due(&[]).await.unwrap(), later);
    let due = f.store.next_due(&everyone).await.unwrap();
    assert!(
        due.at.is_some_and(|at| at <= t0),
        "the plain webhook's due work behind its full lane: {due:?}"
    );
    let behind: BTreeSet<_> = due.behind.into_iter().collect();
    assert_eq!(
        behind,
        BTreeSet::from([plain.id.clone(), limited.id.clone()]),
        "the ones with due work left, not the fifo webhook"
    );
    // Its two due ones leased: what is left of it is the retry. The fifo webhook's due work is
    // never reported, full lane or not.
    let claims = f
        .claim_with(t0, 10, 10, &[(&limited.id, 10), (&keyed.id, 10)])
        .await;
    assert_eq!(
        per_webhook(&claims),
        BTreeMap::from([(plain.id.clone(), 2)])
    );
    let open = [plain.id.clone(), keyed.id.clone()];
    assert_eq!(f.store.next_due(&open).await.unwrap(), later);
    // A rate limit above what its lane holds: its lane full and its allowance left, a freed
    // slot may take more at once.
    let due = f.store.next_due(&[limited.id.clone()]).await.unwrap();
    assert!(
        due.at.is_some_and(|at| at <= t0),
        "the rate-limited webhook's due work behind its full lane: {due:?}"
    );
    assert_eq!(due.behind, vec![limited.id.clone()]);
}

/// A rate-limited webhook on several nodes: the node that took its allowance holds it for a
/// while (PostgreSQL), so another node's claim leaves the webhook alone until the hold runs out,
/// then takes over. SQLite has one claimer: no holds.
async fn a_rate_limit_is_left_to_the_node_that_holds_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut limited = webhook(&f.account, &["*"], WebhookKind::Subscription, None);
    limited.rate_limit = Some(herald::domain::RateLimit::new(50.0, 2).unwrap());
    f.store.insert_webhook(&limited).await.unwrap();
    f.publish((0..10).map(|_| f.event("a.x")).collect()).await;
    let t0 = Timestamp::now();
    let taken = |claim: &herald::store::Claim| claim.deliveries.len();
    let a = f.claim_on("node-a", t0).await;
    assert_eq!(taken(&a), 2, "its burst");
    assert_eq!(a.closed, [limited.id.clone()], "its allowance spent");
    // 100 ms on, the burst is back.
    let t1 = t0.plus(Duration::from_millis(100));
    let b = f.claim_on("node-b", t1).await;
    match backend {
        Backend::Postgres => {
            assert_eq!(taken(&b), 0, "held by node-a");
            let hold_ends = t0.plus(Duration::from_secs(1));
            assert_eq!(b.gate_opens_at, Some(hold_ends), "node-b comes back then");
            assert_eq!(b.closed, [limited.id.clone()]);
            assert_eq!(
                taken(&f.claim_on("node-a", t1).await),
                2,
                "the holder goes on"
            );
        }
        Backend::Sqlite => assert_eq!(taken(&b), 2, "one claimer, whatever its node"),
    }
    // The last hold (taken at t1) runs out: another node takes over.
    let t2 = t1.plus(Duration::from_millis(1_001));
    assert_eq!(taken(&f.claim_on("node-c", t2).await), 2);
}

/// More webhooks with pending work than a claim lists one by one (1,000 on PostgreSQL): a
/// rate-limited webhook past the listing is still held to its allowance when the due-order
/// window reaches its deliveries.
async fn a_rate_limit_holds_past_the_webhooks_a_claim_lists(backend: Backend) {
    let f = Fixture::new(backend).await;
    for _ in 0..1_000 {
        f.subscribe(&["*"]).await;
    }
    let mut limited = webhook_sorting_last(&f.account, &["*"]);
    limited.rate_limit = Some(herald::domain::RateLimit::new(1.0, 1).unwrap());
    f.store.insert_webhook(&limited).await.unwrap();
    f.publish((0..3).map(|_| f.event("a.x")).collect()).await;
    let claims = f.claim(Timestamp::now(), 4_000, 10).await;
    let counts = per_webhook(&claims);
    assert_eq!(
        counts.len(),
        1_001,
        "every webhook's due work in the window"
    );
    assert_eq!(
        counts[&limited.id], 1,
        "its allowance of one, though its lane had room for three"
    );
    assert_eq!(claims.len(), 3_001);
}

/// Results sent all at once with publishes among them each land and are each answered, and a
/// result that cannot be written (its attempt is already recorded) fails alone. On SQLite they
/// can meet in the writer, whose rounds of queue writes end early once a publish waits (its
/// unit tests, `store::sqlite::writer::tests`, make them meet).
async fn results_sent_with_publishes_land_each_and_a_bad_one_fails_alone(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish((0..41).map(|_| f.event("order.created")).collect())
        .await;
    let now = Timestamp::now();
    let mut claimed = f.claim(now, 41, 41).await;
    assert_eq!(claimed.len(), 41);
    let written = result(&claimed.pop().unwrap(), 200, NextStep::Succeeded, now);
    f.record(std::slice::from_ref(&written), now).await;

    let health = health(now);
    let records: Vec<AttemptRecord> = claimed
        .iter()
        .map(|c| result(c, 200, NextStep::Succeeded, now))
        .collect();
    let (results, (again, published)) = tokio::join!(
        futures_util::future::join_all(
            records
                .chunks(1)
                .map(|one| f.store.record_attempts(one, &health))
        ),
        async {
            tokio::join!(
                f.store
                    .record_attempts(std::slice::from_ref(&written), &health),
                futures_util::future::join_all(
                    (0..20).map(|_| f.store.publish_events(vec![f.event("order.created")]))
                ),
            )
        },
    );
    assert!(again.is_err(), "an attempt recorded twice is refused");
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("result {i} sent beside the bad one: {e}"));
    }
    for p in published {
        p.expect("publish").pop().unwrap().expect("published");
    }
    for c in &claimed {
        let d = f.delivery(c).await;
        assert_eq!((d.status, d.attempts_made), (DeliveryStatus::Succeeded, 1));
    }
    assert_eq!(f.events_of_type("order.created").await, 61);
    let due = f.claim(Timestamp::now(), 100, 100).await;
    assert_eq!(due.len(), 20, "each publish made its delivery");
}

contract!(
    results_sent_with_publishes_land_each_and_a_bad_one_fails_alone,
    a_rate_limit_holds_past_the_webhooks_a_claim_lists,
    a_rate_limit_is_left_to_the_node_that_holds_it,
    a_claim_leases_what_it_returns_and_a_second_claim_skips_it,
    an_expired_lease_is_claimed_again,
    a_late_result_of_a_lost_lease_is_kept_but_changes_nothing,
    a_claim_keeps_to_the_per_webhook_cap_and_its_limit,
    a_backlog_at_its_cap_does_not_hide_other_webhooks_due_work,
    a_claim_with_room_to_spare_beside_a_backlog_takes_each_webhooks_due_work,
    a_backlog_at_its_cap_does_not_hide_a_webhook_past_the_listing,
    a_released_lease_is_due_again_at_once,
    a_gone_or_long_failing_webhook_is_disabled_and_announced,
    queue_depth_counts_due_and_scheduled_work,
    the_next_look_sees_what_a_full_lane_left_and_what_falls_due_later,
);
