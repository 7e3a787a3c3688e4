//! The integration harness: the real server on a random loopback port against a fresh database,
//! typed request helpers, and a `TestReceiver` ([`receiver`]) that records what it gets and
//! answers as scripted.
#![allow(dead_code)] // each test binary uses its own part of the harness

use axum::http::StatusCode;
use herald::app::Herald;
use herald::config::{AdminToken, Settings};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub mod listen_cli;
pub mod portal;
mod python;
mod receiver;

#[allow(unused_imports)] // as above: not every test binary verifies signatures
pub use python::{python_with_standardwebhooks, verify_with_python};
pub use receiver::{Received, Reply, TestReceiver};

pub const ADMIN: &str = "test-admin-token-0123456789";

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body once per store backend: `on_both_backends!(name, …)` turns each
/// `async fn name(backend: Backend)` into `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )+};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests make their databases on (`HERALD_TEST_POSTGRES_URL`).
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Storage of a test's own: a temp data dir and, on PostgreSQL, a fresh database that is
/// dropped when the test ends. A server restarted on the same `TestEnv` finds its state.
pub struct TestEnv {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg_database: Option<String>,
}

impl TestEnv {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("herald.db").display()),
                None,
            ),
            Backend::Postgres => {
                let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is required for the tests ({admin}; set HERALD_TEST_POSTGRES_URL): {e}")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("postgres URL");
                url.set_path(&format!("/{name}"));
                (url.to_string(), Some(name))
            }
        };
        Self {
            backend,
            dir,
            database_url,
            pg_database,
        }
    }

    /// Storage on a database the test manages itself (nothing is dropped at the end).
    pub fn on_database(backend: Backend, database_url: String) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            backend,
            dir,
            database_url,
            pg_database: None,
        }
    }

    /// Dev-mode test settings on this storage.
    pub fn settings(&self) -> Settings {
        Settings {
            database_url: Some(self.database_url.clone()),
            ..test_settings(self.dir.path().to_path_buf())
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        // Drop runs outside any async context we can use; a short thread of its own does it.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _env: Option<TestEnv>,
}

/// An account made through the API.
pub struct TestAccount {
    pub id: String,
    pub key: String,
}

impl TestApp {
    /// A dev-mode server (loopback receivers allowed) on a fresh database of `backend`.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        let env = TestEnv::new(backend).await;
        let mut settings = env.settings();
        adjust(&mut settings);
        let mut app = Self::start(settings).await;
        app._env = Some(env);
        app
    }

    /// A dev-mode server configured from a TOML file (as `--config` would), on a fresh
    /// database; `adjust` may change the settings further.
    pub async fn spawn_with_file(
        backend: Backend,
        path: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let env = TestEnv::new(backend).await;
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut settings: Settings =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let base = env.settings();
        settings.listen = base.listen;
        settings.data_dir = base.data_dir;
        settings.database_url = base.database_url;
        settings.admin_token = base.admin_token;
        settings.dev = true;
        adjust(&mut settings);
        settings.check().expect("the configuration is valid");
        let mut app = Self::start(settings).await;
        app._env = Some(env);
        app
    }

    pub async fn start(settings: Settings) -> Self {
        let server = Herald::build(settings).await.expect("server builds");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            client: reqwest::Client::new(),
            shutdown,
            task: Some(task),
            _env: None,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `/metrics` page, as text.
    pub async fn metrics_text(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// The claims the store has made so far, per `/metrics`.
    pub async fn claims_made(&self) -> u64 {
        claims_in(&self.metrics_text().await)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let raw = body.map(|b| b.to_string());
        self.call_raw(method, path, token, raw.as_deref(), &[])
            .await
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method.parse().expect("method"), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn create_account(&self, name: &str) -> TestAccount {
        let (status, body) = self
            .call(
                "POST",
                "/v1/accounts",
                Some(ADMIN),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestAccount {
            id: body["id"].as_str().unwrap().to_owned(),
            key: body["api_key"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn create_webhook(&self, account: &TestAccount, body: Value) -> Value {
        let (status, created) = self
            .call("POST", "/v1/webhooks", Some(&account.key), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    pub async fn publish(&self, account: &TestAccount, event_type: &str, data: Value) -> Value {
        let body = json!({ "account": account.id, "type": event_type, "data": data });
        let (status, answer) = self
            .call("POST", "/v1/events", Some(ADMIN), Some(body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer
    }

    /// Publishes `count` events of `event_type` in one batch (their `data` numbered `{"n": i}`,
    /// from `first`), in the order listed; returns the batch's answer.
    pub async fn publish_batch(
        &self,
        account: &TestAccount,
        event_type: &str,
        first: usize,
        count: usize,
    ) -> Value {
        let events: Vec<Value> = (first..first + count)
            .map(|n| json!({ "account": account.id, "type": event_type, "data": { "n": n } }))
            .collect();
        let (status, answer) = self
            .call(
                "POST",
                "/v1/events/batch",
                Some(ADMIN),
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// The deliveries of one event.
    pub async fn deliveries_of(&self, account: &TestAccount, event_id: &str) -> Vec<Value> {
        let page = self
            .get(&format!("/v1/deliveries?event={event_id}"), &account.key)
            .await;
        page["data"].as_array().unwrap().clone()
    }

    /// The id of the (first) delivery of a published event, from its publish answer.
    pub async fn first_delivery(&self, account: &TestAccount, published: &Value) -> String {
        let deliveries = self
            .deliveries_of(account, published["id"].as_str().unwrap())
            .await;
        deliveries[0]["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the delivery reaches `status`, and returns it with its attempts.
    pub async fn wait_for_status(
        &self,
        account: &TestAccount,
        delivery_id: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        eventually(
            &format!("delivery {delivery_id} to be {status}"),
            timeout,
            || async {
                let d = self
                    .get(&format!("/v1/deliveries/{delivery_id}"), &account.key)
                    .await;
                (d["status"] == status).then_some(d)
            },
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for tests: dev mode, a known admin token, port 0, a data dir of the test's own.
///
/// The circuit breaker is off (`delivery.circuit_after = 0`): most tests make an endpoint fail
/// on purpose and follow each delivery's own retries; `tests/it/flow_circuit.rs` turns it on.
pub fn test_settings(data_dir: PathBuf) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        dev: true,
        admin_token: Some(AdminToken(ADMIN.to_owned())),
        ..Settings::default()
    };
    settings.delivery.circuit_after = 0;
    settings
}

/// The real `herald serve` binary as a child process, which a test can `kill -9`.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts a dev-mode node on `env`'s database with its own data dir `env.dir/<node>`,
    /// `config` as its TOML file, and waits until it answers.
    pub async fn start(env: &TestEnv, node: &str, config: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = env.dir.path().join(node);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("herald.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--config")
            .arg(&config_path)
            .args(["--database-url", &env.database_url])
            .env("HERALD_ADMIN_TOKEN", ADMIN)
            .env("HERALD_NODE_ID", node)
            .env("HERALD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("herald binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually(
            &format!("node {node} to answer /healthz"),
            Duration::from_secs(30),
            || async {
                client
                    .get(format!("{base}/healthz"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            },
        )
        .await;
        Self { child, base }
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        self.child.wait().unwrap();
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The claims a `/metrics` page counts.
pub fn claims_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"herald_store_operation_duration_seconds_count{op="claim"} "#)
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}
