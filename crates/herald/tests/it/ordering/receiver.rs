//! A receiver that stands in for a customer's flaky endpoint: it fails about one request in seven
//! the first time it sees that delivery (then accepts it), answers after 0–20 ms at random, and
//! notes the order in which deliveries first arrive to be accepted, how many requests it had in
//! flight at once, and any two of one ordering key that were in flight together.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which part of a delivery's body names its ordering key (the job's id, or one for all).
pub type KeyOf = fn(&Value) -> String;

#[derive(Default)]
struct Log {
    /// Deliveries (`webhook-id`) seen at least once.
    seen: HashSet<String>,
    /// Accepted deliveries' bodies, in the order their first accepted request arrived.
    firsts: Vec<Value>,
    accepted: HashSet<String>,
    in_flight: usize,
    most_in_flight: usize,
    /// Requests in flight per ordering key.
    by_key: HashMap<String, usize>,
    /// Keys that had two requests in flight at once.
    overlapping: Vec<String>,
    failed: usize,
}

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Log>>,
    key_of: KeyOf,
}

pub struct FlakyReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    _task: tokio::task::JoinHandle<()>,
}

impl FlakyReceiver {
    pub async fn start(key_of: KeyOf) -> Self {
        herald::install_tls_provider();
        let shared = Shared {
            log: Arc::default(),
            key_of,
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            shared,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The bodies of the accepted deliveries, in the order their accepted request arrived.
    pub fn firsts(&self) -> Vec<Value> {
        self.shared.log.lock().unwrap().firsts.clone()
    }

    pub fn most_in_flight(&self) -> usize {
        self.shared.log.lock().unwrap().most_in_flight
    }

    pub fn overlapping(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().overlapping.clone()
    }

    pub fn failed(&self) -> usize {
        self.shared.log.lock().unwrap().failed
    }
}

/// Leaves the counts right when the request ends, however it ends.
struct InFlight {
    shared: Shared,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut log = self.shared.log.lock().unwrap();
        log.in_flight -= 1;
        if let Some(n) = log.by_key.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = (shared.key_of)(&envelope["data"]);
    let fail = rand::random::<u32>().is_multiple_of(7);
    let delay = rand::random::<u64>() % 21;
    let accept = {
        let mut log = shared.log.lock().unwrap();
        log.in_flight += 1;
        log.most_in_flight = log.most_in_flight.max(log.in_flight);
        let n = log.by_key.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            log.overlapping.push(key.clone());
        }
        let first_time = log.seen.insert(id.clone());
        let accept = !(first_time && fail);
        if accept && log.accepted.insert(id) {
            log.firsts.push(envelope["data"].clone());
        }
        if !accept {
            log.failed += 1;
        }
        accept
    };
    let _in_flight = InFlight {
        shared: shared.clone(),
        key,
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if accept {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}
