//! Connection floods: connections that never send a byte, and connections that send their
//! request head a line at a time (slowloris), leave the API answering and deliveries flowing;
//! the server closes them after its timeouts and never holds more than its cap.

use crate::common;

use common::{ADMIN, Backend, TestApp, TestEnv, TestReceiver, eventually};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Opens `n` connections that send nothing; each task returns once the server closed it, with
/// how long it stayed open.
async fn idle_connections(addr: &str, n: usize, tasks: &mut JoinSet<Duration>) {
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await.expect("connect");
        tasks.spawn(async move {
            let opened = Instant::now();
            let mut stream = stream;
            let mut buf = [0u8; 256];
            // Read until the server closes (0) or resets the connection.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            opened.elapsed()
        });
    }
}

/// Opens `n` connections that send a request head one header line every `every`, never
/// finishing it; each task returns once the server closed it, with how long it stayed open.
async fn slowloris_connections(
    addr: &str,
    n: usize,
    every: Duration,
    tasks: &mut JoinSet<Duration>,
) {
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await.expect("connect");
        tasks.spawn(async move {
            let opened = Instant::now();
            let (mut read, mut write) = stream.into_split();
            let writer = async move {
                if write
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                for i in 0.. {
                    tokio::time::sleep(every).await;
                    if write
                        .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            };
            let closed = async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::select! {
                () = writer => {}
                () = closed => {}
            }
            opened.elapsed()
        });
    }
}

/// A client that opens a new connection for every request, as a newcomer to the flood would.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `/healthz` on a new connection answers 200 within a second, five times over.
async fn health_answers_promptly(base: &str) {
    let client = fresh_client();
    for _ in 0..5 {
        let started = Instant::now();
        let status = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("/healthz answers during the flood")
            .status();
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
}

/// Publishes one event to a webhook on `receiver` and checks it arrives within two seconds.
async fn an_event_is_delivered_promptly(base: &str, receiver: &TestReceiver) {
    let client = fresh_client();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Value| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let account: Value = call(
        reqwest::Method::POST,
        "/v1/accounts",
        ADMIN,
        json!({"name": "Acme"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = account["api_key"].as_str().unwrap();
    let hook = call(
        reqwest::Method::POST,
        "/v1/webhooks",
        key,
        json!({ "url": receiver.url("/flood"), "events": ["*"] }),
    )
    .await
    .unwrap();
    assert_eq!(hook.status(), 201);
    let published = Instant::now();
    let answer = call(
        reqwest::Method::POST,
        "/v1/events",
        ADMIN,
        json!({ "account": account["id"], "type": "tts.completed", "data": {"during": "flood"} }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 202);
    receiver
        .wait_for(1, Some("/flood"), Duration::from_secs(2))
        .await;
    assert!(published.elapsed() < Duration::from_secs(2));
}

/// Waits for every flood connection to be closed by the server; returns how long each stayed.
async fn all_closed(mut tasks: JoinSet<Duration>, within: Duration) -> Vec<Duration> {
    let mut lived = Vec::new();
    tokio::time::timeout(within, async {
        while let Some(t) = tasks.join_next().await {
            lived.push(t.unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} flood connections were still open after {within:?}",
            tasks.len()
        )
    });
    lived
}

const CAP: usize = 100;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

async fn a_connection_flood_leaves_the_api_and_delivery_working(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.api.max_connections = CAP;
        s.api.header_timeout.0 = HEADER_TIMEOUT;
    })
    .await;
    let receiver = TestReceiver::start().await;
    let addr = app.addr.to_string();
    let base = app.url("");
    let mut flood = JoinSet::new();
    // Ten times the cap of silent connections, then slowloris ones: the cap is exhausted many
    // times over.
    idle_connections(&addr, 10 * CAP, &mut flood).await;
    slowloris_connections(&addr, 3 * CAP, Duration::from_millis(200), &mut flood).await;

    health_answers_promptly(&base).await;
    an_event_is_delivered_promptly(&base, &receiver).await;

    // Every flood connection is closed by the server: most at once, to make room for newer
    // ones, the last `CAP` by the header timeout (the slowloris ones never finish their head).
    let lived = all_closed(flood, HEADER_TIMEOUT + Duration::from_secs(5)).await;
    assert_eq!(lived.len(), 13 * CAP);
    let evicted_at_once = lived.iter().filter(|t| **t < HEADER_TIMEOUT).count();
    assert!(
        evicted_at_once >= 12 * CAP - CAP / 10,
        "only {evicted_at_once} of {} connections made way for newer ones before the timeout",
        lived.len()
    );
    assert!(
        lived
            .iter()
            .all(|t| *t < HEADER_TIMEOUT + Duration::from_secs(2)),
        "a connection outlived the header timeout: {:?}",
        lived.iter().max()
    );
    // And the server answers as before.
    health_answers_promptly(&base).await;
}

on_both_backends!(a_connection_flood_leaves_the_api_and_delivery_working);

/// The real binary under a low open-file limit it cannot raise (`prlimit`): a flood of far more
/// connections than it has descriptors leaves it answering and delivering, and it says in its
/// log what it runs with.
#[tokio::test]
async fn the_binary_fits_its_connections_to_the_open_file_limit() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let receiver = TestReceiver::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = env.dir.path().join("herald.log");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(env.dir.path())
        .args(["--database-url", &env.database_url])
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .env("HERALD_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit and the herald binary start");
    let base = format!("http://127.0.0.1:{port}");
    let client = fresh_client();
    eventually("the server to answer", Duration::from_secs(30), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let limits = text
        .lines()
        .find(|l| l.contains("API connection limits"))
        .unwrap_or_else(|| panic!("no limits line in the log:\n{text}"));
    assert!(limits.contains("open_files_limit=1024"), "{limits}");

    let mut flood = JoinSet::new();
    idle_connections(&format!("127.0.0.1:{port}"), 3000, &mut flood).await;
    health_answers_promptly(&base).await;
    an_event_is_delivered_promptly(&base, &receiver).await;
    drop(flood);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    for trouble in ["Too many open files", "unable to open database file"] {
        assert!(!text.contains(trouble), "{trouble} in the log:\n{text}");
    }
}
