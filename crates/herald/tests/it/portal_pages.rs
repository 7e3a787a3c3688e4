//! What the customer portal's pages do, through the real server on both backends, with a real
//! receiver: create a webhook with the picker, send a test event, see its delivery and attempt,
//! retry it, rotate the secret, set the callback URL, read health and jobs; and a session of one
//! account never reaches another's data (every portal URL with another account's ids is 404,
//! and refused changes write nothing).

use crate::common::portal::Portal;
use crate::common::{ADMIN, Backend, TestAccount, TestApp, TestReceiver, eventually};
use serde_json::{Value, json};
use std::time::Duration;

/// A job for `account`, taken to `completed` (two status events).
async fn finished_job(app: &TestApp, account: &TestAccount) -> String {
    let body = json!({ "account": account.id, "kind": "tts", "input": { "text": "Hi" } });
    let (status, job) = app.call("POST", "/v1/jobs", Some(ADMIN), Some(body)).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let done =
        json!({ "status": "completed", "progress": 1.0, "result": { "url": "https://x/y.mp3" } });
    let (status, _) = app
        .call("PATCH", &format!("/v1/jobs/{id}"), Some(ADMIN), Some(done))
        .await;
    assert_eq!(status, 200);
    id
}

/// The path of the delivery a redirect after a test send names.
fn delivery_path(location: &str) -> String {
    location.split('?').next().unwrap().to_owned()
}

