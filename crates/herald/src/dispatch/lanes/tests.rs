//! The lanes' bookkeeping, without a server: caps, holding ahead, hand-overs and shutdown.

use super::*;
use crate::domain::{
    AccountId, DeliveryId, Event, EventFilter, EventId, PayloadFormat, RetryPolicy, SigningMode,
    SigningSecret, Webhook, WebhookKind, WebhookOrdering, WebhookStatus, WebhookUrl,
};
use crate::store::Intake;
use futures_util::FutureExt;
use std::collections::HashSet;

const LEASE: Duration = Duration::from_secs(60);

fn t0() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

fn webhook(id: &WebhookId) -> Webhook {
    Webhook {
        id: id.clone(),
        account_id: AccountId::from_trusted("acc_1".to_owned()),
        url: WebhookUrl::from_trusted("https://example.com/".to_owned()),
        events: vec![EventFilter::All],
        secret: SigningSecret::generate(),
        description: String::new(),
        retry: RetryPolicy::default(),
        status: WebhookStatus::Active,
        created_at: t0(),
        updated_at: t0(),
        kind: WebhookKind::Subscription,
        job_id: None,
        signing: SigningMode::Standard,
        format: PayloadFormat::Envelope,
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        rate_limit: None,
        ordering: WebhookOrdering::None,
        held: false,
    }
}

fn claim(webhook_id: &WebhookId) -> ClaimedDelivery {
    ClaimedDelivery {
        delivery_id: DeliveryId::generate(),
        lease: "lease-1".to_owned(),
        attempt_number: 1,
        event: Event {
            id: EventId::generate(),
            account: AccountId::from_trusted("acc_1".to_owned()),
            event_type: "tts.done".to_owned(),
            timestamp: t0(),
            data: serde_json::value::to_raw_value(&serde_json::json!({})).expect("json"),
        },
        webhook: webhook(webhook_id),
    }
}

/// Claims `n` deliveries to `webhook` into the lanes; returns their ids in order.
fn hold(lanes: &mut Lanes, webhook: &WebhookId, n: usize) -> Vec<DeliveryId> {
    (0..n)
        .map(|_| {
            let c = claim(webhook);
            let id = c.delivery_id.clone();
            lanes.hold(c, t0(), t0().plus(LEASE));
            id
        })
        .collect()
}

fn ids(held: &[Held]) -> Vec<DeliveryId> {
    held.iter().map(|h| h.claim.delivery_id.clone()).collect()
}

/// The end of a first attempt to `webhook`.
fn first(webhook: &WebhookId) -> Freed {
    Freed {
        webhook: webhook.clone(),
        retry: false,
        turn: false,
        succeeded: None,
        pause_until: None,
    }
}

/// Claims `n` retries (second attempts) to `webhook` into the lanes; returns their ids.
fn hold_retries(lanes: &mut Lanes, webhook: &WebhookId, n: usize) -> Vec<DeliveryId> {
    (0..n)
        .map(|_| {
            let mut c = claim(webhook);
            c.attempt_number = 2;
            let id = c.delivery_id.clone();
            lanes.hold(c, t0(), t0().plus(LEASE));
            id
        })
        .collect()
}

fn wh() -> WebhookId {
    WebhookId::generate()
}

/// `running` and `held` on all lanes.
fn counts(lanes: &Lanes) -> (usize, usize) {
    (lanes.running, lanes.held)
}

#[test]
fn no_more_than_the_cap_run_at_once_per_webhook() {
    let mut lanes = Lanes::new(8, 2, 0);
    let a = wh();
    let d = hold(&mut lanes, &a, 5);
    assert_eq!(ids(&lanes.start()), d[..2]);
    assert!(lanes.start().is_empty(), "the webhook is at its cap");
    assert_eq!(counts(&lanes), (2, 5));
    assert_eq!(lanes.held_by_webhook(), HashMap::from([(a, 5)]));
    assert_eq!(lanes.room(), 8 * HOLD_AHEAD - 5);
}

