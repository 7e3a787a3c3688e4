//! A rate limit holds across nodes (issue 18, acceptance 3): three nodes on one PostgreSQL
//! deliver 500 events to a webhook limited to 50/s at no more than 55 in any second, each with
//! one attempt, while another webhook's publish→receipt p99 stays what it is without them.

use crate::common;
use crate::flow::busiest_second;

use common::{ADMIN, Backend, ServerProcess, TestEnv, TestReceiver, eventually};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LIMITED: usize = 500;
/// Events to the other webhook in each phase, and how far apart.
const OTHERS: usize = 100;
const PACE: Duration = Duration::from_millis(40);

struct Nodes {
    nodes: Vec<ServerProcess>,
    _env: TestEnv,
    client: reqwest::Client,
    key: String,
}

impl Nodes {
    async fn start() -> Self {
        herald::install_tls_provider();
        let env = TestEnv::new(Backend::Postgres).await;
        let mut nodes = Vec::new();
        for name in ["node-a", "node-b", "node-c"] {
            let config = "[delivery]\nworkers = 16\n";
            nodes.push(ServerProcess::start(&env, name, config).await);
        }
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
        Self {
            nodes,
            _env: env,
            client,
            key: account["api_key"].as_str().unwrap().to_owned(),
        }
    }

    async fn post(&self, node: usize, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.nodes[node % 3].base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Publishes `OTHERS` events to the other webhook, `PACE` apart, round the nodes; returns
    /// when each was sent, by its number (from `first`).
    async fn publish_others(&self, first: usize) -> HashMap<usize, Instant> {
        let mut sent = HashMap::new();
        let mut next = Instant::now();
        for n in first..first + OTHERS {
            tokio::time::sleep_until(next.into()).await; // the pace of the load, not a wait
            next += PACE;
            sent.insert(n, Instant::now());
            self.post(
                n,
                "/v1/events",
                json!({ "type": "stt.completed", "data": { "n": n } }),
            )
            .await;
        }
        sent
    }
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// Publish→receipt latencies of the events `sent`, as `other` received them.
async fn latencies(other: &TestReceiver, sent: &HashMap<usize, Instant>) -> Vec<Duration> {
    let got = eventually(
        "the other webhook's events",
        Duration::from_secs(20),
        || async {
            let got: HashMap<usize, Instant> = other
                .received()
                .iter()
                .map(|r| (r.json()["data"]["n"].as_u64().unwrap() as usize, r.at))
                .collect();
            sent.keys().all(|n| got.contains_key(n)).then_some(got)
        },
    )
    .await;
    sent.iter().map(|(n, at)| got[n] - *at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_nodes_without_slowing_another_webhook() {
    let nodes = Nodes::start().await;
    let (limited, other) = (TestReceiver::start().await, TestReceiver::start().await);
    nodes
        .post(
            0,
            "/v1/webhooks",
            json!({ "url": limited.url("/"), "events": ["tts.*"],
                    "rate_limit": { "per_second": 50, "burst": 5 } }),
        )
        .await;
    nodes
        .post(
            1,
            "/v1/webhooks",
            json!({ "url": other.url("/"), "events": ["stt.*"] }),
        )
        .await;
    // The other webhook alone (after a warm-up), then beside the limited one's 500.
    nodes.publish_others(10_000).await;
    let alone = nodes.publish_others(0).await;
    let started = Instant::now();
    let batch: Vec<Value> = (0..LIMITED)
        .map(|i| json!({ "type": "tts.completed", "data": { "i": i } }))
        .collect();
    for (i, chunk) in batch.chunks(100).enumerate() {
        nodes
            .post(i, "/v1/events/batch", json!({ "events": chunk }))
            .await;
    }
    let beside = nodes.publish_others(OTHERS).await;
    let got = limited
        .wait_for(LIMITED, None, Duration::from_secs(30))
        .await;
    let took = got.iter().map(|r| r.at).max().unwrap() - started;
    let busiest = busiest_second(&got);
    let (a, b) = (
        p99(latencies(&other, &alone).await),
        p99(latencies(&other, &beside).await),
    );
    println!(
        "500 at 50/s on three nodes: {took:?}, at most {busiest} in a second; \
         the other webhook's p99 {a:?} alone, {b:?} beside"
    );
    assert!(
        busiest <= 55,
        "{busiest} deliveries arrived within one second"
    );
    assert!(
        took >= Duration::from_millis(9_000),
        "500 at 50/s took {took:?}"
    );
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), LIMITED, "each delivery arrived once");
    assert!(got.iter().all(|r| r.header("herald-attempt") == "1"));
    assert!(
        b <= a.mul_f64(1.2) + Duration::from_millis(5),
        "the rate-limited webhook slowed the other: p99 {b:?} against {a:?}"
    );
}
