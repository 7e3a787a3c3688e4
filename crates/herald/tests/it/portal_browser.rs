//! The customer portal in a real browser: `tests/browser/portal.mjs` drives Debian's headless
//! Chromium through playwright-core (set up by `scripts/test`, as for `/docs`) from a one-time
//! link (its page, then its button): creates a webhook, sends a test event, sees the delivery
//! and its attempt, retries it, rotates the secret, recovers the failed deliveries of another
//! webhook (its receiver was down), makes an API key and visits every page, each checked by axe-core (no serious or critical
//! violation) and weighed (under 100 KB transferred), with every request off the server
//! refused. `HERALD_SCREENSHOT=1` refreshes the committed pictures in `docs/portal/`.

use crate::common::portal::portal_link;
use crate::common::{ADMIN, Backend, Reply, TestApp, TestReceiver, eventually};
use crate::recover::{exhausted, ids_in};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/portal");

#[tokio::test]
async fn a_customer_walks_the_portal_in_chromium() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    // A finished job, so the jobs pages have something to show.
    let job = json!({ "account": acme.id, "kind": "tts", "id": "job_portal_demo", "input": { "text": "Hello" } });
    let (status, _) = app.call("POST", "/v1/jobs", Some(ADMIN), Some(job)).await;
    assert_eq!(status, 201);
    let done = json!({ "status": "completed", "progress": 1.0 });
    let (status, _) = app
        .call("PATCH", "/v1/jobs/job_portal_demo", Some(ADMIN), Some(done))
        .await;
    assert_eq!(status, 200);
    assert!(
        Path::new(BROWSER_DIR)
            .join("node_modules/axe-core")
            .exists(),
        "tests/browser/node_modules is missing or old: run scripts/test (npm ci there)"
    );
    // A webhook whose receiver was down: its deliveries failed, for the walk to recover.
    let down = TestReceiver::start().await;
    down.set_default(Reply::status(500));
    let (failing, failed) = exhausted(&app, &acme, down.url("/down"), "stt", 2).await;
    down.set_default(Reply::status(200));
    let link = portal_link(&app, &acme).await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("portal.mjs")
        .current_dir(BROWSER_DIR)
        .env("HERALD_URL", app.url(""))
        .env("PORTAL_LINK", link["url"].as_str().unwrap())
        .env("RECEIVER_URL", receiver.url("/hook"))
        .env("RECOVER_WEBHOOK", &failing)
        .kill_on_drop(true);
    if std::env::var_os("HERALD_SCREENSHOT").is_some() {
        std::fs::create_dir_all(SCREENSHOTS).unwrap();
        cmd.env("SCREENSHOTS", SCREENSHOTS);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the browser run ends within 3 minutes")
        .expect("node starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser run failed: {text}");
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("portal.mjs prints JSON ({e}): {text}"));
    assert_eq!(
        seen["refused"],
        json!([]),
        "a page asked for something off the server"
    );
    assert_eq!(seen["errors"], json!([]), "the console reported errors");
    assert_eq!(seen["rotated"], true, "{seen}");
    assert_eq!(seen["key"], "hk_", "a key was made and shown: {seen}");
    assert!(seen["attempts"].as_u64().unwrap() >= 2, "{seen}");
    let pages = seen["pages"].as_array().unwrap();
    let names: Vec<&str> = pages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for expected in [
        "open",
        "home",
        "webhook-new",
        "webhook",
        "delivery",
        "secret",
        "deliveries",
        "health",
        "jobs",
        "job",
        "callback",
        "recover",
        "task",
        "keys",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} was not visited: {names:?}"
        );
    }
    for page in pages {
        let bytes = page["bytes"].as_u64().unwrap();
        assert!(bytes > 0 && bytes < 100_000, "{page}");
        let serious: Vec<&Value> = page["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(serious.is_empty(), "{}: {serious:?}", page["name"]);
    }
    // The recovery: counted, then every failed delivery queued again and delivered.
    let counted = seen["counted"].as_str().unwrap();
    assert!(counted.contains("2 failed deliveries"), "{seen}");
    let recovered = seen["recovered"].as_str().unwrap();
    assert!(
        recovered.contains("succeeded") && recovered.contains("2 of 2"),
        "{seen}"
    );
    eventually(
        "the recovered deliveries to succeed",
        Duration::from_secs(20),
        || async { (ids_in(&app, &acme.key, &failing, "succeeded").await == failed).then_some(()) },
    )
    .await;
    // What the browser did reached the receiver: the delivery twice, with one webhook-id.
    let got = receiver
        .wait_for(2, Some("/hook"), Duration::from_secs(10))
        .await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
}
