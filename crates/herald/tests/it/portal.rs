//! The customer portal's doors, through the real server on both backends: one-time links
//! (opened by their page's button, so fetching one uses nothing up; used once, expiring,
//! saying why they open nothing), sessions (cookie flags, expiry, sign out), CSRF refusal that
//! writes nothing, and the security headers of every answer. What the pages do, and that no
//! page shows another account's data, is `portal_pages.rs` (and `portal_recover.rs`).

use crate::common::portal::{Portal, get_bare, open_bare, portal_link};
use crate::common::{ADMIN, Backend, TestApp, eventually};
use herald::domain::duration::HumanDuration;
use serde_json::json;
use std::time::Duration;

/// Waits until the clock has passed an RFC 3339 moment the server named (the test waits for
/// time itself, not for the server).
async fn wait_past(moment: &str) {
    let at = time::OffsetDateTime::parse(moment, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let left = at - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs() + Duration::from_millis(50)).await;
    }
}

async fn a_link_opens_one_session_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let link = portal_link(&app, &acme).await;
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&app.url("/portal/open/hpl_")),
        "the link is made from the request's host: {url}"
    );
    assert!(link["expires_at"].is_string(), "{link}");

    // Fetching the link (a chat app's preview, a mail scanner) shows its button and uses
    // nothing up: it sets no cookie, however often.
    for _ in 0..3 {
        let preview = get_bare(url).await;
        assert_eq!(preview.status, 200, "{}", preview.body);
        assert!(preview.body.contains("Open the portal"), "{}", preview.body);
        assert!(preview.headers.get("set-cookie").is_none());
    }
    // A button another site's page pressed (the browser says so) is refused and uses nothing.
    let forged = reqwest::Client::new()
        .post(url)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());

    let opened = open_bare(url).await;
    assert_eq!(opened.status, 303);
    assert_eq!(opened.location(), "/portal");
    let cookie = opened.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("herald_portal=hps_"), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/portal", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure in --dev: {cookie}");

    // Reused: refused with a page saying so, and no cookie.
    // Its page says so at once, and so does its button.
    for again in [get_bare(url).await, open_bare(url).await] {
        assert_eq!(again.status, 410, "{}", again.body);
        assert!(again.body.contains("already used"), "{}", again.body);
        assert!(!again.body.contains("Open the portal"), "{}", again.body);
        assert!(again.headers.get("set-cookie").is_none());
    }
    // A made-up or mangled link.
    for bad in ["hpl_nothing", "hps_x", "x"] {
        let page = open_bare(&app.url(&format!("/portal/open/{bad}"))).await;
        assert_eq!(page.status, 404, "{bad}: {}", page.body);
        assert!(page.body.contains("not valid"), "{}", page.body);
        assert!(page.headers.get("set-cookie").is_none());
    }
    for bad in ["hpl_nothing", "hps_x"] {
        let page = get_bare(&app.url(&format!("/portal/open/{bad}"))).await;
        assert_eq!(page.status, 404, "{bad}: {}", page.body);
        assert!(page.body.contains("not valid"), "{}", page.body);
    }

    // Only the admin makes links, for an account that exists.
    let (status, _) = app
        .call(
            "POST",
            &format!("/v1/accounts/{}/portal-sessions", acme.id),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .call(
            "POST",
            "/v1/accounts/acc_0193e5c4a1b27c3d8e9f0a1b2c3d4e5f/portal-sessions",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // The session the first opening started works.
    let portal = Portal::open(&app, &acme).await;
    let home = portal.get("/portal").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("<h1>Webhooks</h1>"), "{}", home.body);
}

async fn links_and_sessions_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.portal.link_lifetime = HumanDuration(Duration::from_secs(1));
        s.portal.session_lifetime = HumanDuration(Duration::from_secs(2));
        s.retention.interval = HumanDuration(Duration::from_millis(100));
        s.portal.public_url = Some("https://hooks.example.com".to_owned());
    })
    .await;
    let acme = app.create_account("Acme").await;
    let link = portal_link(&app, &acme).await;
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://hooks.example.com/portal/open/hpl_"),
        "portal.public_url makes the link: {url}"
    );
    wait_past(link["expires_at"].as_str().unwrap()).await;
    let path = &url["https://hooks.example.com".len()..];
    for late in [
        get_bare(&app.url(path)).await,
        open_bare(&app.url(path)).await,
    ] {
        assert_eq!(late.status, 410, "{}", late.body);
        assert!(late.body.contains("expired"), "{}", late.body);
        assert!(late.headers.get("set-cookie").is_none());
    }

    // A session ends after its lifetime, and the pages say so.
    let fresh = portal_link(&app, &acme).await;
    let fresh_path = &fresh["url"].as_str().unwrap()["https://hooks.example.com".len()..];
    let portal = Portal::open_link(&app, &app.url(fresh_path)).await;
    assert_eq!(portal.get("/portal").await.status, 200);
    let ends = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    wait_past(
        &ends
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    )
    .await;
    let ended = portal.get("/portal").await;
    assert_eq!(ended.status, 401, "{}", ended.body);
    assert!(ended.body.contains("session has ended"), "{}", ended.body);
    // The janitor deletes it (expired links it keeps a day, to say "expired" above).
    let series = "herald_pruned_total{kind=\"portal_sessions\"} ";
    eventually(
        "the janitor to prune the session",
        Duration::from_secs(10),
        || async {
            let text = app.metrics_text().await;
            let n = text.lines().find_map(|l| l.strip_prefix(series))?;
            (n.trim().parse::<f64>().unwrap() >= 1.0).then_some(())
        },
    )
    .await;
}

