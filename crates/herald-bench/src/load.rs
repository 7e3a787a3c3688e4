//! The load generator: keep-alive HTTP/1.1 connections, each sending one request at a time.
//!
//! `closed_loop` keeps C connections busy (as fast as the target answers); `open_loop` sends at
//! a fixed rate, timing each request from when it was due, not from when a connection was free,
//! so a slow target cannot hide its queueing (no coordinated omission).

use crate::stats::{self, Latency, Series};
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// One keep-alive connection. It reconnects after an error.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

/// A request to send: method, path, optional bearer token, JSON body.
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    pub path: Arc<str>,
    pub token: Option<Arc<str>>,
    pub body: Bytes,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            sender: None,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut http1::SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just connected"))
    }

    /// Sends `req` and returns the status and body.
    pub async fn send(&mut self, req: &Req) -> anyhow::Result<(u16, Bytes)> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&*req.path)
            .header(hyper::header::HOST, self.host.as_str());
        if !req.body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &req.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = builder.body(Full::new(req.body.clone()))?;
        let result = async {
            let sender = self.connect().await?;
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// Sends and requires a 2xx; returns the body as JSON.
    pub async fn json(&mut self, req: &Req) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.send(req).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{} {} answered {status}: {}",
            req.method,
            req.path,
            String::from_utf8_lossy(&body)
        );
        Ok(if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)?
        })
    }
}

/// When a closed loop stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

/// What a run of requests measured.
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub first_us: u64,
    pub latency: Histogram<u64>,
    pub series: Series,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&self.latency)
    }
}

/// Per-task tallies, merged at the end.
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    series: Series,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            latency: stats::histogram(),
            series: Series::default(),
        }
    }

    fn note(&mut self, result: anyhow::Result<(u16, Bytes)>, due_us: u64) {
        let done = stats::now_us();
        match result {
            Ok((status, _)) if (200..300).contains(&status) => {
                self.ok += 1;
                stats::record(&mut self.latency, done.saturating_sub(due_us));
                self.series.add(done);
            }
            Ok((status, body)) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| {
                    format!("status {status}: {}", String::from_utf8_lossy(&body))
                });
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

fn merge(tallies: Vec<Tally>, started: Instant, first_us: u64) -> LoadResult {
    let mut out = LoadResult {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: started.elapsed(),
        first_us,
        latency: stats::histogram(),
        series: Series::default(),
    };
    for t in tallies {
        out.ok += t.ok;
        out.errors += t.errors;
        out.first_error = out.first_error.or(t.first_error);
        out.latency.add(&t.latency).expect("same bounds");
        out.series.merge(&t.series);
    }
    out
}

/// `make(seq, now_us)` builds request number `seq`; `now_us` is its send time.
pub type MakeReq = Arc<dyn Fn(u64, u64) -> Req + Send + Sync>;

/// Keeps `conns` connections busy until `stop`.
pub async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    stop: Stop,
    make: MakeReq,
    progress: ProgressBar,
) -> LoadResult {
    let started = Instant::now();
    let first_us = stats::now_us();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (next, make, progress) = (next.clone(), make.clone(), progress.clone());
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut tally = Tally::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let more = match stop {
                    Stop::After(d) => started.elapsed() < d,
                    Stop::Count(n) => seq < n,
                };
                if !more {
                    break;
                }
                let at = stats::now_us();
                let req = make(seq, at);
                let result = conn.send(&req).await;
                tally.note(result, at);
                progress.inc(1);
            }
            tally
        });
    }
    let tallies = tasks.join_all().await;
    merge(tallies, started, first_us)
}

/// Sends `rate` requests per second for `duration` over up to `conns` connections.
pub async fn open_loop(
    addr: SocketAddr,
    conns: usize,
    rate: f64,
    duration: Duration,
    make: MakeReq,
    progress: ProgressBar,
) -> LoadResult {
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, u64)>(conns.max(1) * 4);
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let first_us = stats::now_us();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (rx, make, progress) = (rx.clone(), make.clone(), progress.clone());
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut tally = Tally::new();
            loop {
                let Some((seq, due_us)) = rx.lock().await.recv().await else {
                    break;
                };
                let req = make(seq, due_us);
                let result = conn.send(&req).await;
                tally.note(result, due_us);
                progress.inc(1);
            }
            tally
        });
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    // The pacer is a thread of its own that sleeps until each request is due (the thread's
    // sleep ends tens of microseconds late): the runtime's timer counts in whole milliseconds
    // (a sleep ends up to 2 ms late), which would add its own lateness to every request's
    // latency.
    let pacer = std::thread::spawn(move || {
        for seq in 0..total {
            let offset = Duration::from_secs_f64(seq as f64 / rate);
            std::thread::sleep(offset.saturating_sub(started.elapsed()));
            let due_us = first_us + offset.as_micros() as u64;
            if tx.blocking_send((seq, due_us)).is_err() {
                break;
            }
        }
    });
    let tallies = tasks.join_all().await;
    if let Err(panicked) = pacer.join() {
        std::panic::resume_unwind(panicked);
    }
    merge(tallies, started, first_us)
}
