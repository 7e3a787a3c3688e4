//! Several `herald serve` nodes on one PostgreSQL: work is shared, never done twice at once,
//! and survives a node's `kill -9`.

use crate::common;

use common::{ADMIN, Backend, ServerProcess, TestEnv, TestReceiver, eventually};
use herald::dispatch::RESULTS_PER_WORKER;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const EVENTS: usize = 5000;
const WEBHOOKS: usize = 5;
const WORKERS: usize = 32;

fn config() -> String {
    format!("[delivery]\nlease = \"3s\"\nworkers = {WORKERS}\n")
}

/// Fields drop in order: the nodes stop before their database is dropped.
struct Cluster {
    nodes: Vec<ServerProcess>,
    env: TestEnv,
    receiver: TestReceiver,
    account: String,
    client: reqwest::Client,
}

async fn cluster() -> Cluster {
    herald::install_tls_provider();
    let env = TestEnv::new(Backend::Postgres).await;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        nodes.push(ServerProcess::start(&env, name, &config()).await);
    }
    let receiver = TestReceiver::start().await;
    let client = reqwest::Client::new();
    let account: Value = client
        .post(format!("{}/v1/accounts", nodes[0].base))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for w in 0..WEBHOOKS {
        let resp = client
            .post(format!("{}/v1/webhooks", nodes[w % 3].base))
            .bearer_auth(account["api_key"].as_str().unwrap())
            .json(
                &json!({ "url": receiver.url(&format!("/w{w}")), "events": ["*"],
                           "retry": { "schedule": vec!["200ms"; 20], "timeout": "2s" } }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    Cluster {
        nodes,
        env,
        receiver,
        account: account["id"].as_str().unwrap().to_owned(),
        client,
    }
}

impl Cluster {
    fn publisher(&self) -> Publisher {
        Publisher {
            client: self.client.clone(),
            account: self.account.clone(),
        }
    }

    /// Waits until every delivery has succeeded, as the database records it.
    async fn wait_all_succeeded(&self) {
        let pool = sqlx::PgPool::connect(&self.env.database_url).await.unwrap();
        eventually(
            "all 25,000 deliveries to succeed",
            Duration::from_secs(240),
            || async {
                let (total, done): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'succeeded') FROM deliveries",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (total == (EVENTS * WEBHOOKS) as i64 && done == total).then_some(())
            },
        )
        .await;
    }

    async fn attempts_by_node(&self) -> HashMap<String, i64> {
        let pool = sqlx::PgPool::connect(&self.env.database_url).await.unwrap();
        let rows: Vec<(Option<String>, i64)> =
            sqlx::query_as("SELECT node, COUNT(*) FROM attempts GROUP BY node")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(n, c)| (n.unwrap_or_default(), c))
            .collect()
    }

    /// Delivery ids the receiver got more than once.
    fn repeats(&self) -> usize {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in self.receiver.received() {
            *seen.entry(r.header("webhook-id").to_owned()).or_default() += 1;
        }
        seen.values().filter(|n| **n > 1).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_never_attempt_a_delivery_twice_at_once() {
    let c = cluster().await;
    let bases: Vec<String> = c.nodes.iter().map(|n| n.base.clone()).collect();
    c.publisher().publish_all(&bases).await;
    c.wait_all_succeeded().await;
    let by_node = c.attempts_by_node().await;
    println!("attempts by node: {by_node:?}");
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            by_node.get(node).copied().unwrap_or(0) > 0,
            "{node} made no attempt: {by_node:?}"
        );
    }
    assert_eq!(
        by_node.values().sum::<i64>(),
        (EVENTS * WEBHOOKS) as i64,
        "one attempt per delivery"
    );
    assert!(
        c.receiver.overlapping().is_empty(),
        "a delivery was in flight twice at once: {:?}",
        c.receiver.overlapping()
    );
    assert_eq!(c.repeats(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_halfway_loses_nothing_and_repeats_only_its_attempts_in_flight() {
    let mut c = cluster().await;
    let bases: Vec<String> = c.nodes.iter().map(|n| n.base.clone()).collect();
    // Publish through the nodes that survive; node-b only dispatches.
    let survivors = vec![bases[0].clone(), bases[2].clone()];
    let publisher = c.publisher();
    let publishing = tokio::spawn(async move { publisher.publish_all(&survivors).await });
    let half = EVENTS * WEBHOOKS / 2;
    eventually(
        "half of the deliveries to arrive",
        Duration::from_secs(120),
        || async { (c.receiver.count() >= half).then_some(()) },
    )
    .await;
    c.nodes[1].kill_9();
    println!(
        "killed node-b after {} requests at the receiver",
        c.receiver.count()
    );
    publishing.await.unwrap();
    c.wait_all_succeeded().await;
    let by_node = c.attempts_by_node().await;
    println!(
        "attempts by node: {by_node:?}; repeated deliveries: {}",
        c.repeats()
    );
    assert!(
        by_node.get("node-b").copied().unwrap_or(0) > 0,
        "node-b worked before it died"
    );
    assert!(c.nodes[0].is_running() && c.nodes[2].is_running());
    assert!(
        c.repeats() <= WORKERS + 2 * RESULTS_PER_WORKER * WORKERS,
        "{} repeats; node-b had at most {WORKERS} attempts in flight, {RESULTS_PER_WORKER} × \
         {WORKERS} results waiting to be written and as many being written",
        c.repeats()
    );
    assert!(
        c.receiver.overlapping().is_empty(),
        "a delivery was in flight twice at once: {:?}",
        c.receiver.overlapping()
    );
}

/// Publishes `EVENTS` events round-robin over some nodes, 128 at a time; movable into a task.
struct Publisher {
    client: reqwest::Client,
    account: String,
}

impl Publisher {
    async fn publish_all(&self, nodes: &[String]) {
        for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(16 * 8) {
            let mut batch = tokio::task::JoinSet::new();
            for n in chunk.iter().copied() {
                let (client, account) = (self.client.clone(), self.account.clone());
                let base = nodes[n % nodes.len()].clone();
                batch.spawn(async move {
                    let body =
                        json!({ "account": account, "type": "tts.completed", "data": { "n": n } });
                    let resp = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(ADMIN)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 202);
                });
            }
            while let Some(done) = batch.join_next().await {
                done.unwrap();
            }
        }
    }
}

/// A node with `delivery.enabled = false` serves the API and stores deliveries but sends none:
/// an event published to it reaches the receiver through the other node, whose name is on the
/// attempt (had the first node delivered, publishing would have handed the delivery to it).
#[tokio::test]
async fn a_node_with_delivery_off_stores_deliveries_that_another_node_sends() {
    let env = TestEnv::new(Backend::Postgres).await;
    let node = |name: &str, enabled: bool| {
        let mut s = env.settings();
        s.node_id = Some(name.to_owned());
        s.delivery.enabled = enabled;
        s
    };
    let quiet = common::TestApp::start(node("quiet", false)).await;
    let receiver = TestReceiver::start().await;
    let account = quiet.create_account("Acme").await;
    quiet
        .create_webhook(
            &account,
            json!({ "url": receiver.url("/hook"), "events": ["tts.completed"] }),
        )
        .await;
    let published = quiet
        .publish(&account, "tts.completed", json!({ "n": 1 }))
        .await;
    let delivery = quiet.first_delivery(&account, &published).await;
    let _sender = common::TestApp::start(node("sender", true)).await;
    let done = quiet
        .wait_for_status(&account, &delivery, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(done["attempts"][0]["node"], "sender", "{done}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(receiver.count(), 1);
}
