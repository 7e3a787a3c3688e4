//! Recovering a webhook (`POST /v1/webhooks/{id}/recover`, `herald recover`) and the operator's
//! bulk retry (`POST /v1/deliveries/retry`): failed deliveries are re-queued by a background
//! task, each delivered once more under its own id; a dry run counts and changes nothing; the
//! task's progress shows while it runs; a filter touches only what it names; another account
//! sees none of it; bad input writes nothing.

use crate::common;

use common::{ADMIN, Backend, Reply, TestAccount, TestApp, TestReceiver, eventually};
use herald::config::Settings;
use herald::domain::Timestamp;
use herald::domain::duration::HumanDuration;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Small batches, quickly paced, and two attempts in flight per webhook: a task's progress can
/// be watched, and a held receiver holds the task back.
pub(crate) fn small_batches(s: &mut Settings) {
    s.tasks.batch = 10;
    s.tasks.pace = HumanDuration(Duration::from_millis(20));
    s.delivery.per_webhook_concurrency = 2;
}

pub(crate) fn ago(secs: u64) -> String {
    Timestamp::now()
        .minus(Duration::from_secs(secs))
        .to_rfc3339()
}

fn from_now(secs: u64) -> String {
    Timestamp::now()
        .plus(Duration::from_secs(secs))
        .to_rfc3339()
}

/// The ids of the webhook's deliveries in `status`.
pub(crate) async fn ids_in(
    app: &TestApp,
    key: &str,
    webhook: &str,
    status: &str,
) -> BTreeSet<String> {
    let page = app
        .get(
            &format!("/v1/deliveries?webhook={webhook}&status={status}&limit=200"),
            key,
        )
        .await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A webhook of `account` for `kind.*` at `url`, with a tiny retry schedule, and `n` events
/// of `kind.completed` whose deliveries have all failed (the receiver must answer 500).
/// Returns the webhook id and the deliveries' ids.
pub(crate) async fn exhausted(
    app: &TestApp,
    account: &TestAccount,
    url: String,
    kind: &str,
    n: usize,
) -> (String, BTreeSet<String>) {
    let hook = app
        .create_webhook(
            account,
            json!({ "url": url, "events": [format!("{kind}.*")],
                    "retry": { "schedule": ["10ms"], "timeout": "30s" } }),
        )
        .await;
    let hook = hook["id"].as_str().unwrap().to_owned();
    app.publish_batch(account, &format!("{kind}.completed"), 0, n)
        .await;
    let failed = eventually("every delivery to fail", WAIT, || async {
        let failed = ids_in(app, &account.key, &hook, "failed").await;
        (failed.len() == n).then_some(failed)
    })
    .await;
    (hook, failed)
}

async fn task_when(
    app: &TestApp,
    key: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, WAIT, || async {
        let task = app.get(path, key).await;
        ok(&task).then_some(task)
    })
    .await
}

async fn recover_delivers_each_failed_delivery_once_more_with_its_id(backend: Backend) {
    let app = TestApp::spawn_with(backend, small_batches).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let since = ago(1);
    let (hook, ids) = exhausted(&app, &acme, receiver.url("/"), "tts", 100).await;
    let failures = receiver.count();
    receiver.set_default(Reply::status(200));
    // Answers wait until the test has seen the task part way.
    receiver.hold();
    let path = format!("/v1/webhooks/{hook}/recover");

    let (status, answer) = app
        .call(
            "POST",
            &path,
            Some(&acme.key),
            Some(json!({ "since": since, "dry_run": true })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "count": 100, "dry_run": true }));
    assert_eq!(
        ids_in(&app, &acme.key, &hook, "failed").await,
        ids,
        "a dry run changes nothing"
    );
    assert_eq!(app.get("/v1/tasks", &acme.key).await["data"], json!([]));

    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&acme.key)
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/tasks/{}", task["id"].as_str().unwrap())
    );
    assert_eq!(
        (task["kind"].as_str(), task["counted"].as_u64()),
        (Some("recover"), Some(100))
    );

    let part_way = task_when(&app, &acme.key, &location, "the task part way", |t| {
        let done = t["done"].as_u64().unwrap();
        t["state"] == "running" && done > 0 && done < 100
    })
    .await;
    assert_eq!(part_way["counted"], 100);
    receiver.release();
    let finished = task_when(&app, &acme.key, &location, "the task to succeed", |t| {
        t["state"] == "succeeded"
    })
    .await;
    assert_eq!(
        (finished["done"].as_u64(), finished["counted"].as_u64()),
        (Some(100), Some(100))
    );
    assert!(finished["finished_at"].is_string(), "{finished}");
    eventually("every delivery to succeed", WAIT, || async {
        (ids_in(&app, &acme.key, &hook, "succeeded").await == ids).then_some(())
    })
    .await;
    let again: Vec<String> = receiver.received()[failures..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(again.len(), 100, "each delivered exactly once more");
    assert_eq!(
        again.into_iter().collect::<BTreeSet<_>>(),
        ids,
        "under its own id"
    );
}

