//! Ordering per key (issue 18): a webhook with `ordering: "key"` gets each key's deliveries one at
//! a time in publish order, keys in parallel; `"fifo"` gets all of them one at a time; on
//! PostgreSQL that holds with several nodes claiming. The receiver fails about one request in
//! seven once and answers after 0–20 ms, so heads fail and are retried while others wait.

use crate::common;

mod receiver;

use common::{ADMIN, Backend, ServerProcess, TestApp, TestEnv, eventually};
use receiver::FlakyReceiver;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const JOBS: usize = 200;
const STATUSES: [&str; 3] = ["queued", "processing", "completed"];
const FIFO_EVENTS: usize = 1000;
/// Jobs driven at once (each job's three changes one after the other).
const DRIVERS: usize = 20;
const WAIT: Duration = Duration::from_secs(120);

/// A short schedule: a failed head is tried again at once, so the test is about order, not time.
fn retry() -> Value {
    json!({ "schedule": vec!["20ms"; 10], "timeout": "2s" })
}

fn job_key(data: &Value) -> String {
    data["id"].as_str().unwrap_or_default().to_owned()
}

fn one_key(_: &Value) -> String {
    String::new()
}

/// Creates `JOBS` jobs of `account` and moves each through queued → processing → completed,
/// through the nodes at `bases` in turn, `DRIVERS` jobs at a time.
async fn drive_jobs(client: &reqwest::Client, bases: &[String], account: &str) {
    let mut drivers = tokio::task::JoinSet::new();
    for d in 0..DRIVERS {
        let (client, bases, account) = (client.clone(), bases.to_vec(), account.to_owned());
        drivers.spawn(async move {
            for j in (d..JOBS).step_by(DRIVERS) {
                let base = &bases[j % bases.len()];
                let id = format!("job-{j}");
                let created = client
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "account": account, "kind": "tts", "id": id, "input": {} }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(created.status(), StatusCode::CREATED);
                for status in &STATUSES[1..] {
                    let changed = client
                        .patch(format!("{base}/v1/jobs/{id}"))
                        .bearer_auth(ADMIN)
                        .json(&json!({ "status": status }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(changed.status(), StatusCode::OK);
                }
            }
        });
    }
    while let Some(done) = drivers.join_next().await {
        done.unwrap();
    }
}

async fn wait_for_firsts(receiver: &FlakyReceiver, n: usize) -> Vec<Value> {
    eventually(&format!("{n} deliveries accepted"), WAIT, || async {
        let firsts = receiver.firsts();
        (firsts.len() >= n).then_some(firsts)
    })
    .await
}

/// Every job's statuses, in the order the receiver first accepted them, are in status order.
fn assert_status_order(firsts: &[Value]) {
    let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
    for data in firsts {
        by_job
            .entry(job_key(data))
            .or_default()
            .push(data["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_job.len(), JOBS);
    for (job, statuses) in by_job {
        assert_eq!(statuses, STATUSES, "{job} arrived out of order");
    }
}

fn assert_one_at_a_time_per_key(receiver: &FlakyReceiver) {
    assert!(
        receiver.overlapping().is_empty(),
        "two deliveries of one key were in flight at once: {:?}",
        receiver.overlapping()
    );
    assert!(receiver.failed() > 0, "the receiver failed no request");
}

async fn each_jobs_statuses_arrive_in_order_and_jobs_in_parallel(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = FlakyReceiver::start(job_key).await;
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url(), "events": ["tts.*"], "ordering": "key", "retry": retry() }),
        )
        .await;
    assert_eq!(hook["ordering"], "key");
    let started = std::time::Instant::now();
    drive_jobs(&app.client, &[app.url("")], &acme.id).await;
    let firsts = wait_for_firsts(&receiver, JOBS * STATUSES.len()).await;
    println!(
        "{} deliveries in {:?}, {} failed once, at most {} in flight",
        firsts.len(),
        started.elapsed(),
        receiver.failed(),
        receiver.most_in_flight()
    );
    assert_status_order(&firsts);
    assert_one_at_a_time_per_key(&receiver);
    assert!(
        receiver.most_in_flight() > 1,
        "different keys never ran in parallel"
    );
}

async fn a_fifo_webhook_gets_every_event_in_publish_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = FlakyReceiver::start(one_key).await;
    let acme = app.create_account("Acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url(), "events": ["tts.completed"], "ordering": "fifo", "retry": retry() }),
    )
    .await;
    // One batch: its events are published in the order listed.
    app.publish_batch(&acme, "tts.completed", 0, FIFO_EVENTS)
        .await;
    let started = std::time::Instant::now();
    let firsts = wait_for_firsts(&receiver, FIFO_EVENTS).await;
    println!(
        "{} deliveries in {:?}, {} failed once",
        firsts.len(),
        started.elapsed(),
        receiver.failed()
    );
    let order: Vec<u64> = firsts.iter().map(|d| d["n"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..FIFO_EVENTS as u64).collect::<Vec<_>>());
    assert_one_at_a_time_per_key(&receiver);
    assert_eq!(receiver.most_in_flight(), 1);
}

