//! The claims' gates, without a store: pauses, rate limits, probes, and what a claim reports.

use super::*;
use crate::domain::Timestamp;

const NOW: i64 = 1_700_000_000_000;

/// The webhooks a claim may take nothing of now.
fn closed(gates: &Gates) -> Vec<String> {
    let mut closed: Vec<String> = (gates.by_webhook.iter())
        .filter(|(_, g)| g.allowance == 0)
        .map(|(id, _)| id.clone())
        .collect();
    closed.sort();
    closed
}

fn row(id: &str) -> FlowRow {
    FlowRow {
        id: id.to_owned(),
        ..FlowRow::default()
    }
}

fn request(in_flight: &[(&str, usize)]) -> ClaimRequest {
    ClaimRequest {
        now: Timestamp::from_millis(NOW),
        lease_until: Timestamp::from_millis(NOW + 1),
        limit: 64,
        per_webhook_cap: 8,
        in_flight: in_flight
            .iter()
            .map(|(w, n)| (WebhookId::from_trusted((*w).to_owned()), *n))
            .collect(),
        node: "test".to_owned(),
        probe_interval: std::time::Duration::from_secs(1),
    }
}

/// A claim on node "a" that locked `locked`.
fn on_a(locked: &[FlowRow]) -> Option<Locking<'_>> {
    Some(Locking { locked, node: "a" })
}

fn rate(per_second: f64, burst: u32) -> Option<String> {
    Some(RateLimit::new(per_second, burst).unwrap().to_json())
}

#[test]
fn a_paused_webhook_is_closed_until_its_pause_ends_and_counts_as_full() {
    let paused = FlowRow {
        paused_until: Some(NOW + 5_000),
        ..row("wh_p")
    };
    let over = FlowRow {
        paused_until: Some(NOW - 1),
        ..row("wh_o")
    };
    let gates = Gates::of(&[paused, over], None, NOW);
    assert_eq!(closed(&gates), ["wh_p"]);
    let req = gates.narrow(&request(&[]));
    assert_eq!(req.in_flight[&WebhookId::from_trusted("wh_p".into())], 8);
    assert!(
        !req.in_flight
            .contains_key(&WebhookId::from_trusted("wh_o".into()))
    );
    let after = gates.after([]);
    assert_eq!(after.opens_at, Some(NOW + 5_000));
    assert_eq!(after.closed, ["wh_p"]);
}

#[test]
fn a_rate_limited_webhook_gets_its_allowance_and_reports_its_next_token() {
    let limited = FlowRow {
        rate_limit: rate(50.0, 3),
        ..row("wh_r")
    };
    let gates = Gates::of(
        std::slice::from_ref(&limited),
        on_a(std::slice::from_ref(&limited)),
        NOW,
    );
    // Room 8 - 1 in flight = 7, cut to the burst of 3.
    let req = gates.narrow(&request(&[("wh_r", 1)]));
    assert_eq!(req.in_flight[&WebhookId::from_trusted("wh_r".into())], 5);
    let after = gates.after(["wh_r", "wh_r", "wh_r"]);
    // This node holds the allowance for a second from now.
    let taken = Taken {
        webhook: "wh_r".to_owned(),
        tat: NOW + 60,
        held_until: NOW + 1_000,
    };
    assert_eq!(after.taken, [taken]);
    // Back when the whole burst is: a claim per burst, not per token.
    assert_eq!(after.opens_at, Some(NOW + 60));
    assert_eq!(
        after.closed,
        ["wh_r"],
        "its due work waits for the next burst"
    );
    // Took less than its allowance: nothing more was due, or its lane is full and a freed slot
    // may take more at once. Nothing to come back for at a time.
    let part = gates.after(["wh_r"]);
    assert_eq!(part.opens_at, None);
    assert!(part.closed.is_empty(), "{:?}", part.closed);
}

#[test]
fn a_rate_limited_row_another_claim_holds_is_closed_for_a_moment() {
    let limited = FlowRow {
        rate_limit: rate(50.0, 3),
        ..row("wh_r")
    };
    let gates = Gates::of(&[limited], on_a(&[]), NOW);
    assert_eq!(closed(&gates), ["wh_r"]);
    // The other claim's node comes back for the next burst (three intervals of 20 ms): this one
    // leaves it alone for longer.
    assert_eq!(gates.after([]).opens_at, Some(NOW + LOCKED_RETRY_MS));
    let slow = FlowRow {
        rate_limit: rate(1.0, 2),
        ..row("wh_s")
    };
    let gates = Gates::of(&[slow], on_a(&[]), NOW);
    // A slow one's burst takes longer than that to come back: until then.
    assert_eq!(gates.after([]).opens_at, Some(NOW + 2_000));
}