#[test]
fn deliveries_beyond_the_cap_start_in_order_as_slots_free() {
    let mut lanes = Lanes::new(8, 2, 0);
    let a = wh();
    let d = hold(&mut lanes, &a, 5);
    assert_eq!(ids(&lanes.start()), d[..2]);
    lanes.finished(&first(&a));
    assert_eq!(ids(&lanes.start()), d[2..3]);
    lanes.finished(&first(&a));
    lanes.finished(&first(&a));
    assert_eq!(ids(&lanes.start()), d[3..5]);
    assert!(lanes.start().is_empty());
    assert_eq!(counts(&lanes), (2, 2));
}

#[test]
fn a_finished_attempt_frees_its_slot_and_its_hold() {
    let mut lanes = Lanes::new(8, 1, 0);
    let a = wh();
    let d = hold(&mut lanes, &a, 2);
    assert_eq!(ids(&lanes.start()), d[..1]);
    assert!(
        !lanes.finished(&first(&a)),
        "one still waiting for a cap of one is not low"
    );
    assert_eq!(counts(&lanes), (0, 1));
    assert_eq!(lanes.held_by_webhook(), HashMap::from([(a.clone(), 1)]));
    assert_eq!(ids(&lanes.start()), d[1..]);
    assert!(lanes.finished(&first(&a)), "nothing left waiting is low");
    assert_eq!(counts(&lanes), (0, 0));
    assert!(lanes.by_webhook.is_empty(), "an empty lane goes");
    assert!(lanes.held_by_webhook().is_empty());
    assert_eq!(lanes.room(), 8 * HOLD_AHEAD);
}

#[test]
fn a_lane_runs_low_when_fewer_wait_than_run() {
    let mut lanes = Lanes::new(8, 4, 0);
    let a = wh();
    hold(&mut lanes, &a, 6);
    assert_eq!(lanes.start().len(), 4);
    // 3 running, 2 waiting.
    assert!(lanes.finished(&first(&a)));
    let mut lanes = Lanes::new(8, 4, 0);
    hold(&mut lanes, &a, 7);
    assert_eq!(lanes.start().len(), 4);
    // 3 running, 3 waiting.
    assert!(!lanes.finished(&first(&a)));
}

#[test]
fn the_workers_bound_the_attempts_on_all_lanes() {
    let mut lanes = Lanes::new(3, 2, 0);
    let (a, b) = (wh(), wh());
    let da = hold(&mut lanes, &a, 4);
    let db = hold(&mut lanes, &b, 4);
    assert_eq!(
        ids(&lanes.start()),
        [da[0].clone(), db[0].clone(), da[1].clone()],
        "webhooks take turns"
    );
    assert!(lanes.start().is_empty(), "every worker is busy");
    assert_eq!(counts(&lanes), (3, 8));
    lanes.finished(&first(&a));
    assert_eq!(
        ids(&lanes.start()),
        db[1..2],
        "one worker free: the next webhook in turn"
    );
    assert!(lanes.start().is_empty());
    assert_eq!(counts(&lanes), (3, 7));
}

#[test]
fn a_webhook_at_its_cap_does_not_hold_up_the_others() {
    let mut lanes = Lanes::new(8, 1, 0);
    let (slow, b, c) = (wh(), wh(), wh());
    let ds = hold(&mut lanes, &slow, 5);
    let db = hold(&mut lanes, &b, 2);
    let dc = hold(&mut lanes, &c, 1);
    assert_eq!(
        ids(&lanes.start()),
        [ds[0].clone(), db[0].clone(), dc[0].clone()]
    );
    lanes.finished(&first(&b));
    lanes.finished(&first(&c));
    assert_eq!(
        ids(&lanes.start()),
        db[1..],
        "the slow one is still running"
    );
    assert_eq!(counts(&lanes), (2, 6));
    assert_eq!(
        lanes.held_by_webhook(),
        HashMap::from([(slow, 5), (b, 1)]),
        "c's lane went with its last delivery"
    );
}

