//! The claims' gates, without a store: pauses, rate limits, probes, and what a claim reports.

use super::*;
use crate::domain::Timestamp;

const NOW: i64 = 1_700_000_000_000;

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
    assert_eq!(gates.closed(), ["wh_p"]);
    let req = gates.narrow(&request(&[]));
    assert_eq!(req.in_flight[&WebhookId::from_trusted("wh_p".into())], 8);
    assert!(
        !req.in_flight
            .contains_key(&WebhookId::from_trusted("wh_o".into()))
    );
    assert_eq!(gates.after([]).opens_at, Some(NOW + 5_000));
}

#[test]
fn a_rate_limited_webhook_gets_its_allowance_and_reports_its_next_token() {
    let limited = FlowRow {
        rate_limit: rate(50.0, 3),
        ..row("wh_r")
    };
    let gates = Gates::of(
        std::slice::from_ref(&limited),
        Some(std::slice::from_ref(&limited)),
        NOW,
    );
    // Room 8 - 1 in flight = 7, cut to the burst of 3.
    let req = gates.narrow(&request(&[("wh_r", 1)]));
    assert_eq!(req.in_flight[&WebhookId::from_trusted("wh_r".into())], 5);
    let after = gates.after(["wh_r", "wh_r", "wh_r"]);
    assert_eq!(after.tats, [("wh_r".to_owned(), NOW + 60)]);
    // Back when the whole burst is: a claim per burst, not per token.
    assert_eq!(after.opens_at, Some(NOW + 60));
    // Took less than its allowance: nothing more was due, nothing to come back for.
    assert_eq!(gates.after(["wh_r"]).opens_at, None);
}

#[test]
fn a_rate_limited_row_another_claim_holds_is_closed_for_a_moment() {
    let limited = FlowRow {
        rate_limit: rate(50.0, 3),
        ..row("wh_r")
    };
    let gates = Gates::of(&[limited], Some(&[]), NOW);
    assert_eq!(gates.closed(), ["wh_r"]);
    // The other claim's node comes back for the next burst (three intervals of 20 ms): this one
    // leaves it alone for longer.
    assert_eq!(gates.after([]).opens_at, Some(NOW + LOCKED_RETRY_MS));
    let slow = FlowRow {
        rate_limit: rate(1.0, 2),
        ..row("wh_s")
    };
    let gates = Gates::of(&[slow], Some(&[]), NOW);
    // A slow one's burst takes longer than that to come back: until then.
    assert_eq!(gates.after([]).opens_at, Some(NOW + 2_000));
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
    let gates = Gates::of(&[waiting, due.clone()], Some(&[due]), NOW);
    assert_eq!(gates.closed(), ["wh_w"]);
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
