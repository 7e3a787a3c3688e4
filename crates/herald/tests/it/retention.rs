//! Retention: old events whose deliveries have all finished go, with their deliveries and
//! attempts, and so do finished jobs and expired idempotency keys; a still-retrying delivery
//! keeps its event, new events are untouched, and deliveries keep flowing while pruning runs.

use crate::common;

use common::{ADMIN, Backend, TestAccount, TestApp, TestEnv, TestReceiver, eventually};
use herald::domain::duration::HumanDuration;
use herald::janitor::{Janitor, Pruned};
use herald::telemetry::Metrics;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
/// Events and jobs older than this are pruned once finished.
const AGE: Duration = Duration::from_secs(4);

/// The value of a `/metrics` series (0 when absent).
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

async fn status_of(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.call("GET", path, Some(token), None).await.0
}

/// Event ids of the account of one type, as the API lists them.
async fn listed(app: &TestApp, account: &TestAccount, event_type: &str) -> Vec<String> {
    let page = app
        .get(
            &format!("/v1/events?type={event_type}&limit=200"),
            &account.key,
        )
        .await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn job(app: &TestApp, account: &TestAccount, body: Value, status: Option<&str>) -> String {
    let mut body = body;
    body["account"] = json!(account.id);
    body["kind"] = json!("tts");
    let (code, created) = app.call("POST", "/v1/jobs", Some(ADMIN), Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    if let Some(status) = status {
        let patch = json!({ "status": status });
        let (code, body) = app
            .call("PATCH", &format!("/v1/jobs/{id}"), Some(ADMIN), Some(patch))
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    id
}

async fn old_finished_records_are_pruned_and_the_rest_kept(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.retention.events = HumanDuration(AGE);
        s.retention.jobs = HumanDuration(AGE);
        s.retention.interval = HumanDuration(Duration::from_millis(100));
        // Small batches, so a pass takes several transactions with publishes in between.
        s.retention.batch = 10;
        s.idempotency_window = HumanDuration(Duration::from_secs(1));
        // Deliveries are kept at least a lease after they last changed.
        s.delivery.lease = HumanDuration(AGE);
    })
    .await;
    let ok = TestReceiver::start().await;
    let down = TestReceiver::start().await;
    down.set_default(common::Reply::status(500));
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": ok.url("/ok"), "events": ["tts.completed"] }),
    )
    .await;
    app.create_webhook(
        &acme,
        json!({ "url": down.url("/down"), "events": ["stt.completed"], "retry": { "schedule": ["1h"] } }),
    )
    .await;

    // Old events: 30 delivered ones (one with an idempotency key), one still retrying, and
    // two finished jobs (one with its own webhook) beside one still running.
    let mut old = Vec::new();
    for n in 0..30 {
        old.push(app.publish(&acme, "tts.completed", json!({ "n": n })).await);
    }
    let (code, keyed) = app
        .call_raw(
            "POST",
            "/v1/events",
            Some(ADMIN),
            Some(
                &json!({ "account": acme.id, "type": "tts.completed", "data": { "keyed": true } })
                    .to_string(),
            ),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{keyed}");
    old.push(keyed);
    let retrying = app
        .publish(&acme, "stt.completed", json!({ "n": "r" }))
        .await;
    let finished_job = job(&app, &acme, json!({}), Some("completed")).await;
    let job_with_hook = job(
        &app,
        &acme,
        json!({ "webhook_url": ok.url("/job") }),
        Some("failed"),
    )
    .await;
    let running_job = job(&app, &acme, json!({}), Some("processing")).await;

    // 31 events and the finished job's tts.completed go to /ok, the failed job's event to /job.
    ok.wait_for(32, Some("/ok"), WAIT).await;
    ok.wait_for(1, Some("/job"), WAIT).await;
    let retrying_delivery = app.first_delivery(&acme, &retrying).await;
    let pending = app
        .wait_for_status(&acme, &retrying_delivery, "pending", WAIT)
        .await;
    eventually(
        "the first attempt of the retrying delivery",
        WAIT,
        || async {
            let d = app
                .get(&format!("/v1/deliveries/{retrying_delivery}"), &acme.key)
                .await;
            (d["attempts"].as_array().unwrap().len() == 1).then_some(())
        },
    )
    .await;
    assert_eq!(pending["status"], "pending");
    let old_deliveries: Vec<String> = {
        let mut ids = Vec::new();
        for e in &old {
            ids.push(app.first_delivery(&acme, e).await);
        }
        ids
    };

    // Pruning starts once the old events are AGE old; publish new ones while it runs.
    eventually("pruning to begin", WAIT, || async {
        (metric(&app, "herald_pruned_total{kind=\"events\"}").await > 0).then_some(())
    })
    .await;
    let mut fresh = Vec::new();
    for n in 0..5 {
        fresh.push(
            app.publish(&acme, "tts.completed", json!({ "fresh": n }))
                .await,
        );
    }
    ok.wait_for(37, Some("/ok"), WAIT).await;
    for e in &fresh {
        let id = e["id"].as_str().unwrap();
        let path = format!("/v1/events/{id}");
        assert_eq!(status_of(&app, &path, &acme.key).await, StatusCode::OK);
        // The receiver has it; its result is written just after.
        let delivery = app.first_delivery(&acme, e).await;
        app.wait_for_status(&acme, &delivery, "succeeded", WAIT)
            .await;
    }

    // Every old finished event goes, with its deliveries and their attempts.
    let old_ids: Vec<String> = old
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    eventually("the old finished events to be pruned", WAIT, || async {
        let left = listed(&app, &acme, "tts.completed").await;
        (!left.iter().any(|id| old_ids.contains(id))).then_some(())
    })
    .await;
    for (event, delivery) in old_ids.iter().zip(&old_deliveries) {
        let path = format!("/v1/events/{event}");
        assert_eq!(
            status_of(&app, &path, &acme.key).await,
            StatusCode::NOT_FOUND
        );
        assert!(app.deliveries_of(&acme, event).await.is_empty());
        let path = format!("/v1/deliveries/{delivery}");
        assert_eq!(
            status_of(&app, &path, &acme.key).await,
            StatusCode::NOT_FOUND
        );
    }

    // New events are untouched; the retrying delivery keeps its event and attempt.
    let left = listed(&app, &acme, "tts.completed").await;
    for e in &fresh {
        assert!(
            left.contains(&e["id"].as_str().unwrap().to_owned()),
            "{left:?}"
        );
    }
    let id = retrying["id"].as_str().unwrap();
    let path = format!("/v1/events/{id}");
    assert_eq!(status_of(&app, &path, &acme.key).await, StatusCode::OK);
    let d = app
        .get(&format!("/v1/deliveries/{retrying_delivery}"), &acme.key)
        .await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);

    // Finished jobs go (once their events' deliveries are gone); the running one stays.
    eventually("the finished jobs to be pruned", WAIT, || async {
        let a = status_of(&app, &format!("/v1/jobs/{finished_job}"), ADMIN).await;
        let b = status_of(&app, &format!("/v1/jobs/{job_with_hook}"), ADMIN).await;
        (a == StatusCode::NOT_FOUND && b == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let path = format!("/v1/jobs/{running_job}");
    assert_eq!(status_of(&app, &path, ADMIN).await, StatusCode::OK);

    // The counters: 31 old events and the finished jobs' terminal events with a delivery
    // each, at least one attempt per delivery, and the expired idempotency key. (A job may go
    // a pass before its event: the event waits for its delivery to have finished AGE ago.)
    eventually("the counters to show everything pruned", WAIT, || async {
        let deliveries = metric(&app, "herald_pruned_total{kind=\"deliveries\"}").await;
        let attempts = metric(&app, "herald_pruned_total{kind=\"attempts\"}").await;
        (deliveries >= 33 && attempts >= 33).then_some(())
    })
    .await;
    assert_eq!(metric(&app, "herald_pruned_total{kind=\"jobs\"}").await, 2);
    assert!(metric(&app, "herald_pruned_total{kind=\"idempotency_keys\"}").await >= 1);
}

on_both_backends!(old_finished_records_are_pruned_and_the_rest_kept);

/// Two nodes' janitors on one PostgreSQL database, pass after pass at the same moments: every
/// pass succeeds, and between them they prune every old event, delivery and attempt.
#[tokio::test]
async fn two_nodes_pruning_at_once_both_succeed_and_prune_everything() {
    let env = TestEnv::new(Backend::Postgres).await;
    let mut settings = env.settings();
    settings.retention.events = HumanDuration(Duration::from_secs(1));
    settings.retention.batch = 5;
    settings.delivery.lease = HumanDuration(Duration::from_secs(1));
    let app = TestApp::start(settings.clone()).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(&acme, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    for n in 0..40 {
        app.publish(&acme, "tts.completed", json!({ "n": n })).await;
    }
    receiver.wait_for(40, None, WAIT).await;

    let node = |name: &str| {
        let settings = settings.clone();
        let url = env.database_url.clone();
        let name = name.to_owned();
        async move {
            let store = herald::store::open(&url, 4, Default::default())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            Janitor::new(store, &settings, Arc::new(Metrics::new()))
        }
    };
    let (a, b) = (node("a").await, node("b").await);
    let shutdown = CancellationToken::new();
    let deadline = Instant::now() + WAIT;
    let mut total = Pruned::default();
    while total.events < 40 {
        assert!(Instant::now() < deadline, "pruned only {total:?}");
        let (x, y) = tokio::join!(a.pass(&shutdown), b.pass(&shutdown));
        for p in [x.expect("node a's pass"), y.expect("node b's pass")] {
            total.events += p.events;
            total.deliveries += p.deliveries;
            total.attempts += p.attempts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (total.events, total.deliveries, total.attempts),
        (40, 40, 40)
    );
    assert!(listed(&app, &acme, "tts.completed").await.is_empty());
}
