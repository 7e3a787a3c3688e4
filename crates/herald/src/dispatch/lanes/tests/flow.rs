//! Pauses and the circuit in the lanes.

use super::*;

#[test]
fn a_paused_webhook_gives_back_what_waits_and_takes_nothing_until_resumed() {
    let mut lanes = Lanes::new(8, 1, 0);
    let (a, b) = (wh(), wh());
    let d = hold(&mut lanes, &a, 3);
    hold(&mut lanes, &b, 1);
    assert_eq!(lanes.start().len(), 2);
    lanes.finished(&first(&a));
    lanes.pause(&a, t0().plus(Duration::from_secs(5)));
    let back: Vec<DeliveryId> = lanes
        .take_given_back()
        .into_iter()
        .map(|r| r.delivery_id)
        .collect();
    assert_eq!(back, d[1..]);
    assert_eq!(counts(&lanes), (1, 1), "b's attempt is still held");
    assert!(!lanes.reserve(&a), "no hand-overs while paused");
    let late = hold(&mut lanes, &a, 1);
    assert!(lanes.start().is_empty());
    let back: Vec<DeliveryId> = lanes
        .take_given_back()
        .into_iter()
        .map(|r| r.delivery_id)
        .collect();
    assert_eq!(back, late, "a claim during the pause goes back too");
    lanes.resume(t0().plus(Duration::from_secs(4)));
    assert!(!lanes.reserve(&a));
    lanes.resume(t0().plus(Duration::from_secs(5)));
    assert!(lanes.reserve(&a), "over at its end");
}

#[test]
fn failures_in_a_row_open_the_circuit_here_until_a_success() {
    let mut lanes = Lanes::new(8, 1, 0).with_circuit(2, Duration::from_secs(1));
    let a = wh();
    hold(&mut lanes, &a, 4);
    assert_eq!(lanes.start().len(), 1);
    lanes.finished(&first(&a));
    lanes.attempted(&a, false, t0());
    assert!(lanes.take_given_back().is_empty());
    assert_eq!(lanes.start().len(), 1);
    lanes.finished(&first(&a));
    lanes.attempted(&a, false, t0());
    assert_eq!(lanes.take_given_back().len(), 2, "the circuit opened");
    assert!(!lanes.reserve(&a));
    hold(&mut lanes, &a, 1);
    assert!(
        lanes.start().is_empty(),
        "what a claim under way brings goes back"
    );
    assert_eq!(lanes.take_given_back().len(), 1);
    lanes.resume(t0().plus(Duration::from_secs(1)));
    assert!(!lanes.reserve(&a), "no hand-overs while open");
    hold(&mut lanes, &a, 1);
    assert_eq!(lanes.start().len(), 1, "a claimed probe goes");
    lanes.finished(&first(&a));
    lanes.attempted(&a, true, t0());
    assert!(lanes.reserve(&a), "closed by the success");
}
