//! `herald-bench receiver`: the webhook receiver, run as its own process so that it never shares
//! a runtime with the server under test or the load generator.
//!
//! `POST /hook/{name}/…` is a delivery. The first path segment after `/hook/` names a stream that
//! is counted on its own, and picks the answer: `fail…` answers 500, `hang…` never answers (the
//! sender's timeout ends it), anything else answers 200. A body whose `data.t` holds the publish
//! time (Unix µs) gives a publish→receipt latency. `GET /_stats` returns the counts,
//! `POST /_reset` clears them.

use crate::stats::{self, Series};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one stream received.
struct Stream {
    count: u64,
    retries: u64,
    first_us: u64,
    last_us: u64,
    latency: hdrhistogram::Histogram<u64>,
    series: Series,
    /// The slowest publish→receipt latency (µs) per bin.
    slowest: BTreeMap<u64, u64>,
}

impl Stream {
    fn new() -> Self {
        Self {
            count: 0,
            retries: 0,
            first_us: 0,
            last_us: 0,
            latency: stats::histogram(),
            series: Series::default(),
            slowest: BTreeMap::new(),
        }
    }
}

/// The `/_stats` answer for one stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamStats {
    pub count: u64,
    /// Requests whose attempt header said they were not a first attempt.
    pub retries: u64,
    pub first_us: u64,
    pub last_us: u64,
    /// Publish→receipt latency in µs as (value, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// Receipts per bin: (Unix ms / BIN_MS, count).
    pub series: Vec<(u64, u64)>,
    /// The slowest publish→receipt latency in µs per bin: (Unix ms / BIN_MS, µs).
    #[serde(default)]
    pub slowest: Vec<(u64, u64)>,
}

type Streams = Arc<Mutex<HashMap<String, Stream>>>;

#[derive(Deserialize)]
struct Envelope {
    data: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    t: Option<u64>,
}

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let streams: Streams = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let streams = streams.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(streams.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn handle(
    streams: Streams,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/_stats") => {
            let all = streams.lock().expect("stats lock");
            let out: HashMap<&str, StreamStats> = all
                .iter()
                .map(|(k, s)| {
                    let stats = StreamStats {
                        count: s.count,
                        retries: s.retries,
                        first_us: s.first_us,
                        last_us: s.last_us,
                        latency: stats::to_pairs(&s.latency),
                        series: s.series.0.iter().map(|(k, v)| (*k, *v)).collect(),
                        slowest: s.slowest.iter().map(|(k, v)| (*k, *v)).collect(),
                    };
                    (k.as_str(), stats)
                })
                .collect();
            let body = serde_json::to_vec(&out).expect("stats serialize");
            Ok(reply(StatusCode::OK, body))
        }
        (Method::POST, "/_reset") => {
            streams.lock().expect("stats lock").clear();
            Ok(reply(StatusCode::OK, ""))
        }
        (Method::POST, p) if p.starts_with("/hook/") => {
            let name = p["/hook/".len()..]
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let retry = req
                .headers()
                .get("herald-attempt")
                .is_some_and(|v| v.as_bytes() != b"1");
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "")),
            };
            let at = stats::now_us();
            let sent = serde_json::from_slice::<Envelope>(&body)
                .ok()
                .and_then(|e| e.data?.t);
            {
                let mut all = streams.lock().expect("stats lock");
                let s = all.entry(name.clone()).or_insert_with(Stream::new);
                s.count += 1;
                s.retries += u64::from(retry);
                if s.first_us == 0 {
                    s.first_us = at;
                }
                s.last_us = at;
                s.series.add(at);
                if let Some(t) = sent {
                    let took = at.saturating_sub(t);
                    stats::record(&mut s.latency, took);
                    let slowest = s.slowest.entry(stats::bin_of(at)).or_default();
                    *slowest = (*slowest).max(took);
                }
            }
            if name.starts_with("hang") {
                // Bounded, so a sender that never hangs up cannot pin this task forever.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if name.starts_with("fail") {
                return Ok(reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failing on purpose",
                ));
            }
            Ok(reply(StatusCode::OK, "ok"))
        }
        _ => Ok(reply(StatusCode::NOT_FOUND, "")),
    }
}
