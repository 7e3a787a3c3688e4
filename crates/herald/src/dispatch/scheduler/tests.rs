//! `Pacing`'s decisions, with the clock passed in.

use super::*;

const POLL: Duration = Duration::from_secs(1);

fn summary(asked: usize, found: usize, next_due: Option<Timestamp>) -> ClaimSummary {
    ClaimSummary {
        asked,
        found,
        next_due,
        behind: Vec::new(),
        gate_opens_at: None,
    }
}

fn webhook(id: &str) -> WebhookId {
    WebhookId::from_trusted(id.to_owned())
}

/// A pacing just after its first claim was started.
fn claiming(clock: Instant) -> Pacing {
    let mut p = Pacing::new(clock);
    assert!(!p.held_off(clock));
    assert!(
        p.take_claim(8, false, clock),
        "the first claim goes at once"
    );
    assert!(!p.take_claim(8, false, clock), "one claim at a time");
    p
}

#[test]
fn no_claim_without_room_or_inside_the_gap() {
    let clock = Instant::now();
    let mut p = Pacing::new(clock);
    assert!(!p.take_claim(0, false, clock));
    assert!(!p.take_claim(8, true, clock));
    assert!(p.claim_now, "the claim is still wanted");
    assert!(p.take_claim(1, false, clock));
}

#[test]
fn a_claim_spends_a_wake_up_already_past_and_keeps_a_later_one() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    // Back in 40 ms (a rate limit's next burst); a wake-up starts the claim 50 ms on.
    let mut burst = summary(10, 2, None);
    burst.gate_opens_at = Some(now.plus(Duration::from_millis(40)));
    p.claimed(&burst, POLL, now, clock);
    let later = clock + Duration::from_millis(50);
    p.wanted();
    assert!(p.take_claim(8, false, later));
    assert!(
        p.wake_at > later + POLL,
        "spent: it must not start another claim once this one ends"
    );
    // Back at a due time 300 ms on; a wake-up starts a claim before it.
    let mut p = claiming(clock);
    let due = now.plus(Duration::from_millis(300));
    p.claimed(&summary(10, 3, Some(due)), POLL, now, clock);
    p.wanted();
    assert!(p.take_claim(8, false, later));
    assert_eq!(
        p.wake_at,
        clock + Duration::from_millis(300),
        "kept: what falls due while the claim is out is claimed after it"
    );
}

#[test]
fn a_full_claim_claims_again_at_once_without_a_gap() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    p.claimed(&summary(10, 10, None), POLL, now, clock);
    assert!(p.claim_now);
    assert_eq!(p.behind, Behind::Anywhere);
    assert!(!p.held_off(clock), "a backlog waits for no gap");
    assert_eq!(p.wake_at, clock + POLL);
}

#[test]
fn a_claim_that_took_all_that_was_due_sleeps_until_the_next_due_time() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    let due = now.plus(Duration::from_millis(300));
    p.claimed(&summary(10, 3, Some(due)), POLL, now, clock);
    assert!(!p.claim_now);
    assert_eq!(p.behind, Behind::Nothing);
    assert_eq!(p.wake_at, clock + Duration::from_millis(300));
    assert!(p.held_off(clock), "the next claim waits out the gap");
    assert!(!p.held_off(clock + CLAIM_GAP));
    p.freed(&[webhook("a")]);
    assert!(
        !p.claim_now,
        "a freed slot is no reason to claim when nothing is due"
    );
}

#[test]
fn new_work_after_a_claim_that_took_all_waits_out_the_gap() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    p.claimed(&summary(10, 2, None), POLL, now, clock);
    p.wanted();
    assert!(!p.take_claim(8, p.held_off(clock), clock));
    assert!(p.claim_now, "still wanted after the gap");
    let after_gap = clock + CLAIM_GAP;
    assert!(p.take_claim(8, p.held_off(after_gap), after_gap));
}

#[test]
fn the_idle_wait_is_at_most_a_poll_interval() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    p.claimed(&summary(10, 0, Some(now.plus(POLL * 60))), POLL, now, clock);
    assert_eq!(p.wake_at, clock + POLL);
    p.claimed(&summary(10, 0, None), POLL, now, clock);
    assert_eq!(p.wake_at, clock + POLL);
}

#[test]
fn due_work_left_behind_is_claimed_when_a_lane_runs_low() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    // Fewer than asked, yet something is due: the per-webhook hold stopped the claim at a's
    // full lane.
    let mut s = summary(10, 4, Some(now));
    s.behind = vec![webhook("a")];
    p.claimed(&s, POLL, now, clock);
    assert!(!p.claim_now, "it waits for a slot, not for the clock");
    assert!(!p.held_off(clock));
    assert_eq!(p.wake_at, clock + POLL);
    p.freed(&[]);
    assert!(!p.claim_now, "the lanes still hold enough");
    p.freed(&[webhook("b")]);
    assert!(
        !p.claim_now,
        "b's lane ran low, but the store has nothing due of b's"
    );
    p.freed(&[webhook("b"), webhook("a")]);
    assert!(p.claim_now);
    // After a full claim, any lane running low may find work.
    let mut p = claiming(clock);
    p.claimed(&summary(10, 10, None), POLL, now, clock);
    p.claim_now = false;
    p.freed(&[webhook("b")]);
    assert!(p.claim_now);
}

#[test]
fn a_gate_that_opens_before_the_poll_brings_the_next_claim_forward() {
    let clock = Instant::now();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut p = claiming(clock);
    let mut s = summary(10, 1, Some(now));
    s.behind = vec![webhook("a")];
    s.gate_opens_at = Some(now.plus(Duration::from_millis(20)));
    p.claimed(&s, POLL, now, clock);
    assert_eq!(p.wake_at, clock + Duration::from_millis(20));
    s.gate_opens_at = Some(now.plus(POLL * 5));
    p.claimed(&s, POLL, now, clock);
    assert_eq!(p.wake_at, clock + POLL, "never later than a poll");
}

#[test]
fn a_failed_claim_is_tried_again_a_second_later() {
    let clock = Instant::now();
    let mut p = claiming(clock);
    p.claim_failed(clock);
    assert!(!p.claim_now);
    assert_eq!(p.wake_at, clock + CLAIM_RETRY);
    assert_eq!(
        p.behind,
        Behind::Anywhere,
        "a failure says nothing about the queue"
    );
}