async fn the_pages_manage_webhooks_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let portal = Portal::open(&app, &acme).await;

    // The picker shows each type with its description and example.
    let form = portal.get("/portal/webhooks/new").await;
    assert_eq!(form.status, 200);
    for text in ["tts.completed", "<details>", "<label for=\"url\">"] {
        assert!(form.body.contains(text), "{text}");
    }
    // A refused form says why, keeps what was typed, and writes nothing.
    let refused = portal
        .post(
            "/portal/webhooks",
            &[("url", "ftp://nowhere"), ("events", "tts.completed")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("role=\"alert\""));
    assert!(refused.body.contains("ftp://nowhere"));
    assert_eq!(app.get("/v1/webhooks", &acme.key).await["data"], json!([]));

    let hook = receiver.url("/hook");
    let created = portal
        .post(
            "/portal/webhooks",
            &[
                ("url", &hook),
                ("events", "tts.completed"),
                ("events", "stt.*"),
                ("description", "Main <receiver>"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let page_path = delivery_path(created.location());
    let id = page_path.rsplit('/').next().unwrap().to_owned();
    let api: Value = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["events"], json!(["tts.completed", "stt.*"]));
    let page = portal.get(&page_path).await;
    assert!(
        page.body.contains("Main &#60;receiver&#62;")
            || page.body.contains("Main &lt;receiver&gt;"),
        "escaped: {}",
        page.body
    );

    // A test event of a catalog type goes to the receiver; its delivery page shows the attempt.
    let sent = portal
        .post(
            &format!("/portal/webhooks/{id}/test"),
            &[("type", "tts.completed")],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let delivery = delivery_path(sent.location());
    let got = receiver
        .wait_for(1, Some("/hook"), Duration::from_secs(10))
        .await;
    let dlv = delivery.rsplit('/').next().unwrap().to_owned();
    assert_eq!(got[0].header("webhook-id"), dlv);
    let shown = eventually(
        "the attempt on the delivery's page",
        Duration::from_secs(10),
        || {
            let (portal, delivery) = (&portal, &delivery);
            async move {
                let p = portal.get(delivery).await;
                p.body.contains("HTTP 200").then_some(p)
            }
        },
    )
    .await;
    assert!(shown.body.contains("Request as sent"));
    assert!(
        shown.body.contains("webhook-signature: (hidden)"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("tts.completed"));

    // Retry: the receiver gets it again, with the same webhook-id.
    let retried = portal.post(&format!("{delivery}/retry"), &[]).await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    let got = receiver
        .wait_for(2, Some("/hook"), Duration::from_secs(10))
        .await;
    assert_eq!(got[1].header("webhook-id"), dlv);

    // The list filters by webhook, type and status.
    let listed = portal
        .get(&format!(
            "/portal/deliveries?webhook={id}&type=tts.completed&status=&since=&until="
        ))
        .await;
    assert!(listed.body.contains(&dlv), "{}", listed.body);
    let none = portal.get("/portal/deliveries?type=stt.completed").await;
    assert!(!none.body.contains(&dlv));
    let bad = portal.get("/portal/deliveries?since=yesterday").await;
    assert!(bad.body.contains("since must be RFC 3339"), "{}", bad.body);

    // Rotate the secret: the page shows a new one, and the old one beside it for the grace.
    let before = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    let old = before["secret"].as_str().unwrap();
    assert!(
        portal
            .get(&format!("/portal/webhooks/{id}/secret"))
            .await
            .body
            .contains(old)
    );
    let rotated = portal
        .post(
            &format!("/portal/webhooks/{id}/secret/rotate"),
            &[("grace_period", "1h")],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    let after = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await;
    let new = after["secret"].as_str().unwrap();
    assert_ne!(old, new);
    let secret_page = portal.get(&format!("/portal/webhooks/{id}/secret")).await;
    assert!(secret_page.body.contains(new) && secret_page.body.contains(old));

    // Edit, disable, enable.
    let edited = portal
        .post(
            &format!("/portal/webhooks/{id}"),
            &[("url", &hook), ("events", "*"), ("description", "")],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &acme.key).await["events"],
        json!(["*"])
    );
    portal
        .post(
            &format!("/portal/webhooks/{id}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &acme.key).await["status"],
        "disabled"
    );
    portal
        .post(
            &format!("/portal/webhooks/{id}/status"),
            &[("status", "active")],
        )
        .await;
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &acme.key).await["status"],
        "active"
    );

    // Health draws its charts from the attempts.
    let health = portal.get(&format!("/portal/webhooks/{id}/health")).await;
    assert_eq!(health.status, 200);
    assert!(
        health.body.contains("<svg") && health.body.contains("class=\"bar\""),
        "{}",
        health.body
    );
    assert!(health.body.contains("100.0 %"), "{}", health.body);

    // The callback URL.
    let set = portal
        .post(
            "/portal/callback",
            &[("callback_url", &receiver.url("/cb"))],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.body);
    let me = app.get("/v1/me/callback-url", &acme.key).await;
    assert_eq!(me["callback_url"], receiver.url("/cb"));

    // Jobs and their events.
    let job = finished_job(&app, &acme).await;
    let jobs = portal.get("/portal/jobs").await;
    assert!(jobs.body.contains(&job));
    let job_page = portal.get(&format!("/portal/jobs/{job}")).await;
    assert!(job_page.body.contains("tts.queued") && job_page.body.contains("tts.completed"));

    // Delete.
    let deleted = portal
        .post(&format!("/portal/webhooks/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, 303);
    let (status, _) = app
        .call("GET", &format!("/v1/webhooks/{id}"), Some(&acme.key), None)
        .await;
    assert_eq!(status, 404);
}

async fn another_accounts_ids_are_not_found_on_every_portal_url(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let (acme, bob) = (
        app.create_account("Acme").await,
        app.create_account("Bob").await,
    );
    let theirs = app
        .create_webhook(
            &bob,
            json!({ "url": receiver.url("/bob"), "events": ["*"] }),
        )
        .await;
    let wh = theirs["id"].as_str().unwrap().to_owned();
    let published = app
        .publish(&bob, "tts.completed", json!({ "job_id": "j1" }))
        .await;
    let dlv = app.first_delivery(&bob, &published).await;
    let job = finished_job(&app, &bob).await;
    // The event and the job's two status events, all delivered before Acme looks.
    receiver
        .wait_for(3, Some("/bob"), Duration::from_secs(10))
        .await;
    app.wait_for_status(&bob, &dlv, "succeeded", Duration::from_secs(10))
        .await;
    let secret_before = app
        .get(&format!("/v1/webhooks/{wh}/secret"), &bob.key)
        .await;

    let portal = Portal::open(&app, &acme).await;
    for path in [
        format!("/portal/webhooks/{wh}"),
        format!("/portal/webhooks/{wh}/secret"),
        format!("/portal/webhooks/{wh}/health"),
        format!("/portal/webhooks/{wh}/recover"),
        format!("/portal/deliveries/{dlv}"),
        format!("/portal/jobs/{job}"),
    ] {
        let page = portal.get(&path).await;
        assert_eq!(page.status, 404, "GET {path}: {}", page.body);
        assert!(!page.body.contains(receiver.url("/bob").as_str()), "{path}");
    }
    for (path, fields) in [
        (
            format!("/portal/webhooks/{wh}"),
            vec![("url", "http://127.0.0.1:9/x"), ("events", "*")],
        ),
        (
            format!("/portal/webhooks/{wh}/status"),
            vec![("status", "disabled")],
        ),
        (
            format!("/portal/webhooks/{wh}/test"),
            vec![("type", "webhook.test")],
        ),
        (
            format!("/portal/webhooks/{wh}/secret/rotate"),
            vec![("grace_period", "0s")],
        ),
        (format!("/portal/webhooks/{wh}/delete"), vec![]),
        (
            format!("/portal/webhooks/{wh}/recover"),
            vec![("since", "2000-01-01T00:00"), ("action", "recover")],
        ),
        (format!("/portal/deliveries/{dlv}/retry"), vec![]),
    ] {
        let page = portal.post(&path, &fields).await;
        assert_eq!(page.status, 404, "POST {path}: {}", page.body);
    }
    // Nothing of Bob's changed, and Acme's lists hold nothing of his.
    let after = app.get(&format!("/v1/webhooks/{wh}"), &bob.key).await;
    assert_eq!(
        (after["status"].as_str(), after["url"].as_str()),
        (Some("active"), theirs["url"].as_str())
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wh}/secret"), &bob.key)
            .await,
        secret_before
    );
    let detail = app.get(&format!("/v1/deliveries/{dlv}"), &bob.key).await;
    assert_eq!(
        detail["attempts"].as_array().unwrap().len(),
        1,
        "no retry was made"
    );
    for path in [
        "/portal".to_owned(),
        "/portal/deliveries".to_owned(),
        format!("/portal/deliveries?webhook={wh}"),
        format!(
            "/portal/deliveries?event={}",
            published["id"].as_str().unwrap()
        ),
        "/portal/jobs".to_owned(),
        "/portal/callback".to_owned(),
    ] {
        let page = portal.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        for id in [&wh, &dlv, &job] {
            assert!(!page.body.contains(id.as_str()), "{path} shows {id}");
        }
    }
}

/// The edit form sets a webhook's delivery order and rate limit (and clears the limit), as the
/// API would; a rate that is not a number is refused and changes nothing.
async fn the_edit_form_sets_the_delivery_order_and_the_rate_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let portal = Portal::open(&app, &acme).await;
    let hook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hook"), "events": ["tts.*"] }),
        )
        .await;
    let id = hook["id"].as_str().unwrap();
    let path = format!("/portal/webhooks/{id}");
    let url = receiver.url("/hook");
    let edit = |ordering: &'static str, rate: &'static str, burst: &'static str| {
        let url = url.clone();
        let path = path.clone();
        let portal = &portal;
        async move {
            portal
                .post(
                    &path,
                    &[
                        ("url", url.as_str()),
                        ("events", "tts.*"),
                        ("description", ""),
                        ("ordering", ordering),
                        ("rate_per_second", rate),
                        ("rate_burst", burst),
                    ],
                )
                .await
        }
    };
    let saved = edit("key", "50", "5").await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let api = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["ordering"], "key", "{api}");
    assert_eq!(
        api["rate_limit"],
        json!({ "per_second": 50.0, "burst": 5 }),
        "{api}"
    );
    let page = portal.get(&path).await;
    assert!(
        page.body.contains("50 a second, bursts of 5"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("value=\"key\" selected"),
        "{}",
        page.body
    );

    let refused = edit("fifo", "fast", "").await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("must be a number"),
        "{}",
        refused.body
    );
    let refused = edit("sideways", "", "").await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let api = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["ordering"], "key", "unchanged: {api}");

    let cleared = edit("none", "", "").await;
    assert_eq!(cleared.status, 303, "{}", cleared.body);
    let api = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["ordering"], "none", "{api}");
    assert!(api["rate_limit"].is_null(), "{api}");
}

