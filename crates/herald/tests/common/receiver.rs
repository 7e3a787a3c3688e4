//! A receiver for deliveries: a real HTTP server on a loopback port that records each request
//! and answers as a test scripts it (status, delay, `Retry-After`, held until released).

use super::eventually;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    default: Option<Reply>,
    /// The answer to every first attempt (`herald-attempt: 1`), whatever else is scripted.
    first_attempts: Option<Reply>,
}

#[derive(Default)]
struct InFlightLog {
    by_id: HashMap<String, usize>,
    overlapping: Vec<String>,
}

/// Whether answers are held back (see [`TestReceiver::hold`]).
struct Gate(tokio::sync::watch::Sender<bool>);

impl Default for Gate {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    /// While closed, requests are recorded at once and answered only once it opens.
    held: Arc<Gate>,
    script: Arc<Mutex<Script>>,
    /// Requests being answered right now, per `webhook-id`, and every id seen twice at once.
    in_flight: Arc<Mutex<InFlightLog>>,
}

/// A real HTTP receiver on a random loopback port.
pub struct TestReceiver {
    pub addr: SocketAddr,
    state: ReceiverState,
    _task: tokio::task::JoinHandle<()>,
}

impl TestReceiver {
    /// Answers 200 to everything until scripted otherwise.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        herald::install_tls_provider();
        let state = ReceiverState::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Self {
            addr,
            state,
            _task: task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers with `replies` in order, then with the default.
    pub fn script(&self, replies: Vec<Reply>) {
        self.state.script.lock().unwrap().queue.extend(replies);
    }

    /// How requests are answered once the scripted ones are used up.
    pub fn set_default(&self, reply: Reply) {
        self.state.script.lock().unwrap().default = Some(reply);
    }

    /// Answers every delivery's first attempt with `reply`, and later ones as scripted.
    pub fn answer_first_attempts(&self, reply: Reply) {
        self.state.script.lock().unwrap().first_attempts = Some(reply);
    }

    /// Holds every answer from now on (requests are still recorded as they arrive) until
    /// [`Self::release`].
    pub fn hold(&self) {
        self.state.held.0.send_replace(true);
    }

    /// Answers the held requests, and later ones at once.
    pub fn release(&self) {
        self.state.held.0.send_replace(false);
    }

    /// Delivery ids that had two requests in flight at the same moment.
    pub fn overlapping(&self) -> Vec<String> {
        self.state.in_flight.lock().unwrap().overlapping.clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived (at `path`, if given).
    pub async fn wait_for(&self, n: usize, path: Option<&str>, timeout: Duration) -> Vec<Received> {
        eventually(
            &format!("{n} requests at the receiver"),
            timeout,
            || async {
                let got: Vec<Received> = self
                    .received()
                    .into_iter()
                    .filter(|r| path.is_none_or(|p| r.path == p))
                    .collect();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    {
        let mut f = state.in_flight.lock().unwrap();
        let n = f.by_id.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            f.overlapping.push(id.clone());
        }
    }
    // Counted down on drop, also when the sender gives up and the request is cancelled.
    let _done = InFlightGuard {
        state: state.clone(),
        id,
    };
    answer(&state, uri, headers, body).await
}

struct InFlightGuard {
    state: ReceiverState,
    id: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut f = self.state.in_flight.lock().unwrap();
        if let Some(n) = f.by_id.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                f.by_id.remove(&self.id);
            }
        }
    }
}

async fn answer(
    state: &ReceiverState,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let first_attempt = headers
        .get("herald-attempt")
        .is_some_and(|v| v.as_bytes() == b"1");
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = {
        let mut script = state.script.lock().unwrap();
        match &script.first_attempts {
            Some(reply) if first_attempt => reply.clone(),
            _ => script
                .queue
                .pop_front()
                .or_else(|| script.default.clone())
                .unwrap_or(Reply::status(200)),
        }
    };
    let _ = state.held.0.subscribe().wait_for(|held| !*held).await;
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        "receiver says hi",
    )
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}