#[test]
fn a_rate_limit_another_node_holds_is_left_to_it_until_its_hold_ends() {
    let held = |node: &str, until: i64| FlowRow {
        rate_limit: rate(50.0, 2),
        rate_node: Some(node.to_owned()),
        rate_node_until: Some(until),
        ..row("wh_r")
    };
    // Held by "b": node "a" neither locks the row nor takes from it, and comes back when the
    // hold ends.
    let by_b = held("b", NOW + 700);
    assert!(!by_b.needs_lock(NOW, "a"));
    let gates = Gates::of(std::slice::from_ref(&by_b), on_a(&[]), NOW);
    assert_eq!(closed(&gates), ["wh_r"]);
    assert_eq!(gates.after([]).opens_at, Some(NOW + 700));
    // Its own hold, or one that has run out: locked, and its allowance taken (and held again).
    for row in [held("a", NOW + 700), held("b", NOW)] {
        assert!(row.needs_lock(NOW, "a"));
        let gates = Gates::of(
            std::slice::from_ref(&row),
            on_a(std::slice::from_ref(&row)),
            NOW,
        );
        assert!(closed(&gates).is_empty());
        let after = gates.after(["wh_r", "wh_r"]);
        assert_eq!(after.taken[0].held_until, NOW + 1_000);
        // Less than its allowance (nothing more due, or its own lane full): it lets go.
        assert_eq!(gates.after(["wh_r"]).taken[0].held_until, NOW);
    }
    // One node (no locking): there is no one else to leave it to.
    let gates = Gates::of(&[by_b], None, NOW);
    assert!(closed(&gates).is_empty());
    // A slower limit is held for two of its bursts, five seconds at most: a token every 500 ms,
    // two at once, held 2 s; a token every 2 s, held 5 s, not 8.
    for (per_second, hold) in [(2.0, 2_000), (0.5, 5_000)] {
        let slow = FlowRow {
            rate_limit: rate(per_second, 2),
            ..row("wh_s")
        };
        let gates = Gates::of(
            std::slice::from_ref(&slow),
            on_a(std::slice::from_ref(&slow)),
            NOW,
        );
        let after = gates.after(["wh_s", "wh_s"]);
        assert_eq!(after.taken[0].held_until, NOW + hold);
    }
}

#[test]
fn an_open_circuit_lets_one_probe_through_when_due() {
    let waiting = FlowRow {
        probe_at: Some(NOW + 1_000),
        ..row("wh_w")
    };
    let due = FlowRow {
        probe_at: Some(NOW),
        ..row("wh_d")
    };
    let gates = Gates::of(&[waiting, due.clone()], on_a(&[due]), NOW);
    assert_eq!(closed(&gates), ["wh_w"]);
    let req = gates.narrow(&request(&[]));
    assert_eq!(req.in_flight[&WebhookId::from_trusted("wh_d".into())], 7);
    let after = gates.after(["wh_d"]);
    assert_eq!(after.probed, ["wh_d"]);
    assert_eq!(after.opens_at, Some(NOW + 1_000));
}

#[test]
fn pauses_fold_to_the_latest_per_webhook() {
    use crate::domain::{Attempt, AttemptId, DeliveryId};
    use crate::store::NextStep;
    let record = |webhook: &str, pause: Option<i64>| AttemptRecord {
        delivery_id: DeliveryId::generate(),
        webhook_id: WebhookId::from_trusted(webhook.to_owned()),
        lease: "l".to_owned(),
        attempt: Attempt {
            id: AttemptId::generate(),
            number: 1,
            started_at: Timestamp::from_millis(NOW),
            duration_ms: 1,
            status_code: Some(429),
            error_kind: None,
            error: None,
            response_body: None,
            node: None,
        },
        next: NextStep::Failed,
        ordered: false,
        gone: false,
        pause_until: pause.map(Timestamp::from_millis),
    };
    let records = [
        record("a", Some(NOW + 5)),
        record("b", None),
        record("a", Some(NOW + 9)),
        record("a", Some(NOW + 7)),
    ];
    assert_eq!(pauses(&records), [("a".to_owned(), NOW + 9)]);
    let ok = |webhook: &str| AttemptRecord {
        next: NextStep::Succeeded,
        ..record(webhook, None)
    };
    let records = [
        record("a", None),
        ok("a"),
        record("a", None),
        record("a", None),
        record("b", None),
        ok("c"),
    ];
    assert_eq!(
        streaks(&records),
        [
            ("a".to_owned(), true, 2),
            ("b".to_owned(), false, 1),
            ("c".to_owned(), true, 0)
        ]
    );
}
