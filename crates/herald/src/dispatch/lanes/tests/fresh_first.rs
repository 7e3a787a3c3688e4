//! First attempts first: the fresh reserve, retry concurrency and turns, and first attempts
//! passing retries held ahead of them.

use super::*;

#[test]
fn retries_run_on_the_workers_left_after_the_fresh_reserve() {
    // Four workers, one kept for first attempts: three retries at most.
    let mut lanes = Lanes::new(4, 4, 1);
    let (a, b) = (wh(), wh());
    hold_retries(&mut lanes, &a, 3);
    hold_retries(&mut lanes, &b, 3);
    let started = lanes.start();
    assert_eq!(started.len(), 3, "retries stop at their share");
    assert!(started.iter().all(|h| h.claim.attempt_number == 2));
    // A first attempt still finds its worker.
    let fresh = hold(&mut lanes, &b, 1);
    assert_eq!(ids(&lanes.start()), fresh);
    // A retry that ends lets the next retry go, on either lane.
    let ended = Freed::of(&started[0].claim);
    lanes.finished(&ended);
    let next = lanes.start();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].claim.attempt_number, 2);
}

#[test]
fn a_lane_runs_its_retries_at_the_retry_concurrency_and_its_first_attempts_beside() {
    // Eight at once to a webhook, two of them retries.
    let mut lanes = Lanes::new(16, 8, 0).with_retry_concurrency(2);
    let (a, b) = (wh(), wh());
    let retries = hold_retries(&mut lanes, &a, 6);
    hold_retries(&mut lanes, &b, 1);
    let started = lanes.start();
    assert_eq!(
        started.iter().filter(|h| h.claim.webhook.id == a).count(),
        2,
        "a's retries stop at two"
    );
    assert_eq!(started.len(), 3, "b's retry goes beside them");
    // First attempts to a still go, up to its concurrency.
    let fresh = hold(&mut lanes, &a, 8);
    assert_eq!(ids(&lanes.start()), fresh[..6]);
    // A retry of a's that ends lets its next retry go.
    lanes.finished(&Freed::of(&started[0].claim));
    assert_eq!(ids(&lanes.start()), retries[2..3]);
    // A first attempt that ends, with two retries running: the next to go is a first attempt.
    lanes.finished(&first(&a));
    assert_eq!(ids(&lanes.start()), fresh[6..7]);
    assert_eq!(lanes.by_webhook[&a].running_retries, 2);
}

#[test]
fn retries_start_a_turn_at_a_time_and_one_waiting_on_its_endpoint_lets_the_next_go() {
    // Workers and concurrency to spare: the two turns bind.
    let mut lanes = Lanes::new(64, 16, 0).with_retry_turns(2);
    let (a, b) = (wh(), wh());
    let retries = hold_retries(&mut lanes, &a, 6);
    let started = lanes.start();
    assert_eq!(ids(&started), retries[..2], "two turns");
    // First attempts take no turn.
    let fresh = hold(&mut lanes, &b, 3);
    assert_eq!(ids(&lanes.start()), fresh);
    // A retry still running after its turn lets the next one start, and still runs.
    lanes.turn_over();
    assert_eq!(ids(&lanes.start()), retries[2..3]);
    assert_eq!(lanes.running_retries, 3);
    // Its end gives back no turn (it had given it); a retry that ends within its turn does.
    lanes.finished(&Freed {
        turn: false,
        ..Freed::of(&started[0].claim)
    });
    assert!(lanes.start().is_empty(), "both turns still taken");
    lanes.finished(&Freed::of(&started[1].claim));
    assert_eq!(ids(&lanes.start()), retries[3..4]);
}

#[test]
fn retries_past_a_lane_s_retry_hold_leave_its_first_attempts_room() {
    // Sixteen at once to a webhook (128 held), four of them retries (32 held).
    let mut lanes = Lanes::new(64, 16, 0).with_retry_concurrency(4);
    let (a, b, c) = (wh(), wh(), wh());
    hold_retries(&mut lanes, &a, 128);
    hold_retries(&mut lanes, &b, 10);
    hold(&mut lanes, &c, 10);
    let held = lanes.held_by_webhook();
    assert_eq!(held[&a], 128, "no claim brings a more");
    assert_eq!(
        held[&b],
        128 - 22,
        "b's claims bring at most its retry hold"
    );
    assert_eq!(held[&c], 10, "first attempts: the whole lane");
    // A hand-over to a still has room: the retries count up to their hold.
    assert!(lanes.reserve(&a));
}

#[test]
fn a_first_attempt_passes_retries_held_before_it_in_its_lane() {
    let mut lanes = Lanes::new(2, 2, 1);
    let a = wh();
    let retries = hold_retries(&mut lanes, &a, 3);
    assert_eq!(ids(&lanes.start()), retries[..1]);
    let fresh = hold(&mut lanes, &a, 1);
    assert_eq!(
        ids(&lanes.start()),
        fresh,
        "the retries wait for their share"
    );
}

#[test]
fn claims_leave_the_reserve_s_room_to_hand_overs() {
    let mut lanes = Lanes::new(4, 4, 1);
    assert_eq!(lanes.room(), 3 * HOLD_AHEAD);
    let a = wh();
    hold_retries(&mut lanes, &a, 3 * HOLD_AHEAD);
    assert_eq!(lanes.room(), 0, "no claim while the claims' room is full");
    assert!(lanes.reserve(&wh()), "a hand-over still has room");
}

/// Retries and first attempts mixed on several lanes, ended in turn: every delivery starts, the
/// retries never run beyond their share, and a lane is on each list once at most.
#[test]
fn mixed_retries_and_first_attempts_all_start_within_the_share() {
    let mut lanes = Lanes::new(8, 4, 2);
    let hooks: Vec<WebhookId> = (0..5).map(|_| wh()).collect();
    let mut all = HashSet::new();
    for (i, hook) in hooks.iter().enumerate() {
        all.extend(hold_retries(&mut lanes, hook, 10 + i));
        all.extend(hold(&mut lanes, hook, 4));
    }
    let mut running: VecDeque<Freed> = VecDeque::new();
    let mut started = HashSet::new();
    for _ in 0..1_000 {
        for held in lanes.start() {
            started.insert(held.claim.delivery_id.clone());
            running.push_back(Freed::of(&held.claim));
        }
        assert!(lanes.running_retries <= 6, "retries beyond their share");
        assert!(lanes.ready.len() <= hooks.len() && lanes.parked.len() <= hooks.len());
        let Some(ended) = running.pop_front() else {
            break;
        };
        lanes.finished(&ended);
    }
    assert_eq!(started, all, "every held delivery started");
    assert_eq!(counts(&lanes), (0, 0));
}
