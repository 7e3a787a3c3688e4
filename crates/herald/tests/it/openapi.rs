//! The OpenAPI contract, checked from outside with independent tools against the real server:
//! the document served at `/openapi.json` is the committed `docs/openapi.json`, validates as
//! OpenAPI 3.1 (`openapi-spec-validator`), holds against the live API under fuzzing with both
//! credentials (`schemathesis`), makes a working client (`openapi-python-client`), and `/docs`
//! renders in Chromium with every request off the server refused. The Python tools live in the
//! checkout's `.venv` and the browser driver in `tests/browser/`, both set up by `scripts/test`.

use crate::common::{
    ADMIN, Backend, TestAccount, TestApp, TestReceiver, python_with_standardwebhooks,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
const SCREENSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api-reference.png");
const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi_client.py");

/// A program installed in the checkout's `.venv`, beside its Python.
fn venv_tool(name: &str) -> PathBuf {
    let python = python_with_standardwebhooks();
    let tool = python.parent().expect("venv bin dir").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/test, which installs the OpenAPI tools in .venv",
        tool.display()
    );
    tool
}

/// Runs a command to its end (within `limit`), failing the test if it cannot start.
async fn run(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    cmd.kill_on_drop(true);
    let what = format!("{:?}", cmd.as_std());
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn served_document(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "/openapi.json needs no credentials");
    resp.json().await.expect("/openapi.json is JSON")
}

/// The served document, pretty-printed, in a file of `dir`.
async fn document_file(app: &TestApp, dir: &Path) -> PathBuf {
    let path = dir.join("openapi.json");
    let pretty = serde_json::to_string_pretty(&served_document(app).await).unwrap();
    std::fs::write(&path, pretty).unwrap();
    path
}

#[tokio::test]
async fn the_served_document_is_the_committed_copy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let served = serde_json::to_string_pretty(&served_document(&app).await).unwrap() + "\n";
    if std::env::var_os("HERALD_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &served).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json differs from what the server serves with the default configuration; \
         after checking the change is meant, regenerate it with \
         `HERALD_UPDATE_OPENAPI=1 cargo test -p herald --test it openapi::the_served_document_is_the_committed_copy`"
    );
}

/// The other half of `api::openapi::tests` (no route is served undocumented): every documented
/// operation is served. A made-up id answers the resource's 404 or a 422, never the router's own
/// 404 (`route not found`) or 405.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = served_document(&app).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let body = matches!(method, "post" | "put" | "patch").then(|| json!({}));
            let (status, answer) = app
                .call(&method.to_uppercase(), &concrete, Some(ADMIN), body)
                .await;
            let unrouted =
                status == 405 || (status == 404 && answer["error"]["message"] == "route not found");
            assert!(
                !unrouted,
                "{method} {path} is documented, not served: {status} {answer}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} operations");
}

#[tokio::test]
async fn the_document_validates_as_openapi_3_1() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let path = document_file(&app, dir.path()).await;
    let doc = served_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut cmd = tokio::process::Command::new(venv_tool("openapi-spec-validator"));
    cmd.arg(&path);
    let out = run(cmd, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "not valid OpenAPI 3.1: {}",
        text(&out)
    );
    // Clients name their functions after operation ids: each is used once.
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
    assert!(
        doc["webhooks"]["tts.completed"]["post"]["requestBody"].is_object(),
        "each event type's delivery is described"
    );
}

/// Ids of resources that exist, so that operations on one reach past the 404 (see [`seeded`]).
struct Seeds {
    account: String,
    /// An account of its own for `DELETE /v1/accounts/{id}`, which erases it.
    doomed: String,
    event: String,
    delivery: String,
    job: String,
}

