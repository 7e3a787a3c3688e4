//! Erasure: `DELETE /v1/accounts/{id}` removes the account and everything of it. Checked in SQL
//! on the test's own database: no row of any table (found from the schema, not a list of
//! tables) holds any id of the account or its payloads, and another account's rows are the
//! same before and after; none of its pending deliveries is sent once the DELETE has answered;
//! other accounts' publishes stay fast meanwhile; and the account is gone for the API at once,
//! also on a second node.

mod db;

use crate::common;
use crate::common::portal::{Portal, get_bare, portal_link};

use common::{ADMIN, Backend, Reply, TestAccount, TestApp, TestEnv, TestReceiver, eventually};
use db::{Db, wait_erased};
use herald::domain::duration::HumanDuration;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The acceptance count: deliveries pending when the account is erased.
const PENDING: usize = 100_000;
/// Events per batch publish (the route's most).
const BATCH: usize = 1000;

/// A subscription of `account` whose receiver hangs: its attempts in flight hang (for the
/// longest timeout) until the account is erased, and the rest of its deliveries stay pending.
async fn hanging_webhook(app: &TestApp, account: &TestAccount, hanging: &TestReceiver) {
    app.create_webhook(
        account,
        json!({ "url": hanging.url("/hang"), "events": ["tts.completed"], "retry": { "timeout": "60s" } }),
    )
    .await;
}

