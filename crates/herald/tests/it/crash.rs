//! Durability: an acknowledged event survives `kill -9` of the server.

use crate::common;

use common::{ADMIN, Backend, Reply, ServerProcess, TestEnv, TestReceiver, eventually};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// Short leases so the restarted node need not wait long for the dead one's (PostgreSQL keeps
/// them; SQLite, being single-process, releases them at start).
const CONFIG: &str = "[delivery]\nlease = \"3s\"\n";

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    assert!(resp.status().is_success(), "status {}", resp.status());
    resp.json().await.expect("json")
}

async fn every_acknowledged_event_is_delivered_after_a_kill_9_and_restart(backend: Backend) {
    const EVENTS: usize = 1000;
    herald::install_tls_provider();
    let env = TestEnv::new(backend).await;
    let client = reqwest::Client::new();
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(503)); // nothing gets through before the crash

    let mut server = ServerProcess::start(&env, "node", CONFIG).await;
    let account = send(
        &client,
        reqwest::Method::POST,
        format!("{}/v1/accounts", server.base),
        ADMIN,
        Some(json!({"name": "Acme"})),
    )
    .await;
    let (account_id, key) = (
        account["id"].as_str().unwrap().to_owned(),
        account["api_key"].as_str().unwrap().to_owned(),
    );
    let schedule: Vec<&str> = vec!["200ms"; 40];
    send(
        &client,
        reqwest::Method::POST,
        format!("{}/v1/webhooks", server.base),
        &key,
        Some(
            json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": schedule } }),
        ),
    )
    .await;

    // Publish from 16 concurrent producers; every 202 is an acknowledgement.
    let mut acknowledged = HashSet::new();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..16 {
        let (client, base, account_id) = (client.clone(), server.base.clone(), account_id.clone());
        producers.spawn(async move {
            let mut ids = Vec::new();
            for n in (p..EVENTS).step_by(16) {
                let body =
                    json!({ "account": account_id, "type": "tts.completed", "data": { "n": n } });
                let resp = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                let answer: Value = resp.json().await.unwrap();
                ids.push(answer["id"].as_str().unwrap().to_owned());
            }
            ids
        });
    }
    while let Some(ids) = producers.join_next().await {
        acknowledged.extend(ids.unwrap());
    }
    assert_eq!(acknowledged.len(), EVENTS);
    assert!(
        receiver.count() > 0,
        "attempts were under way when the server was killed"
    );

    server.kill_9();
    let before_restart = receiver.count();
    receiver.set_default(Reply::status(200));
    let server = ServerProcess::start(&env, "node", CONFIG).await;

    // Every acknowledged event reaches the receiver after the restart.
    let delivered: HashSet<i64> = eventually(
        "every event to be delivered after the restart",
        Duration::from_secs(60),
        || async {
            let seen: HashSet<i64> = receiver.received()[before_restart..]
                .iter()
                .map(|r| r.json()["data"]["n"].as_i64().unwrap())
                .collect();
            (seen.len() == EVENTS).then_some(seen)
        },
    )
    .await;
    assert_eq!(delivered, (0..EVENTS as i64).collect());

    // And the log agrees: once nothing is pending, every acknowledged event has a succeeded delivery.
    eventually(
        "no delivery to be pending",
        Duration::from_secs(10),
        || async {
            let url = format!("{}/v1/deliveries?status=pending", server.base);
            let pending = send(&client, reqwest::Method::GET, url, &key, None).await;
            pending["data"].as_array().unwrap().is_empty().then_some(())
        },
    )
    .await;
    let mut succeeded = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/deliveries?status=succeeded&limit=200", server.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = send(&client, reqwest::Method::GET, url, &key, None).await;
        for d in page["data"].as_array().unwrap() {
            succeeded.insert(d["event_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        succeeded, acknowledged,
        "every acknowledged event has a succeeded delivery"
    );
}

on_both_backends!(every_acknowledged_event_is_delivered_after_a_kill_9_and_restart);