/// An account with a webhook, an event with its delivery (pending: nothing is sent), and a job.
async fn seeded(app: &TestApp, account: &TestAccount) -> Seeds {
    let hook = json!({ "url": "https://example.com/hook", "events": ["*"] });
    app.create_webhook(account, hook).await;
    let published = app
        .publish(account, "tts.completed", json!({ "n": 1 }))
        .await;
    let delivery = app.first_delivery(account, &published).await;
    let (status, job) = app
        .call(
            "POST",
            "/v1/jobs",
            Some(ADMIN),
            Some(json!({ "account": account.id, "kind": "tts" })),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    Seeds {
        account: account.id.clone(),
        doomed: app.create_account("doomed").await.id,
        event: id(&published),
        delivery,
        job: id(&job),
    }
}

/// schemathesis' configuration: path ids of the seeded resources for the operations on one
/// (the fuzzer could not guess one), and with the admin token the seeded account wherever one
/// is named. Webhooks get none: the fuzzer creates them, once it has an account, and follows
/// the ids it gets (a fixed id would be deleted early and then stand in for the new ones).
fn fuzz_config(seeds: &Seeds, admin: bool) -> String {
    let mut config = String::new();
    if admin {
        config += &format!(
            "[parameters]\n\"query.account\" = \"{0}\"\n\"body.account\" = \"{0}\"\n\n",
            seeds.account
        );
    }
    for (path, id) in [
        ("accounts", &seeds.account),
        ("events", &seeds.event),
        ("deliveries", &seeds.delivery),
        ("jobs", &seeds.job),
    ] {
        // Erasing the seeded account would leave the rest of the run nothing to reach.
        let keep = if path == "accounts" {
            "exclude-method = \"DELETE\"\n"
        } else {
            ""
        };
        config += &format!(
            "[[operations]]\ninclude-path-regex = '^/v1/{path}/\\{{id\\}}'\n{keep}\
             parameters = {{ \"path.id\" = \"{id}\" }}\n\n"
        );
    }
    // Not in the stateful phase: it chains a create with two erasures of the account, and the
    // second one, once the (empty) account's rows are gone, is rightly a 404, which the phase
    // reads as "a created resource not found".
    config += &format!(
        "[[operations]]\ninclude-operation-id = \"erase_account\"\n\
         parameters = {{ \"path.id\" = \"{}\" }}\nphases.stateful.enabled = false\n\n",
        seeds.doomed
    );
    config
}

/// schemathesis against the live API with one credential: no 5xx, and no answer the document
/// does not allow (status, content type, headers, body schema), nor a request the document
/// calls invalid that the server accepts.
async fn fuzz(app: &TestApp, credential: &str, label: &str, config: &str) {
    // A fixed seed keeps CI repeatable; `HERALD_FUZZ_SEED` and `HERALD_FUZZ_EXAMPLES` explore
    // further by hand.
    let seed = std::env::var("HERALD_FUZZ_SEED").unwrap_or_else(|_| "1".to_owned());
    let examples = std::env::var("HERALD_FUZZ_EXAMPLES").unwrap_or_else(|_| "30".to_owned());
    // A directory of its own: runs on both backends go at once, and Hypothesis keeps files in
    // the working directory that two runs must not share.
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut cmd = tokio::process::Command::new(venv_tool("schemathesis"));
    cmd.arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {credential}")])
        .args(["--checks", "all"])
        // Valid-by-schema requests that the server refuses (an unknown event type, an id that
        // names nothing) are not contradictions: the document cannot list the catalog's or the
        // database's contents.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", &examples, "--seed", &seed])
        // One worker: with threads, Hypothesis parsing lambdas on Python 3.11 now and then trips
        // CPython's "AST constructor recursion depth mismatch", a crash of the tool's own.
        .args(["--workers", "1"])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .args(["--no-color", "--output-truncate", "false"])
        .current_dir(dir.path());
    let out = run(cmd, Duration::from_secs(600)).await;
    assert!(
        out.status.success(),
        "schemathesis ({label}) found problems:\n{}",
        text(&out)
    );
    // What it covered, with `--nocapture`.
    if std::env::var_os("HERALD_FUZZ_SHOW").is_some() {
        println!("schemathesis ({label}):\n{}", text(&out));
    }
}

async fn schemathesis_finds_no_server_error_and_no_contradiction(backend: Backend) {
    // The fuzzer invents webhook URLs naming any host: this server sends nothing at all.
    let app = TestApp::spawn_with(backend, |s| s.delivery.enabled = false).await;
    let account = app.create_account("fuzzed").await;
    let seeds = seeded(&app, &account).await;
    fuzz(&app, ADMIN, "admin token", &fuzz_config(&seeds, true)).await;
    // The admin run may have deleted the webhook: the key's run gets a fresh one.
    let seeds = seeded(&app, &account).await;
    fuzz(&app, &account.key, "API key", &fuzz_config(&seeds, false)).await;
}

on_both_backends!(schemathesis_finds_no_server_error_and_no_contradiction);

async fn python_client_flow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = document_file(&app, dir.path()).await;
    // No post hooks: they format the code with ruff, which a client does not need to work.
    let config = dir.path().join("generator.yaml");
    std::fs::write(&config, "post_hooks: []\n").unwrap();
    let mut generate = tokio::process::Command::new(venv_tool("openapi-python-client"));
    generate
        .arg("generate")
        .arg("--path")
        .arg(&spec)
        .arg("--config")
        .arg(&config)
        .args(["--meta", "none", "--output-path"])
        .arg(dir.path().join("herald_client"));
    let out = run(generate, Duration::from_secs(120)).await;
    assert!(out.status.success(), "generating failed: {}", text(&out));
    let generated = text(&out);
    assert!(
        !generated.contains("Warning"),
        "the generator skipped part of the document: {generated}"
    );
    let mut flow = tokio::process::Command::new(python_with_standardwebhooks());
    flow.arg(CLIENT_SCRIPT)
        .env("PYTHONPATH", dir.path())
        .env("HERALD_URL", app.url(""))
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .env("RECEIVER_URL", receiver.url("/hook"));
    let out = run(flow, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "the client flow failed: {}",
        text(&out)
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the script prints JSON ({e}): {}", text(&out)));
    assert_eq!(result["status"], "succeeded", "{result}");
    let got = receiver
        .wait_for(1, Some("/hook"), Duration::from_secs(10))
        .await;
    assert_eq!(got[0].header("webhook-id"), result["delivery"], "{result}");
    assert_eq!(got[0].json()["data"], result["data"]);
}

on_both_backends!(python_client_flow);

#[tokio::test]
async fn the_reference_renders_in_chromium_with_the_network_off() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert!(
        Path::new(BROWSER_DIR).join("node_modules").exists(),
        "tests/browser/node_modules is missing: run scripts/test (npm ci there)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("docs.mjs")
        .current_dir(BROWSER_DIR)
        .env("HERALD_URL", app.url(""));
    // `HERALD_SCREENSHOT=1` refreshes the committed picture of the page.
    if std::env::var_os("HERALD_SCREENSHOT").is_some() {
        cmd.env("SCREENSHOT", SCREENSHOT);
    }
    let out = run(cmd, Duration::from_secs(120)).await;
    assert!(
        out.status.success(),
        "the browser run failed: {}",
        text(&out)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("docs.mjs prints JSON ({e}): {}", text(&out)));
    assert_eq!(
        seen["refused"],
        serde_json::json!([]),
        "the page asked for something off the server"
    );
    assert!(
        seen["title"].as_str().unwrap_or("").contains("Herald"),
        "{seen}"
    );
    let operations = seen["operations"].as_u64().unwrap_or(0) as usize;
    let doc = served_document(&app).await;
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        operations >= documented,
        "the page shows every operation ({documented}, and the deliveries): {seen}"
    );
}