/// Gives `account` one of each other kind of row: a subscription whose attempts are recorded
/// (attempts, endpoint figures), a callback URL, a job with its own webhook, a second key, and
/// events with idempotency keys.
async fn fill(app: &TestApp, account: &TestAccount, ok: &TestReceiver, marker: &str) {
    app.create_webhook(
        account,
        json!({ "url": ok.url("/ok"), "events": ["stt.completed"] }),
    )
    .await;
    let (status, body) = app
        .call(
            "PUT",
            "/v1/me/callback-url",
            Some(&account.key),
            Some(json!({ "callback_url": ok.url("/callback") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            "POST",
            "/v1/jobs",
            Some(ADMIN),
            Some(
                json!({ "account": account.id, "kind": "tts", "input": { "marker": marker },
                         "webhook_url": ok.url("/job") }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call("POST", "/v1/me/keys", Some(&account.key), None)
        .await;
    assert_eq!(status, 201, "{body}");
    for n in 0..3 {
        let (status, body) = app
            .call_raw(
                "POST",
                "/v1/events",
                Some(ADMIN),
                Some(&json!({ "account": account.id, "type": "stt.completed", "data": { "marker": marker, "n": n } }).to_string()),
                &[("idempotency-key", &format!("{marker}-{n}"))],
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Waits until every delivery of `account` has succeeded (`n` of them).
async fn all_delivered(app: &TestApp, account: &TestAccount, n: usize) {
    eventually(
        "the account's deliveries to succeed",
        Duration::from_secs(30),
        || async {
            let page = app.get("/v1/deliveries?limit=200", &account.key).await;
            let all = page["data"].as_array().unwrap();
            (all.len() == n && all.iter().all(|d| d["status"] == "succeeded")).then_some(())
        },
    )
    .await;
}

/// The value of a `/metrics` series (0 when absent).
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

/// Publishes `n` events to `account` through the batch route.
async fn publish_many(app: &TestApp, account: &TestAccount, n: usize, marker: &str) {
    for start in (0..n).step_by(BATCH) {
        let events: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| json!({ "account": account.id, "type": "tts.completed", "data": { "marker": marker, "n": i } }))
            .collect();
        let (status, answer) = app
            .call(
                "POST",
                "/v1/events/batch",
                Some(ADMIN),
                Some(json!({ "events": events })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["data"][0]["id"].is_string(), "{}", answer["data"][0]);
    }
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

async fn an_account_with_100_000_pending_deliveries_is_erased_without_a_trace(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let app = TestApp::start(env.settings()).await;
    let (hanging, ok, other) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    hanging.set_default(Reply::status(200).after(Duration::from_secs(600)));
    let marker = format!("erase-me-{}", uuid::Uuid::new_v4().simple());
    let gone = app.create_account("Leaving").await;
    let stays = app.create_account("Staying").await;
    let idle = app.create_account("Idle").await;
    let setup = Instant::now();
    hanging_webhook(&app, &gone, &hanging).await;
    publish_many(&app, &gone, PENDING, &marker).await;
    fill(&app, &gone, &ok, &marker).await;
    let idle_marker = format!("keep-me-{}", uuid::Uuid::new_v4().simple());
    app.create_webhook(&idle, json!({ "url": ok.url("/idle"), "events": ["*"] }))
        .await;
    fill(&app, &idle, &ok, &idle_marker).await;
    app.create_webhook(&stays, json!({ "url": other.url("/"), "events": ["*"] }))
        .await;
    // Attempts to the hanging receiver are under way; the others' have been recorded.
    hanging.wait_for(1, None, Duration::from_secs(30)).await;
    all_delivered(&app, &idle, 2 + 3 * 3).await;
    eprintln!(
        "setup of {PENDING} pending deliveries took {:?}",
        setup.elapsed()
    );

    let mut db = Db::open(&env).await;
    let gone_ids = db.ids_of(&gone.id).await;
    assert!(gone_ids.len() > 2 * PENDING, "{} ids", gone_ids.len());
    let before = loop {
        let before = db.rows_holding(&gone_ids, &marker).await;
        if before["webhook_stats"] > 0 {
            break before;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for table in [
        "accounts",
        "api_keys",
        "webhooks",
        "events",
        "deliveries",
        "attempts",
        "jobs",
        "webhook_stats",
    ] {
        assert!(
            before[table] > 0,
            "the check finds the account's rows of {table}: {before:?}"
        );
    }
    assert!(before["deliveries"] > PENDING as i64, "{before:?}");
    let idle_ids = db.ids_of(&idle.id).await;
    let idle_before = db.rows_holding(&idle_ids, &idle_marker).await;

    // The same publishes before the erasure, for comparison (printed only).
    let mut baseline = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        app.publish(&stays, "tts.completed", json!({ "n": n }))
            .await;
        baseline.push(started.elapsed());
        db.account_rows(&gone.id).await;
    }
    eprintln!("publish p99 before the erasure: {:?}", p99(baseline));

    let (status, answer) = app
        .call(
            "DELETE",
            &format!("/v1/accounts/{}", gone.id),
            Some(ADMIN),
            None,
        )
        .await;
    let answered = Instant::now();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({ "id": gone.id, "state": "erasing" }));

    // Another account publishes, one event at a time, while the erasure runs.
    let mut latencies = Vec::new();
    let erased = loop {
        let started = Instant::now();
        app.publish(&stays, "tts.completed", json!({ "n": latencies.len() }))
            .await;
        latencies.push(started.elapsed());
        if db.account_rows(&gone.id).await == 0 {
            break answered.elapsed();
        }
        assert!(
            answered.elapsed() < Duration::from_secs(180),
            "the erasure takes too long"
        );
    };
    eprintln!(
        "erased in {erased:?}; {} publishes meanwhile, p99 {:?}, max {:?}",
        latencies.len(),
        p99(latencies.clone()),
        latencies.iter().max().unwrap()
    );
    assert!(
        latencies.len() >= 20,
        "too few publishes during the erasure to judge"
    );
    assert!(
        p99(latencies.clone()) < Duration::from_millis(50),
        "publish p99 {:?}",
        p99(latencies)
    );

    let after = db.rows_holding(&gone_ids, &marker).await;
    assert!(
        after.values().all(|n| *n == 0),
        "rows of the erased account are left: {after:?}"
    );
    assert_eq!(
        db.rows_holding(&idle_ids, &idle_marker).await,
        idle_before,
        "another account's rows changed"
    );
    // Nothing of the account reached its receivers once the DELETE had answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late: Vec<_> = hanging
        .received()
        .into_iter()
        .chain(
            ok.received()
                .into_iter()
                .filter(|r| String::from_utf8_lossy(&r.body).contains(&marker)),
        )
        .filter(|r| r.at > answered)
        .collect();
    assert!(
        late.is_empty(),
        "{} deliveries of the erased account were sent after the DELETE",
        late.len()
    );
    assert_eq!(
        metric(&app, "herald_erased_total{kind=\"accounts\"}").await,
        1
    );
    assert!(metric(&app, "herald_erased_total{kind=\"deliveries\"}").await > PENDING as u64);
}

async fn an_erased_account_is_gone_for_the_api_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let gone = app.create_account("Leaving").await;
    let stays = app.create_account("Staying").await;
    let webhook = app
        .create_webhook(&gone, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    let webhook = webhook["id"].as_str().unwrap();
    app.publish(&gone, "tts.completed", json!({})).await;
    receiver.wait_for(1, None, Duration::from_secs(10)).await;

    let path = format!("/v1/accounts/{}", gone.id);
    let (status, _) = app.call("DELETE", &path, Some(&stays.key), None).await;
    assert_eq!(status, 403, "erasing is the operator's");
    let (status, _) = app
        .call(
            "DELETE",
            "/v1/accounts/acc_00000000000000000000000000000000",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404, "an unknown account");
    let (status, _) = app
        .call("DELETE", "/v1/accounts/nonsense", Some(ADMIN), None)
        .await;
    assert_eq!(status, 404);
    let (status, answer) = app.call("DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(status, 202, "{answer}");

    // At once: its key, the account, its webhooks and keys, publishing to it.
    let (status, _) = app.call("GET", "/v1/webhooks", Some(&gone.key), None).await;
    assert_eq!(status, 401, "its key is refused");
    for get in [
        path.clone(),
        format!("{path}/keys"),
        format!("/v1/webhooks/{webhook}"),
    ] {
        let (status, body) = app.call("GET", &get, Some(ADMIN), None).await;
        assert_eq!(status, 404, "GET {get}: {body}");
    }
    let (status, body) = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN),
            Some(json!({ "account": gone.id, "type": "tts.completed", "data": {} })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let accounts = app.get("/v1/accounts", ADMIN).await;
    assert!(
        !accounts.to_string().contains(&gone.id),
        "listed: {accounts}"
    );
    // A second DELETE while the erasure goes on: the same answer (idempotent); once the rows are
    // gone, 404.
    let (status, again) = app.call("DELETE", &path, Some(ADMIN), None).await;
    assert!(
        status == 202 && again == answer || status == 404,
        "a second DELETE: {status} {again}"
    );
    eventually("the erasure to finish", Duration::from_secs(30), || async {
        let (status, _) = app.call("DELETE", &path, Some(ADMIN), None).await;
        (status == 404).then_some(())
    })
    .await;
    // The other account carries on.
    app.create_webhook(
        &stays,
        json!({ "url": receiver.url("/stays"), "events": ["*"] }),
    )
    .await;
    app.publish(&stays, "tts.completed", json!({})).await;
    receiver
        .wait_for(1, Some("/stays"), Duration::from_secs(10))
        .await;
    assert_eq!(receiver.count(), 2, "nothing more of the erased account");
}

/// An erasure cut short by a shutdown goes on when the server starts again: the mark is in the
/// store.
async fn an_erasure_cut_short_goes_on_after_a_restart(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let small_batches = || {
        let mut s = env.settings();
        // Small batches, so the erasure takes many and the shutdown comes in the middle.
        s.retention.batch = 5;
        s.delivery.enabled = false;
        s
    };
    let mut app = TestApp::start(small_batches()).await;
    let receiver = TestReceiver::start().await;
    let gone = app.create_account("Leaving").await;
    let webhook = app
        .create_webhook(&gone, json!({ "url": receiver.url("/"), "events": ["*"] }))
        .await;
    publish_many(&app, &gone, 2000, "cut-short").await;
    // Rows of the few-per-account tables, which refer to the account: a recover task, a portal
    // session and an unopened portal link. The mark deletes them; the account row could not
    // go while one was left.
    let (status, task) = app
        .call(
            "POST",
            &format!("/v1/webhooks/{}/recover", webhook["id"].as_str().unwrap()),
            Some(&gone.key),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let opened = portal_link(&app, &gone).await;
    Portal::open_link(&app, opened["url"].as_str().unwrap()).await;
    let unopened = portal_link(&app, &gone).await;
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/accounts/{}", gone.id),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 202);
    app.stop().await;
    let mut db = Db::open(&env).await;
    assert_eq!(
        db.account_rows(&gone.id).await,
        1,
        "the erasure was cut short"
    );
    let left = db.ids_of(&gone.id).await;
    assert!(left.len() > 1, "rows are left to erase");
    let task = task["id"].as_str().unwrap();
    assert!(
        !left.iter().any(|id| id == task),
        "the mark deleted the account's task"
    );

    let app = TestApp::start(env.settings()).await;
    let unopened = unopened["url"].as_str().unwrap();
    let path = &unopened[unopened.find("/portal/").unwrap()..];
    let link = get_bare(&app.url(path)).await;
    assert_eq!(
        link.status, 404,
        "the mark deleted the portal link: {}",
        link.body
    );
    wait_erased(&mut db, &gone.id, Duration::from_secs(60)).await;
    assert_eq!(
        db.ids_of(&gone.id).await,
        std::slice::from_ref(&gone.id),
        "nothing of the account is left"
    );
    drop(app);
}

on_both_backends!(
    an_account_with_100_000_pending_deliveries_is_erased_without_a_trace,
    an_erased_account_is_gone_for_the_api_at_once,
    an_erasure_cut_short_goes_on_after_a_restart
);

/// Two nodes on one PostgreSQL: an account erased through one is refused by the other at once,
/// though the other had it in its cache of known accounts.
#[tokio::test]
async fn a_second_node_refuses_an_erased_account_at_once() {
    let env = TestEnv::new(Backend::Postgres).await;
    let node = |name: &str| {
        let mut settings = env.settings();
        settings.data_dir = env.dir.path().join(name);
        settings.node_id = Some(name.to_owned());
        settings.retention.interval = HumanDuration(Duration::from_secs(3600));
        std::fs::create_dir_all(&settings.data_dir).unwrap();
        settings
    };
    let a = TestApp::start(node("a")).await;
    let b = TestApp::start(node("b")).await;
    let gone = a.create_account("Leaving").await;
    // Node b publishes to it, and so knows it.
    b.publish(&gone, "tts.completed", json!({})).await;
    let (status, _) = a
        .call(
            "DELETE",
            &format!("/v1/accounts/{}", gone.id),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let publish = json!({ "account": gone.id, "type": "tts.completed", "data": {} });
    let (status, body) = b
        .call("POST", "/v1/events", Some(ADMIN), Some(publish.clone()))
        .await;
    assert_eq!(status, 404, "node b refuses at once: {body}");
    let (status, body) = b
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": [publish] })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["data"][0]["error"]["code"].as_str()),
        (200, Some("not_found")),
        "{body}"
    );
    let (status, _) = b.call("GET", "/v1/webhooks", Some(&gone.key), None).await;
    assert_eq!(status, 401, "its key is refused on node b");
    let mut db = Db::open(&env).await;
    wait_erased(&mut db, &gone.id, Duration::from_secs(30)).await;
}