async fn pages_need_a_session_and_sign_out_ends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    for path in [
        "/portal",
        "/portal/deliveries",
        "/portal/jobs",
        "/portal/callback",
    ] {
        let page = get_bare(&app.url(path)).await;
        assert_eq!(page.status, 401, "{path}");
        assert!(page.body.contains("session has ended"), "{path}");
    }
    let portal = Portal::open(&app, &acme).await;
    let forged = portal.with_cookie("herald_portal=hps_forged");
    assert_eq!(forged.get("/portal").await.status, 401);
    let out = portal.post("/portal/logout", &[]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(portal.get("/portal").await.status, 401);
}

async fn forms_without_the_csrf_token_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let portal = Portal::open(&app, &acme).await;
    let other_session = Portal::open(&app, &acme).await;
    let their_token = other_session.get("/portal").await.csrf();
    let fields = [("url", "http://127.0.0.1:9/hook"), ("events", "*")];
    for csrf in [None, Some(""), Some("0000"), Some(their_token.as_str())] {
        let mut sent = fields.to_vec();
        if let Some(c) = csrf {
            sent.push(("csrf", c));
        }
        let refused = portal.post_raw("/portal/webhooks", &sent).await;
        assert_eq!(refused.status, 403, "{csrf:?}: {}", refused.body);
        assert!(
            refused.body.contains("nothing was changed"),
            "{}",
            refused.body
        );
    }
    let listed = app.get("/v1/webhooks", &acme.key).await;
    assert_eq!(listed["data"], json!([]), "a refused form wrote nothing");

    // The same form with the page's token is accepted.
    let created = portal.post("/portal/webhooks", &fields).await;
    assert_eq!(created.status, 303, "{}", created.body);
    assert!(created.location().ends_with("?done=created"));
    let listed = app.get("/v1/webhooks", &acme.key).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // A refused change to it writes nothing either.
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let refused = portal
        .post_raw(
            &format!("/portal/webhooks/{id}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(refused.status, 403);
    let shown = app.get(&format!("/v1/webhooks/{id}"), &acme.key).await;
    assert_eq!(shown["status"], "active");
}

async fn every_answer_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.portal.frame_ancestors = vec!["https://dashboard.example.com".to_owned()];
        s.portal.logo_url = Some("https://cdn.example.com/logo.svg".to_owned());
    })
    .await;
    let acme = app.create_account("Acme").await;
    let portal = Portal::open(&app, &acme).await;
    for path in [
        "/portal",
        "/portal/webhooks/new",
        "/portal/deliveries",
        "/portal/jobs",
        "/portal/callback",
        "/portal/nowhere",
        "/portal/webhooks/wh_0193e5c4a1b27c3d8e9f0a1b2c3d4e5f",
    ] {
        let page = portal.get(path).await;
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "style-src 'self'",
            "img-src 'self' data: https://cdn.example.com",
            "form-action 'self'",
            "frame-ancestors https://dashboard.example.com",
        ] {
            assert!(csp.contains(part), "{path}: {part} in {csp}");
        }
        assert!(
            !csp.contains("script-src"),
            "no script is allowed at all: {csp}"
        );
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(!page.body.contains("<script"), "{path}");
        assert!(!page.body.contains(" style="), "{path}: no inline style");
        assert!(
            page.body.len() < 100_000,
            "{path}: {} bytes",
            page.body.len()
        );
    }
    assert_eq!(portal.get("/portal/nowhere").await.status, 404);

    // By default nobody may frame it.
    let plain = TestApp::spawn(backend).await;
    let bob = plain.create_account("Bob").await;
    let page = Portal::open(&plain, &bob).await.get("/portal").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let css = get_bare(&plain.url("/portal/assets/portal.css")).await;
    assert_eq!(css.status, 200);
    assert!(
        css.body.starts_with(":root{--primary:#1d4ed8;"),
        "{}",
        &css.body[..80]
    );
}

on_both_backends!(
    a_link_opens_one_session_once,
    links_and_sessions_expire,
    pages_need_a_session_and_sign_out_ends_it,
    forms_without_the_csrf_token_change_nothing,
    every_answer_carries_the_security_headers,
);
