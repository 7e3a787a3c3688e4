//! Hostile receivers: endpoints that hang, trickle, flood, reset, redirect or speak nonsense.
//! With a 2 s webhook timeout each attempt is recorded within 3 s, keeps at most the capture
//! limit of the answer, leaves the server's memory flat, and never holds up deliveries to a
//! healthy webhook of another account.

use crate::common;

use common::{Backend, TestAccount, TestApp, TestReceiver, eventually};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(2);
/// An attempt must be on record this soon after the receiver took the connection.
const RECORDED_WITHIN: Duration = Duration::from_secs(3);
const CAPTURE: usize = 4096;
/// A healthy delivery published while a hostile attempt is in flight must arrive this soon.
const HEALTHY_WITHIN: Duration = Duration::from_secs(1);
const GIB: u64 = 1 << 30;

/// A raw TCP receiver on 127.0.0.1:0 that treats every connection with `behaviour`.
struct Hostile {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Instant>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start<F, Fut>(behaviour: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                seen.lock().unwrap().push(Instant::now());
                tokio::spawn(behaviour(stream));
            }
        });
        Self {
            addr,
            accepted,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    async fn first_connection(&self) -> Instant {
        eventually(
            "the hostile receiver to be connected to",
            Duration::from_secs(10),
            || async { self.accepted.lock().unwrap().first().copied() },
        )
        .await
    }
}