#[test]
fn holding_ahead_is_bounded_per_webhook_and_in_all() {
    // Two workers, one attempt at a time per webhook: 8 held per webhook, 16 in all.
    let mut lanes = Lanes::new(2, 1, 0);
    let (a, b, c) = (wh(), wh(), wh());
    for _ in 0..HOLD_AHEAD {
        assert!(lanes.reserve(&a));
    }
    assert!(!lanes.reserve(&a), "a's lane is full");
    hold(&mut lanes, &b, HOLD_AHEAD - 1);
    assert!(lanes.reserve(&b), "claims and reservations share the lane");
    assert!(!lanes.reserve(&b));
    assert_eq!(lanes.room(), 0);
    assert!(!lanes.reserve(&c), "the node holds all it may");
    assert_eq!(lanes.reserved(), HOLD_AHEAD + 1);
    assert_eq!(
        lanes.held_by_webhook(),
        HashMap::from([(a.clone(), HOLD_AHEAD), (b, HOLD_AHEAD)])
    );
    assert!(
        !lanes.by_webhook.contains_key(&c),
        "a refusal leaves no lane"
    );
    lanes.unreserve(&a);
    assert_eq!(lanes.room(), 1);
    assert!(lanes.reserve(&c));
    assert_eq!(lanes.room(), 0);
}

#[test]
fn a_cancelled_reservation_leaves_nothing_held() {
    let mut lanes = Lanes::new(2, 1, 0);
    let a = wh();
    assert!(lanes.reserve(&a));
    assert_eq!((lanes.reserved(), lanes.room()), (1, 2 * HOLD_AHEAD - 1));
    lanes.unreserve(&a);
    assert_eq!((lanes.reserved(), lanes.room()), (0, 2 * HOLD_AHEAD));
    assert!(lanes.by_webhook.is_empty());
    assert_eq!(counts(&lanes), (0, 0));
}

#[test]
fn a_hand_over_turns_reservations_into_held_deliveries() {
    let mut lanes = Lanes::new(8, 1, 0);
    let a = wh();
    assert!(lanes.reserve(&a));
    assert!(lanes.reserve(&a));
    let (c0, c1) = (claim(&a), claim(&a));
    let d = [c0.delivery_id.clone(), c1.delivery_id.clone()];
    lanes.hand_over(vec![c0, c1], t0(), t0().plus(LEASE));
    assert_eq!(lanes.reserved(), 0);
    assert_eq!(counts(&lanes), (0, 2));
    assert_eq!(ids(&lanes.start()), d[..1]);
    lanes.finished(&first(&a));
    assert_eq!(ids(&lanes.start()), d[1..]);
}

#[test]
fn a_held_delivery_must_start_in_time_to_end_before_its_lease() {
    let mut lanes = Lanes::new(8, 8, 0);
    let a = wh();
    // The default timeout is 10 s; 5 s more are kept in hand.
    lanes.hold(claim(&a), t0(), t0().plus(LEASE));
    // A lease too short for that: half the lease.
    lanes.hold(claim(&a), t0(), t0().plus(Duration::from_secs(20)));
    let starts: Vec<_> = lanes.start().iter().map(|h| h.start_by).collect();
    assert_eq!(
        starts,
        [
            t0().plus(Duration::from_secs(45)),
            t0().plus(Duration::from_secs(10))
        ]
    );
}