async fn ordering_and_keys_are_checked_and_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": "http://127.0.0.1:9/hook", "events": ["*"] }),
        )
        .await;
    assert_eq!(hook["ordering"], "none", "the default");
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let (status, changed) = app
        .call(
            "PATCH",
            &path,
            Some(&acme.key),
            Some(json!({ "ordering": "fifo" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(app.get(&path, &acme.key).await["ordering"], "fifo");
    let (status, refused) = app
        .call(
            "PATCH",
            &path,
            Some(&acme.key),
            Some(json!({ "ordering": "lifo" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

    let publish = |key: Value| json!({ "account": acme.id, "type": "tts.completed", "data": {}, "ordering_key": key });
    for bad in [json!(""), json!("k".repeat(201)), json!("a\u{0}b")] {
        let (status, refused) = app
            .call("POST", "/v1/events", Some(ADMIN), Some(publish(bad)))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(refused["error"]["field"], "ordering_key", "{refused}");
    }
    let (status, answer) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": [publish(json!("")), publish(json!("job-1"))] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["data"][0]["error"]["field"],
        "events[0].ordering_key"
    );
    assert_eq!(answer["data"][1]["deliveries"], 1, "{answer}");
    // A delivery shows its place in the order: the whole webhook's (`fifo`), or its key's.
    let first = app
        .deliveries_of(&acme, answer["data"][1]["id"].as_str().unwrap())
        .await;
    assert!(first[0]["seq"].is_i64(), "{}", first[0]);
    assert!(first[0].get("ordering_key").is_none(), "{}", first[0]);
    app.call(
        "PATCH",
        &path,
        Some(&acme.key),
        Some(json!({ "ordering": "key" })),
    )
    .await;
    let second = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN),
            Some(publish(json!("job-2"))),
        )
        .await
        .1;
    let second = app
        .deliveries_of(&acme, second["id"].as_str().unwrap())
        .await;
    assert_eq!(second[0]["ordering_key"], "job-2", "{}", second[0]);
    assert!(second[0]["seq"].as_i64() > first[0]["seq"].as_i64());
}

async fn events_a_fifo_webhook_missed_are_replayed_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = FlakyReceiver::start(one_key).await;
    let acme = app.create_account("Acme").await;
    let since = herald::domain::Timestamp::now()
        .minus(Duration::from_secs(1))
        .to_rfc3339();
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url(), "events": ["tts.completed"], "ordering": "fifo", "retry": retry() }),
        )
        .await;
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let status = |s: &str| json!({ "status": s });
    let (code, _) = app
        .call("PATCH", &path, Some(&acme.key), Some(status("disabled")))
        .await;
    assert_eq!(code, StatusCode::OK);
    const MISSED: u64 = 30;
    for n in 0..MISSED {
        app.publish(&acme, "tts.completed", json!({ "n": n })).await;
    }
    let (code, _) = app
        .call("PATCH", &path, Some(&acme.key), Some(status("active")))
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, answer) = app
        .call(
            "POST",
            &format!("{path}/replay-missing"),
            Some(&acme.key),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["deliveries"], MISSED);
    let firsts = wait_for_firsts(&receiver, MISSED as usize).await;
    let order: Vec<u64> = firsts.iter().map(|d| d["n"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..MISSED).collect::<Vec<_>>());
    assert_eq!(receiver.most_in_flight(), 1);
}

on_both_backends!(
    each_jobs_statuses_arrive_in_order_and_jobs_in_parallel,
    a_fifo_webhook_gets_every_event_in_publish_order,
    ordering_and_keys_are_checked_and_shown,
    events_a_fifo_webhook_missed_are_replayed_in_order,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_keep_each_keys_order() {
    herald::install_tls_provider();
    let env = TestEnv::new(Backend::Postgres).await;
    let config = "[delivery]\nlease = \"5s\"\n";
    let nodes = [
        ServerProcess::start(&env, "node-a", config).await,
        ServerProcess::start(&env, "node-b", config).await,
    ];
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let receiver = FlakyReceiver::start(job_key).await;
    let client = reqwest::Client::new();
    let account: Value = client
        .post(format!("{}/v1/accounts", bases[0]))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = client
        .post(format!("{}/v1/webhooks", bases[1]))
        .bearer_auth(account["api_key"].as_str().unwrap())
        .json(&json!({ "url": receiver.url(), "events": ["tts.*"], "ordering": "key", "retry": retry() }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    drive_jobs(&client, &bases, account["id"].as_str().unwrap()).await;
    let firsts = wait_for_firsts(&receiver, JOBS * STATUSES.len()).await;
    assert_status_order(&firsts);
    assert_one_at_a_time_per_key(&receiver);

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let by_node: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT node, COUNT(*) FROM attempts GROUP BY node ORDER BY node")
            .fetch_all(&pool)
            .await
            .unwrap();
    println!("attempts by node: {by_node:?}");
    assert_eq!(by_node.len(), 2, "both nodes attempted: {by_node:?}");
}