/// The new-webhook form sets the delivery order and the rate limit too; a refused one keeps what
/// was typed and creates nothing.
async fn the_new_webhook_form_sets_the_delivery_order_and_the_rate_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let portal = Portal::open(&app, &acme).await;
    let new = portal.get("/portal/webhooks/new").await;
    assert!(new.body.contains("value=\"none\" selected"), "{}", new.body);
    let hook = receiver.url("/hook");
    let create = |ordering: &'static str, rate: &'static str, burst: &'static str| {
        let hook = hook.clone();
        let portal = &portal;
        async move {
            portal
                .post(
                    "/portal/webhooks",
                    &[
                        ("url", hook.as_str()),
                        ("events", "tts.*"),
                        ("ordering", ordering),
                        ("rate_per_second", rate),
                        ("rate_burst", burst),
                    ],
                )
                .await
        }
    };
    let refused = create("fifo", "12x", "3").await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("must be a number"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("value=\"fifo\" selected") && refused.body.contains("value=\"12x\""),
        "what was typed is kept: {}",
        refused.body
    );
    let no_rate = create("none", "", "4").await;
    assert_eq!(no_rate.status, 422, "{}", no_rate.body);
    assert!(
        no_rate
            .body
            .contains("a burst needs its deliveries per second"),
        "{}",
        no_rate.body
    );
    assert_eq!(app.get("/v1/webhooks", &acme.key).await["data"], json!([]));

    let created = create("fifo", "20", "4").await;
    assert_eq!(created.status, 303, "{}", created.body);
    let id = delivery_path(created.location())
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let api = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["ordering"], "fifo", "{api}");
    assert_eq!(
        api["rate_limit"],
        json!({ "per_second": 20.0, "burst": 4 }),
        "{api}"
    );
    // No rate given: none.
    let plain = create("none", "", "").await;
    assert_eq!(plain.status, 303, "{}", plain.body);
    let id = delivery_path(plain.location())
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let api = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(api["ordering"], "none", "{api}");
    assert!(api["rate_limit"].is_null(), "{api}");
}

on_both_backends!(
    the_new_webhook_form_sets_the_delivery_order_and_the_rate_limit,
    the_edit_form_sets_the_delivery_order_and_the_rate_limit,
    the_pages_manage_webhooks_end_to_end,
    another_accounts_ids_are_not_found_on_every_portal_url,
);
