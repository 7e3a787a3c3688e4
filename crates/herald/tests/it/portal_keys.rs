//! The portal's API keys page, through the real server on both backends: a key made there is
//! shown once and works on the API, the list shows only its first characters, revoking it
//! refuses it; another account's key is 404 and keeps working; a forged form makes nothing.

use crate::common::portal::Portal;
use crate::common::{Backend, TestApp};
use serde_json::Value;

/// The key a page shows in its "new key" field.
fn shown_key(body: &str) -> String {
    let marker = "id=\"new-key\" value=\"";
    let start = body.find(marker).unwrap_or_else(|| panic!("{body}")) + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

async fn status_with(app: &TestApp, key: &str) -> u16 {
    app.call("GET", "/v1/webhooks", Some(key), None)
        .await
        .0
        .as_u16()
}

async fn keys_are_made_once_listed_and_revoked_in_the_account_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (acme, bob) = (
        app.create_account("Acme").await,
        app.create_account("Bob").await,
    );
    let portal = Portal::open(&app, &acme).await;
    let before: Value = app.get("/v1/me/keys", &acme.key).await;
    let count = |v: &Value| v["data"].as_array().unwrap().len();

    let made = portal
        .post("/portal/keys", &[("name", "ci <deploy>")])
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let key = shown_key(&made.body);
    assert!(key.starts_with("hk_"), "{key}");
    assert_eq!(status_with(&app, &key).await, 200, "the key works");
    let list = portal.get("/portal/keys").await;
    assert!(!list.body.contains(&key), "the list never shows a key");
    assert!(list.body.contains(&key[..9]), "but its first characters");
    assert!(list.body.contains("ci &#60;deploy&#62;") || list.body.contains("ci &lt;deploy&gt;"));

    // Refused: a label too long, or a form without this session's token; nothing is made.
    let long = "x".repeat(101);
    let refused = portal.post("/portal/keys", &[("name", &long)]).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("role=\"alert\""));
    let forged = portal.post_raw("/portal/keys", &[("name", "forged")]).await;
    assert_eq!(forged.status, 403);
    let after: Value = app.get("/v1/me/keys", &acme.key).await;
    assert_eq!(count(&after), count(&before) + 1, "{after}");

    // Bob's key: 404, and it still works.
    let bobs: Value = app.get("/v1/me/keys", &bob.key).await;
    let bob_key_id = bobs["data"][0]["id"].as_str().unwrap().to_owned();
    let other = portal
        .post(&format!("/portal/keys/{bob_key_id}/revoke"), &[])
        .await;
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(status_with(&app, &bob.key).await, 200);
    let forged = portal
        .post_raw(&format!("/portal/keys/{bob_key_id}/revoke"), &[])
        .await;
    assert_eq!(forged.status, 403);

    // Revoking the new key refuses it from then on.
    let id = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci <deploy>")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = portal.post(&format!("/portal/keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(revoked.location(), "/portal/keys?done=revoked");
    assert_eq!(status_with(&app, &key).await, 401);
    assert_eq!(status_with(&app, &acme.key).await, 200, "the others stay");
}

on_both_backends!(keys_are_made_once_listed_and_revoked_in_the_account_only);