async fn run_recover(app: &TestApp, key: &str, args: &[&str]) -> (String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("recover")
        .args(args)
        .args(["--api", &app.url(""), "--key", key]);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().await.expect("herald runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

async fn herald_recover_shows_progress_and_a_summary(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        small_batches(s);
        s.tasks.batch = 5;
    })
    .await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let acme = app.create_account("Acme").await;
    let since = ago(1);
    let (hook, ids) = exhausted(&app, &acme, receiver.url("/"), "tts", 20).await;
    let failures = receiver.count();
    receiver.set_default(Reply::status(200));

    let (stdout, _) = run_recover(&app, &acme.key, &[&hook, "--since", &since, "--dry-run"]).await;
    assert_eq!(
        stdout.trim(),
        format!("dry run: 20 failed deliveries of {hook} would be re-queued")
    );

    let (stdout, stderr) = run_recover(&app, &acme.key, &[&hook, "--since", "1h"]).await;
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(!progress.is_empty(), "progress lines on stderr: {stderr}");
    assert_eq!(
        progress.last(),
        Some(&"progress: 20/20 re-queued (succeeded)"),
        "{stderr}"
    );
    let summary = stdout.trim();
    assert!(
        summary.starts_with(&format!(
            "re-queued 20 of 20 failed deliveries of {hook}, took "
        )),
        "{summary}"
    );
    let again = receiver.wait_for(failures + 20, None, WAIT).await;
    let resent: BTreeSet<String> = again[failures..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(resent, ids);
}

async fn bulk_retry_requeues_only_what_its_filter_names(backend: Backend) {
    let app = TestApp::spawn_with(backend, small_batches).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let (acme, other) = (
        app.create_account("Acme").await,
        app.create_account("Other").await,
    );
    let since = ago(1);
    let (a1, a1_ids) = exhausted(&app, &acme, receiver.url("/a1"), "tts", 5).await;
    let (a2, a2_ids) = exhausted(&app, &acme, receiver.url("/a2"), "stt", 5).await;
    let (c, c_ids) = exhausted(&app, &other, receiver.url("/c"), "tts", 5).await;
    receiver.set_default(Reply::status(200));
    let until = from_now(60);
    let retry = |body: Value| {
        let app = &app;
        async move {
            app.call("POST", "/v1/deliveries/retry", Some(ADMIN), Some(body))
                .await
        }
    };
    let count = |body: Value| {
        let retry = &retry;
        async move {
            let (status, answer) = retry(body).await;
            assert_eq!(status, 200, "{answer}");
            answer["count"].as_u64().unwrap()
        }
    };
    let base = json!({ "status": "failed", "since": since, "until": until, "dry_run": true });
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    assert_eq!(count(base.clone()).await, 15, "every account's");
    assert_eq!(count(with(json!({ "account": acme.id }))).await, 10);
    assert_eq!(
        count(with(json!({ "account": acme.id, "webhook": a1 }))).await,
        5
    );
    assert_eq!(count(with(json!({ "status": "succeeded" }))).await, 0);
    let (status, _) = app
        .call(
            "POST",
            "/v1/deliveries/retry",
            Some(&acme.key),
            Some(base.clone()),
        )
        .await;
    assert_eq!(status, 403, "the operator's alone");

    let (status, task) = retry(with(
        json!({ "account": acme.id, "webhook": a1, "dry_run": false }),
    ))
    .await;
    assert_eq!(status, 202, "{task}");
    assert_eq!(
        (task["kind"].as_str(), task["counted"].as_u64()),
        (Some("retry"), Some(5))
    );
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let done = task_when(&app, ADMIN, &path, "the retry to succeed", |t| {
        t["state"] == "succeeded"
    })
    .await;
    assert_eq!(done["done"], 5);
    eventually("a1's deliveries to succeed", WAIT, || async {
        (ids_in(&app, &acme.key, &a1, "succeeded").await == a1_ids).then_some(())
    })
    .await;
    assert_eq!(
        ids_in(&app, &acme.key, &a2, "failed").await,
        a2_ids,
        "not the account's other webhook"
    );
    assert_eq!(
        ids_in(&app, &other.key, &c, "failed").await,
        c_ids,
        "nor another account"
    );
    let (status, _) = app.call("GET", &path, Some(&acme.key), None).await;
    assert_eq!(
        status, 404,
        "an operator's task is not the account's to read"
    );
}

async fn tasks_are_the_accounts_own_and_bad_input_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::status(500));
    let (acme, other) = (
        app.create_account("Acme").await,
        app.create_account("Other").await,
    );
    let since = ago(1);
    let (hook, ids) = exhausted(&app, &acme, receiver.url("/"), "tts", 3).await;
    let path = format!("/v1/webhooks/{hook}/recover");
    let (status, _) = app
        .call(
            "POST",
            &path,
            Some(&other.key),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 404, "another account's webhook");

    // Bad input: a clear error, and nothing written.
    let refused = |key: String, path: String, body: String| {
        let app = &app;
        async move {
            let (status, err) = app
                .call_raw("POST", &path, Some(&key), Some(&body), &[])
                .await;
            assert!(status == 400 || status == 422, "{body}: {status} {err}");
            assert!(err["error"]["code"].is_string(), "{body}: {err}");
            (status, err["error"]["field"].as_str().map(str::to_owned))
        }
    };
    let recover = |body: &str| refused(acme.key.clone(), path.clone(), body.to_owned());
    assert_eq!(
        recover(r#"{"since": "yesterday"}"#).await.1.as_deref(),
        Some("since")
    );
    assert_eq!(
        recover(r#"{"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}"#)
            .await
            .1
            .as_deref(),
        Some("until"),
        "since after until"
    );
    assert_eq!(
        recover(r#"{"since": "2030-01-01T00:00:00Z", "until": "later"}"#)
            .await
            .1
            .as_deref(),
        Some("until")
    );
    recover(r#"{"since": "2030-01-01T00:00:00Z", "stray": 1}"#).await;
    assert_eq!(recover(r#"{"since": "#).await.0, 400);
    let retry = |body: &str| {
        refused(
            ADMIN.to_owned(),
            "/v1/deliveries/retry".to_owned(),
            body.to_owned(),
        )
    };
    let window = r#""since": "2020-01-01T00:00:00Z", "until": "2040-01-01T00:00:00Z""#;
    for (status, field) in [("exploded", "status"), ("pending", "status")] {
        let body = format!(r#"{{"status": "{status}", {window}}}"#);
        assert_eq!(retry(&body).await.1.as_deref(), Some(field), "{body}");
    }
    assert_eq!(
        retry(r#"{"status": "failed", "since": "2040-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}"#).await.1.as_deref(),
        Some("until")
    );
    assert_eq!(
        retry(r#"{"status": "failed", "since": "2020-01-01T00:00:00Z", "until": "2040-01-01T00:00:00Z", "webhook": "wh_x"}"#).await.1.as_deref(),
        Some("webhook")
    );
    retry(r#"{"status": "failed", "since": "2020-01-01T00:00:00Z"}"#).await;
    assert_eq!(
        app.get("/v1/tasks", ADMIN).await["data"],
        json!([]),
        "no task was made"
    );
    assert_eq!(
        ids_in(&app, &acme.key, &hook, "failed").await,
        ids,
        "nothing re-queued"
    );

    // The account's own task: its to read, not another's.
    let (status, task) = app
        .call(
            "POST",
            &path,
            Some(&acme.key),
            Some(json!({ "since": since, "until": from_now(60) })),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let task_path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let (status, _) = app.call("GET", &task_path, Some(&other.key), None).await;
    assert_eq!(status, 404);
    assert_eq!(app.get("/v1/tasks", &other.key).await["data"], json!([]));
    let listed = app.get("/v1/tasks", &acme.key).await;
    assert_eq!(listed["data"][0]["id"], task["id"]);
    assert_eq!(app.get(&task_path, ADMIN).await["id"], task["id"]);

    // A disabled webhook is enabled first.
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/v1/webhooks/{hook}"),
            Some(&acme.key),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, err) = app
        .call(
            "POST",
            &path,
            Some(&acme.key),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), err["error"]["code"].as_str()),
        (409, Some("webhook_disabled"))
    );
}

on_both_backends!(
    recover_delivers_each_failed_delivery_once_more_with_its_id,
    herald_recover_shows_progress_and_a_summary,
    bulk_retry_requeues_only_what_its_filter_names,
    tasks_are_the_accounts_own_and_bad_input_writes_nothing,
);