/// Reads until the end of the request head (and whatever body came with it); the sender
/// writes small requests in one go, so this is enough to know the POST arrived.
async fn read_request(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A dev server with one healthy webhook (account "Healthy") and one hostile webhook (account
/// "Hostile": one attempt, 2 s timeout).
struct Scene {
    app: TestApp,
    healthy: TestReceiver,
    healthy_account: TestAccount,
    hostile_account: TestAccount,
}

async fn scene(backend: Backend, hostile_url: &str) -> Scene {
    let app = TestApp::spawn(backend).await;
    let healthy = TestReceiver::start().await;
    let healthy_account = app.create_account("Healthy").await;
    app.create_webhook(
        &healthy_account,
        json!({ "url": healthy.url("/healthy"), "events": ["*"] }),
    )
    .await;
    let hostile_account = app.create_account("Hostile").await;
    app.create_webhook(
        &hostile_account,
        json!({
            "url": hostile_url,
            "events": ["*"],
            "retry": { "schedule": [], "timeout": "2s" },
        }),
    )
    .await;
    Scene {
        app,
        healthy,
        healthy_account,
        hostile_account,
    }
}

/// Publishes one event to the hostile webhook and, while its attempt is in flight, keeps
/// publishing to the healthy one, checking each arrives within `HEALTHY_WITHIN`. Returns the
/// hostile attempt once recorded, after checking it came within `RECORDED_WITHIN` of the
/// connection, lasted at most that long, and kept at most `CAPTURE` bytes of the answer.
async fn hostile_attempt(s: &Scene, hostile: &Hostile) -> Value {
    let event = s
        .app
        .publish(&s.hostile_account, "tts.completed", json!({ "n": 0 }))
        .await;
    let event_id = event["id"].as_str().unwrap();
    let connected = hostile.first_connection().await;
    let mut healthy_sent = 0;
    let attempt = loop {
        healthy_sent += 1;
        let published = Instant::now();
        s.app
            .publish(
                &s.healthy_account,
                "tts.completed",
                json!({ "n": healthy_sent }),
            )
            .await;
        let got = s
            .healthy
            .wait_for(healthy_sent, None, Duration::from_secs(10))
            .await;
        let lag = got[healthy_sent - 1]
            .at
            .saturating_duration_since(published);
        assert!(
            lag < HEALTHY_WITHIN,
            "healthy delivery {healthy_sent} took {lag:?} while the hostile attempt was in flight"
        );
        let deliveries = s.app.deliveries_of(&s.hostile_account, event_id).await;
        let id = deliveries[0]["id"].as_str().unwrap();
        let detail = s
            .app
            .get(&format!("/v1/deliveries/{id}"), &s.hostile_account.key)
            .await;
        if let Some(a) = detail["attempts"].as_array().and_then(|a| a.first()) {
            break a.clone();
        }
        assert!(
            connected.elapsed() < RECORDED_WITHIN,
            "no attempt recorded {:?} after the hostile receiver was connected",
            connected.elapsed()
        );
    };
    let recorded_after = connected.elapsed();
    assert!(
        recorded_after <= RECORDED_WITHIN + Duration::from_millis(200),
        "attempt recorded {recorded_after:?} after the connection"
    );
    let duration = Duration::from_millis(attempt["duration_ms"].as_u64().unwrap());
    assert!(
        duration <= RECORDED_WITHIN,
        "attempt lasted {duration:?}: {attempt}"
    );
    let captured = attempt["response_body"].as_str().map_or(0, str::len);
    assert!(
        captured <= CAPTURE,
        "kept {captured} bytes of the answer, more than {CAPTURE}"
    );
    assert!(healthy_sent >= 1);
    attempt
}

async fn a_receiver_that_never_answers_times_out_without_holding_up_others(backend: Backend) {
    let hostile = Hostile::start(|mut stream| async move {
        read_request(&mut stream).await;
        // Keep the connection open, silent, until the sender gives up.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let attempt = hostile_attempt(&s, &hostile).await;
    assert_eq!(attempt["error_kind"], "timeout", "{attempt}");
    assert!(attempt["duration_ms"].as_u64().unwrap() >= TIMEOUT.as_millis() as u64 - 50);
}

async fn a_response_head_trickled_a_byte_a_second_times_out(backend: Backend) {
    let hostile = Hostile::start(|mut stream| async move {
        read_request(&mut stream).await;
        for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let attempt = hostile_attempt(&s, &hostile).await;
    assert_eq!(attempt["error_kind"], "timeout", "{attempt}");
}

/// The timeout covers reading the body too, not just the status line.
async fn a_response_body_trickled_a_byte_a_second_times_out(backend: Backend) {
    let hostile = Hostile::start(|mut stream| async move {
        read_request(&mut stream).await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        for _ in 0..100 {
            if stream.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let attempt = hostile_attempt(&s, &hostile).await;
    assert_eq!(attempt["error_kind"], "timeout", "{attempt}");
}

/// A 200 with a 1 GiB body (bytes that are not UTF-8, streamed from one small buffer): the
/// sender keeps the first 4096 bytes, hangs up, and the process does not grow.
async fn a_gigabyte_answer_is_cut_at_the_capture_limit_and_memory_stays_flat(backend: Backend) {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let hostile = Hostile::start(move |mut stream| {
        let counter = counter.clone();
        async move {
            read_request(&mut stream).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {GIB}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![0xffu8; 64 * 1024];
            let mut sent = 0u64;
            while sent < GIB {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len() as u64;
                counter.store(sent, Ordering::Relaxed);
            }
        }
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let before = vm_rss_kib();
    let attempt = hostile_attempt(&s, &hostile).await;
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    assert_eq!(attempt["status_code"], 200, "{attempt}");
    assert_eq!(attempt["error_kind"], Value::Null, "{attempt}");
    let body = attempt["response_body"].as_str().expect("a captured body");
    assert!(!body.is_empty() && body.len() <= CAPTURE, "{}", body.len());
    assert!(
        grown_mib < 100,
        "resident memory grew by {grown_mib} MiB during the 1 GiB answer"
    );
    let sent = written.load(Ordering::Relaxed);
    assert!(
        sent < GIB,
        "the sender read the whole gigabyte instead of hanging up"
    );
}

async fn a_connection_reset_is_recorded_as_a_connection_error(backend: Backend) {
    let hostile = Hostile::start(|mut stream| async move {
        read_request(&mut stream).await;
        // SO_LINGER 0: closing sends RST instead of FIN.
        stream.set_zero_linger().unwrap();
        drop(stream);
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let attempt = hostile_attempt(&s, &hostile).await;
    assert_eq!(attempt["error_kind"], "connect", "{attempt}");
    assert_eq!(attempt["status_code"], Value::Null);
}

/// Redirects are not followed, wherever they point: the attempt is that 3xx.
async fn a_redirect_is_recorded_as_its_status_and_never_followed(backend: Backend) {
    let elsewhere = TestReceiver::start().await;
    for target in [
        "http://169.254.169.254/latest/meta-data".to_owned(),
        elsewhere.url("/elsewhere"),
    ] {
        let location = target.clone();
        let hostile = Hostile::start(move |mut stream| {
            let location = location.clone();
            async move {
                read_request(&mut stream).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 5\r\n\r\nmoved"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        })
        .await;
        let s = scene(backend, &hostile.url()).await;
        let attempt = hostile_attempt(&s, &hostile).await;
        assert_eq!(attempt["status_code"], 302, "{target}: {attempt}");
        assert_eq!(attempt["error_kind"], Value::Null, "{target}: {attempt}");
        assert_eq!(attempt["response_body"], "moved");
    }
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}

async fn an_answer_that_is_not_http_is_recorded_as_an_error(backend: Backend) {
    let hostile = Hostile::start(|mut stream| async move {
        read_request(&mut stream).await;
        let _ = stream
            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 not http at all\r\n\r\n")
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
    let s = scene(backend, &hostile.url()).await;
    let attempt = hostile_attempt(&s, &hostile).await;
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    assert_eq!(attempt["error_kind"], "connect", "{attempt}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{attempt}");
}

on_both_backends!(
    a_receiver_that_never_answers_times_out_without_holding_up_others,
    a_response_head_trickled_a_byte_a_second_times_out,
    a_response_body_trickled_a_byte_a_second_times_out,
    a_gigabyte_answer_is_cut_at_the_capture_limit_and_memory_stays_flat,
    a_connection_reset_is_recorded_as_a_connection_error,
    a_redirect_is_recorded_as_its_status_and_never_followed,
    an_answer_that_is_not_http_is_recorded_as_an_error,
);
