//! API keys: an account makes its own, lists them (never the key), and revokes one, which is
//! refused from the next request on, on every node; the operator does the same for any account.

use crate::common;

use common::{ADMIN, Backend, TestApp, TestEnv, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn status_with(app: &TestApp, key: &str) -> StatusCode {
    app.call("GET", "/v1/webhooks", Some(key), None).await.0
}

async fn keys_of(app: &TestApp, path: &str, token: &str) -> Vec<Value> {
    let (status, list) = app.call("GET", path, Some(token), None).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

async fn an_account_makes_lists_and_revokes_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let other = app.create_account("Other").await;

    let (status, made) = app
        .call(
            "POST",
            "/v1/me/keys",
            Some(&acme.key),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let second = made["key"].as_str().unwrap().to_owned();
    assert!(second.starts_with("hk_") && second != acme.key);
    assert_eq!(made["name"], "ci");
    assert_eq!(made["prefix"], &second[..9]);
    assert_eq!(made["account"], acme.id.as_str());
    assert_eq!(status_with(&app, &second).await, 200, "works at once");

    // The list shows both keys by id, label and first characters, never a key.
    let listed = keys_of(&app, "/v1/me/keys", &second).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let text = serde_json::to_string(&listed).unwrap();
    for key in [&acme.key, &second] {
        assert!(
            !text.contains(key.as_str()) && !text.contains(&key[3..]),
            "{text}"
        );
    }
    assert_eq!(listed[0]["id"], made["id"], "newest first");
    assert_eq!(listed[1]["name"], "first key");
    assert_eq!(listed[1]["prefix"], &acme.key[..9]);
    assert!(listed.iter().all(|k| k["revoked_at"].is_null()));
    // Each key's use is written down (beside the request, so the list may lag a moment).
    eventually("both keys' last use to be noted", WAIT, || async {
        let listed = keys_of(&app, "/v1/me/keys", &second).await;
        listed
            .iter()
            .all(|k| k["last_used_at"].is_string())
            .then_some(())
    })
    .await;

    // Another account cannot see or revoke these keys.
    let first_id = listed[1]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/me/keys/{first_id}"),
            Some(&other.key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(keys_of(&app, "/v1/me/keys", &other.key).await.len(), 1);
    assert_eq!(status_with(&app, &acme.key).await, 200);

    // Revoking the first key: refused from the next request on; revoking again is no error.
    let revoke = format!("/v1/me/keys/{first_id}");
    let (status, body) = app.call("DELETE", &revoke, Some(&second), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(status_with(&app, &acme.key).await, 401);
    assert_eq!(status_with(&app, &second).await, 200);
    let (status, _) = app.call("DELETE", &revoke, Some(&second), None).await;
    assert_eq!(status, 204);
    let listed = keys_of(&app, "/v1/me/keys", &second).await;
    assert!(listed[1]["revoked_at"].is_string(), "{listed:?}");
    assert!(listed[0]["revoked_at"].is_null());
    let (status, _) = app
        .call("DELETE", "/v1/me/keys/key_nonesuch", Some(&second), None)
        .await;
    assert_eq!(status, 404);

    // Bad labels.
    for name in ["x".repeat(101), "tab\there".to_owned()] {
        let (status, err) = app
            .call(
                "POST",
                "/v1/me/keys",
                Some(&second),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["error"]["field"], "name");
    }
    // A key made with no body has no label.
    let (status, unnamed) = app.call("POST", "/v1/me/keys", Some(&second), None).await;
    assert_eq!(status, 201, "{unnamed}");
    assert_eq!(unnamed["name"], "");
}

async fn the_operator_manages_any_accounts_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_account("Acme").await;
    let path = format!("/v1/accounts/{}/keys", acme.id);

    let (status, _) = app.call("POST", &path, Some(&acme.key), None).await;
    assert_eq!(
        status, 403,
        "an account key cannot use the operator's route"
    );
    let (status, made) = app
        .call("POST", &path, Some(ADMIN), Some(json!({ "name": "ops" })))
        .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&app, &key).await, 200);
    assert_eq!(keys_of(&app, &path, ADMIN).await.len(), 2);

    // On /v1/me/keys the operator names the account.
    let (status, err) = app.call("POST", "/v1/me/keys", Some(ADMIN), None).await;
    assert_eq!(status, 422, "{err}");
    let mine = keys_of(&app, &format!("/v1/me/keys?account={}", acme.id), ADMIN).await;
    assert_eq!(mine.len(), 2);

    let (status, _) = app
        .call(
            "DELETE",
            &format!("{path}/{}", made["id"].as_str().unwrap()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(status_with(&app, &key).await, 401);
    assert_eq!(status_with(&app, &acme.key).await, 200);

    let (status, _) = app
        .call("POST", "/v1/accounts/acct_nonesuch/keys", Some(ADMIN), None)
        .await;
    assert_eq!(status, 404);
}

/// Two nodes on one PostgreSQL: a key made on one works on the other at once, and once
/// revoked on one it is refused by the other from the next request on.
#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_by_another_at_once() {
    let env = TestEnv::new(Backend::Postgres).await;
    let node = |name: &str| {
        let mut settings = env.settings();
        settings.data_dir = env.dir.path().join(name);
        std::fs::create_dir_all(&settings.data_dir).unwrap();
        settings
    };
    let a = TestApp::start(node("a")).await;
    let b = TestApp::start(node("b")).await;
    let acme = a.create_account("Acme").await;
    let (status, made) = a.call("POST", "/v1/me/keys", Some(&acme.key), None).await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap();
    assert_eq!(status_with(&b, key).await, 200);
    let revoke = format!("/v1/me/keys/{}", made["id"].as_str().unwrap());
    let (status, _) = a.call("DELETE", &revoke, Some(&acme.key), None).await;
    assert_eq!(status, 204);
    assert_eq!(status_with(&b, key).await, 401);
    assert_eq!(status_with(&a, key).await, 401);
    assert_eq!(status_with(&b, &acme.key).await, 200);
}

on_both_backends!(
    an_account_makes_lists_and_revokes_its_keys,
    the_operator_manages_any_accounts_keys
);
