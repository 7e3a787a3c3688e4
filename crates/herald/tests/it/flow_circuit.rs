//! The circuit breaker (issue 18): an endpoint failing `circuit_after` times in a row gets only
//! probes until it answers again, and no delivery spends more attempts for it; and a webhook's
//! flow state as `GET /v1/webhooks/{id}` and `/metrics` show it.

use crate::common;

use common::{Backend, Reply, TestApp, TestReceiver, eventually};
use herald::domain::duration::HumanDuration;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const EVENTS: usize = 10;

/// Down for 6 s, retried every 300 ms: see [`outage`].
async fn an_open_circuit_lets_only_probes_through_and_held_deliveries_flow_after(backend: Backend) {
    outage(backend, Duration::from_secs(6), "300ms").await;
}

/// Issue 18's acceptance at its own scale: down for a minute, retried every 2 s.
async fn an_endpoint_down_for_a_minute_gets_only_probes_and_every_held_delivery_after(
    backend: Backend,
) {
    outage(backend, Duration::from_secs(60), "2s").await;
}

/// Down for `down`, each delivery retried every `step`, probed every second after 3 failures
/// in a row: while the circuit is open the receiver sees only the probes, about one a second;
/// once it answers, every held delivery succeeds, none with more attempts than its schedule
/// would have made meanwhile.
async fn outage(backend: Backend, down: Duration, step: &str) {
    let step_ms = herald::domain::duration::parse_duration(step)
        .unwrap()
        .as_millis();
    // Enough retries to outlast the outage.
    let retries = (down.as_millis() / step_ms) as usize + 10;
    let app = TestApp::spawn_with(backend, |s| {
        s.delivery.per_webhook_concurrency = 1;
        s.delivery.circuit_after = 3;
        s.delivery.probe_interval = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/"), "events": ["*"],
                    "retry": { "schedule": vec![step; retries], "jitter": 0 } }),
        )
        .await;
    let down_since = Instant::now();
    let mut events = Vec::new();
    for i in 0..EVENTS {
        events.push(app.publish(&acme, "tts.completed", json!({ "i": i })).await);
    }
    let opened = receiver.wait_for(3, None, WAIT).await[2].at;
    // While open, the webhook shows it.
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let shown: Value = eventually("the circuit to show open", WAIT, || async {
        let w = app.get(&path, &acme.key).await;
        (w["flow"]["state"] == "circuit_open").then_some(w)
    })
    .await;
    assert_eq!(shown["flow"]["pending"], EVENTS);
    assert!(shown["flow"]["next_attempt_at"].is_string(), "{shown}");
    tokio::time::sleep(down.saturating_sub(down_since.elapsed())).await; // the outage itself
    receiver.set_default(Reply::status(200));
    let up = Instant::now();
    let mut deliveries = Vec::new();
    for e in &events {
        let id = app.first_delivery(&acme, e).await;
        deliveries.push(app.wait_for_status(&acme, &id, "succeeded", WAIT).await);
    }
    let got = receiver.received();
    // After the first three failures and what was in flight, and until the endpoint came back:
    // only probes, about a second apart.
    let probes: Vec<Instant> = got
        .iter()
        .map(|r| r.at)
        .filter(|at| *at > opened && *at < up)
        .collect();
    assert!(
        probes.len() as u64 <= down.as_secs() + 1,
        "{} requests while the circuit was open for {down:?}",
        probes.len()
    );
    for pair in probes.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(800),
            "two requests {:?} apart while the circuit was open",
            pair[1] - pair[0]
        );
    }
    // Without the breaker each delivery would have been tried every `step` while down.
    let most = 2 + (down.as_millis() / step_ms) as usize;
    for d in &deliveries {
        let n = d["attempts_made"].as_u64().unwrap() as usize;
        assert!((1..=most).contains(&n), "{n} attempts: {d}");
    }
    assert_eq!(got.len(), got.iter().filter(|r| r.at < up).count() + EVENTS);
}

/// A receiver's pause shows in the webhook and in `/metrics`, with its pending deliveries.
async fn a_paused_webhook_shows_its_state_and_pending_work(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply {
        status: 503,
        delay: Duration::ZERO,
        retry_after: Some(30),
    });
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/{id}");
    let idle = app.get(&path, &acme.key).await;
    assert_eq!(
        idle["flow"],
        json!({ "state": "open", "pending": 0, "next_attempt_at": null })
    );
    for i in 0..3 {
        app.publish(&acme, "tts.completed", json!({ "i": i })).await;
    }
    let shown = eventually("the pause to show", WAIT, || async {
        let w = app.get(&path, &acme.key).await;
        (w["flow"]["state"] == "paused").then_some(w)
    })
    .await;
    assert_eq!(shown["flow"]["pending"], 3);
    let next = shown["flow"]["next_attempt_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(next.as_str() > shown["created_at"].as_str().unwrap());
    let series = format!("herald_webhook_state{{webhook_id=\"{id}\",state=\"paused\"}} 1");
    eventually("the paused gauge", WAIT, || async {
        let text = app.metrics_text().await;
        (text.contains(&series)
            && text.contains(&format!("herald_webhook_pending{{webhook_id=\"{id}\"}} 3")))
        .then_some(())
    })
    .await;
    // The list does not read the flow (it stays one query).
    let (_, list) = app.call("GET", "/v1/webhooks", Some(&acme.key), None).await;
    assert!(list["data"][0].get("flow").is_none());
}

on_both_backends!(
    an_open_circuit_lets_only_probes_through_and_held_deliveries_flow_after,
    an_endpoint_down_for_a_minute_gets_only_probes_and_every_held_delivery_after,
    a_paused_webhook_shows_its_state_and_pending_work,
);
