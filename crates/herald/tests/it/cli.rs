//! The `herald serve` command line: configuration sources, the generated admin token, signals.

use crate::common;

use common::eventually;
use serde_json::{Value, json};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn herald(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).env("HERALD_LOG", "info");
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    eventually(
        "the server to answer /healthz",
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
}

/// Sends SIGTERM and waits (bounded) for the process to exit.
fn terminate(mut child: Child) -> Output {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn serve_reads_a_config_file_and_env_and_keeps_a_generated_admin_token() {
    herald::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\njob_kinds = [\"render\"]\n[[event_types]]\nname = \"render.completed\"\ndescription = \"A render finished\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let start = || {
        herald(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("HERALD_DEV", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let base = format!("http://127.0.0.1:{port}");

    let first = start();
    wait_healthy(&base).await;
    let client = reqwest::Client::new();
    let token_path = data.join("admin-token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let types: Value = client
        .get(format!("{base}/v1/event-types"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "render.completed",
            "render.queued",
            "render.processing",
            "render.failed",
            "webhook.disabled"
        ]
    );
    assert_eq!(
        types["data"][0]["description"], "A render finished",
        "the file's own entry is kept as written"
    );

    let account: Value = client
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = account["api_key"].as_str().unwrap();
    // HERALD_DEV=1 allows a plain-http loopback target.
    let resp = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(key)
        .json(&json!({ "url": "http://127.0.0.1:9/hook", "events": ["render.completed"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let out = terminate(first);
    assert!(
        out.status.success(),
        "SIGTERM ends herald cleanly: {:?}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Generated an admin token") && stdout.contains(&token),
        "printed once: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DEVELOPMENT MODE"),
        "dev mode is announced loudly: {stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the admin token never reaches the log"
    );

    // The second start reuses the stored token and does not print it again.
    let second = start();
    wait_healthy(&base).await;
    let me = client
        .get(format!("{base}/v1/accounts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let out = terminate(second);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token));
}

#[test]
fn a_bad_config_stops_the_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[delivery]\nworkerz = 3\n").unwrap();
    let out = herald(&["serve", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("workerz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&config, "[delivery]\nretry = { schedule = [\"soon\"] }\n").unwrap();
    let out = herald(&["serve", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("delivery.retry"));
}

#[test]
fn gen_secrets_key_prints_a_fresh_key_that_serve_accepts_and_a_bad_key_stops_the_start() {
    let generate = || {
        let out = herald(&["gen-secrets-key"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let key = generate();
    assert!(
        herald::store::seal::SecretsKey::parse(&key).is_ok(),
        "{key}"
    );
    assert_ne!(key, generate(), "a fresh key each time");

    let dir = tempfile::tempdir().unwrap();
    let bad = "c2hvcnQta2V5LXNlY3JldA=="; // 16 bytes
    let out = herald(&["serve", "--data-dir", dir.path().to_str().unwrap()])
        .env("HERALD_SECRETS_KEY", bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HERALD_SECRETS_KEY must be the base64 of 32 random bytes")
            && !stderr.contains(bad),
        "names the variable, never repeats its value: {stderr}"
    );
}