#[test]
fn shutdown_gives_back_every_claim_not_started() {
    let mut lanes = Lanes::new(4, 1, 0);
    let (a, b, c) = (wh(), wh(), wh());
    let da = hold(&mut lanes, &a, 3);
    let db = hold(&mut lanes, &b, 2);
    assert!(lanes.reserve(&c));
    assert_eq!(ids(&lanes.start()), [da[0].clone(), db[0].clone()]);

    lanes.close();
    // A claim that was under way when shutdown began is held, then given back with the rest.
    let late_claim = hold(&mut lanes, &b, 1);
    let waiting: HashSet<_> = ids(&lanes.drain_waiting()).into_iter().collect();
    let expected: HashSet<_> = [&da[1], &da[2], &db[1], &late_claim[0]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(waiting, expected);
    assert_eq!(counts(&lanes), (2, 3), "two running and c's reservation");
    assert!(lanes.start().is_empty());
    assert!(lanes.drain_waiting().is_empty());

    // No more room after shutdown; a publish that had reserved some hands over to be given back.
    assert!(!lanes.reserve(&c));
    let handed = claim(&c);
    let release = (handed.delivery_id.clone(), handed.lease.clone());
    lanes.hand_over(vec![handed], t0(), t0().plus(LEASE));
    assert_eq!(lanes.reserved(), 0);
    assert!(lanes.start().is_empty(), "a late hand-over is not started");
    let late: Vec<_> = lanes
        .take_late()
        .into_iter()
        .map(|r| (r.delivery_id, r.lease))
        .collect();
    assert_eq!(late, [release]);
    assert!(lanes.take_late().is_empty());

    lanes.finished(&first(&a));
    lanes.finished(&first(&b));
    assert_eq!(counts(&lanes), (0, 0));
}

#[test]
fn publishing_hands_over_through_the_shared_lanes_and_rings() {
    let shared = SharedLanes::new(Lanes::new(2, 1, 0));
    let intake: &dyn Intake = &shared;
    let (a, b) = (wh(), wh());
    assert!(intake.reserve(&a));
    assert!(intake.reserve(&a));
    assert!(intake.reserve(&b));
    assert!(shared.handed.notified().now_or_never().is_none());
    let c = claim(&a);
    let d = c.delivery_id.clone();
    intake.hand_over(vec![c], t0(), t0().plus(LEASE));
    assert!(
        shared.handed.notified().now_or_never().is_some(),
        "the scheduler is told"
    );
    intake.cancel(&[a.clone(), b.clone()]);
    let mut lanes = shared.lock();
    assert_eq!(lanes.reserved(), 0);
    assert_eq!(lanes.held_by_webhook(), HashMap::from([(a, 1)]));
    assert_eq!(ids(&lanes.start()), [d]);
}

/// Under load that never lets the lanes run empty, with a cap as high as the workers (the
/// backlog scenario's settings), the ready list stays as short as the number of lanes: each
/// webhook is on it once at most.
#[test]
fn the_ready_list_holds_each_webhook_once_however_long_the_load() {
    for (workers, cap, webhooks) in [(1, 1, 1), (2, 2, 1), (64, 64, 1), (64, 64, 3), (64, 16, 40)] {
        let mut lanes = Lanes::new(workers, cap, 0);
        let hooks: Vec<WebhookId> = (0..webhooks).map(|_| wh()).collect();
        let mut running: VecDeque<WebhookId> = VecDeque::new();
        // Twice as many held as may run: the lanes never run empty.
        for hook in &hooks {
            hold(&mut lanes, hook, 2 * workers.max(cap));
        }
        for round in 0..5_000 {
            for started in lanes.start() {
                running.push_back(started.claim.webhook.id.clone());
            }
            let done = running.pop_front().expect("attempts are running");
            lanes.finished(&first(&done));
            hold(&mut lanes, &done, 1);
            assert!(
                lanes.ready.len() <= webhooks,
                "{workers} workers, cap {cap}, {webhooks} webhooks: {} on the ready list at round {round}",
                lanes.ready.len()
            );
        }
        assert!(lanes.running <= workers);
    }
}

/// Webhooks with deliveries waiting take turns: none starts twice before each other one that
/// can has started once.
#[test]
fn webhooks_with_deliveries_waiting_take_turns() {
    let mut lanes = Lanes::new(6, 8, 0);
    let (a, b) = (wh(), wh());
    let da = hold(&mut lanes, &a, 4);
    let db = hold(&mut lanes, &b, 4);
    assert_eq!(
        ids(&lanes.start()),
        [
            da[0].clone(),
            db[0].clone(),
            da[1].clone(),
            db[1].clone(),
            da[2].clone(),
            db[2].clone()
        ]
    );
}

mod flow;
mod fresh_first;
