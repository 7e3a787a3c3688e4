//! SSRF: outside dev mode, webhook URLs that name an address that is not globally reachable
//! (the IANA special-purpose registries, and the IPv6 forms that carry such an IPv4 address) or
//! port 0 are refused when saved, a host name that resolves to one is refused at connect time
//! (recorded as `blocked`), and `delivery.allow_networks` lets the listed networks through both
//! checks. No test here sends traffic anywhere but to loopback: public and special-purpose
//! addresses are only registered, never delivered to.

use crate::common;

use axum::http::StatusCode;
use common::{Backend, TestAccount, TestApp, TestEnv};
use herald::domain::address::fixtures::refused;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A TCP listener on loopback that counts connections and closes each at once.
struct Target {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self {
            addr,
            connections,
            _task: task,
        }
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One attempt, a short timeout: each delivery ends after its first try.
fn one_try(url: &str) -> Value {
    json!({ "url": url, "events": ["*"], "retry": { "schedule": [], "timeout": "2s" } })
}

/// Publishes one event and returns the first attempt of each of its deliveries, once they
/// have all failed.
async fn failed_attempts(app: &TestApp, account: &TestAccount, expected: usize) -> Vec<Value> {
    let event = app
        .publish(account, "tts.completed", json!({ "n": 1 }))
        .await;
    let deliveries = app
        .deliveries_of(account, event["id"].as_str().unwrap())
        .await;
    assert_eq!(deliveries.len(), expected);
    let mut attempts = Vec::new();
    for d in deliveries {
        let done = app
            .wait_for_status(account, d["id"].as_str().unwrap(), "failed", WAIT)
            .await;
        attempts.push(done["attempts"][0].clone());
    }
    attempts
}

async fn without_dev_disguised_private_urls_are_refused_with_422(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.dev = false).await;
    let acme = app.create_account("Acme").await;
    for url in [
        "http://[::ffff:127.0.0.1]/",
        "https://0x7f000001/",
        "https://169.254.169.254/",
        "https://localhost/",
        "https://127.1/",
    ] {
        let (status, answer) = app
            .call("POST", "/v1/webhooks", Some(&acme.key), Some(one_try(url)))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url", "{url}: {answer}");
    }
    let list = app.get("/v1/webhooks", &acme.key).await;
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

/// Each address of the special-purpose list, shared with the unit tests of the policy.
fn special_purpose_addresses() -> Vec<IpAddr> {
    refused()
        .map(|(ip, _)| ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
        .collect()
}

/// `https://<ip>/h`, with an IPv6 address in brackets.
fn url_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}/h"),
        IpAddr::V6(v6) => format!("https://[{v6}]/h"),
    }
}

/// Registration only: nothing is published, so no attempt goes to any of these addresses.
async fn without_dev_every_special_purpose_address_and_port_0_are_refused_with_422(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |s| s.dev = false).await;
    let acme = app.create_account("Acme").await;
    let refused = special_purpose_addresses();
    assert!(refused.len() >= 40, "{} addresses", refused.len());
    let mut urls: Vec<String> = refused.into_iter().map(url_of).collect();
    urls.push("https://example.com:0/h".to_owned());
    for url in &urls {
        let (status, answer) = app
            .call("POST", "/v1/webhooks", Some(&acme.key), Some(one_try(url)))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url", "{url}: {answer}");
    }
    let (_, answer) = app
        .call(
            "POST",
            "/v1/webhooks",
            Some(&acme.key),
            Some(one_try("https://198.18.0.1/h")),
        )
        .await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("benchmarking"), "{message}");
    assert_eq!(app.get("/v1/webhooks", &acme.key).await["data"], json!([]));

    for url in [
        "https://93.184.216.34/h",
        "https://1.1.1.1/h",
        "https://[2606:4700::1111]/h",
        "https://[64:ff9b::808:808]/h",
    ] {
        let (status, answer) = app
            .call("POST", "/v1/webhooks", Some(&acme.key), Some(one_try(url)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {answer}");
    }
}

/// Webhooks saved by a dev server, then served by a non-dev one on the same database: the
/// name `localhost` passes no URL check at send time (it is a name), so only the resolver
/// guard stands between it and 127.0.0.1. It and literal loopback URLs (plain and IPv4-mapped)
/// are all blocked.
async fn a_name_resolving_to_loopback_is_blocked_at_connect_time(backend: Backend) {
    let target = Target::start().await;
    let env = TestEnv::new(backend).await;
    let mut dev = TestApp::start(env.settings()).await;
    let acme = dev.create_account("Acme").await;
    let port = target.addr.port();
    for url in [
        format!("https://localhost:{port}/hook"),
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        dev.create_webhook(&acme, one_try(&url)).await;
    }
    dev.stop().await;

    let mut settings = env.settings();
    settings.dev = false;
    let app = TestApp::start(settings).await;
    let attempts = failed_attempts(&app, &acme, 3).await;
    for attempt in &attempts {
        assert_eq!(attempt["error_kind"], "blocked", "{attempt}");
        assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    }
    let errors: Vec<&str> = attempts
        .iter()
        .map(|a| a["error"].as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("localhost resolves only to")),
        "the resolver refused the name after DNS: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("address 127.0.0.1 is not allowed: loopback")),
        "the literal address was refused before connecting: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("::ffff:127.0.0.1 is not allowed: loopback")),
        "the IPv4-mapped literal was judged as the IPv4 address it carries: {errors:?}"
    );
    assert_eq!(target.count(), 0, "a blocked attempt reached the target");
}

async fn allowed_networks_pass_the_url_check_and_the_connect_time_guard(backend: Backend) {
    let target = Target::start().await;
    let app = TestApp::spawn_with(backend, |s| {
        s.dev = false;
        s.delivery.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let acme = app.create_account("Acme").await;
    let port = target.addr.port();
    for url in [
        format!("https://localhost:{port}/hook"),
        format!("https://127.0.0.1:{port}/hook"),
    ] {
        app.create_webhook(&acme, one_try(&url)).await;
    }
    for url in [
        "https://10.0.0.1/",
        "https://169.254.169.254/",
        "http://127.0.0.1/",
    ] {
        let (status, answer) = app
            .call("POST", "/v1/webhooks", Some(&acme.key), Some(one_try(url)))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
    }

    // The target speaks no TLS, so the attempts fail, but past the guard: on the wire.
    for attempt in failed_attempts(&app, &acme, 2).await {
        assert_ne!(attempt["error_kind"], "blocked", "{attempt}");
        assert!(attempt["error_kind"].is_string(), "{attempt}");
    }
    assert!(
        target.count() >= 2,
        "{} connections reached the allowed target",
        target.count()
    );
}

on_both_backends!(
    without_dev_disguised_private_urls_are_refused_with_422,
    without_dev_every_special_purpose_address_and_port_0_are_refused_with_422,
    a_name_resolving_to_loopback_is_blocked_at_connect_time,
    allowed_networks_pass_the_url_check_and_the_connect_time_guard,
);
