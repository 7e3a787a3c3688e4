//! Webhook secrets at rest under `HERALD_SECRETS_KEY`: with a key every stored secret is
//! encrypted (checked on the raw columns), deliveries still verify with the secrets the API
//! shows, a server without the key (or with another) refuses to start on such a database, and a
//! database filled without a key is encrypted when the key is added.

use crate::common;

use common::{ADMIN, Backend, TestAccount, TestApp, TestEnv, TestReceiver, verify_with_python};
use herald::app::Herald;
use herald::config::Settings;
use herald::store::seal::SecretsKey;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const BEARER: &str = "bearer-token-at-rest-4c1e9a";
const HEADER_VALUE: &str = "header-value-at-rest-7b2d0f";
/// An ed25519 private key of the test's own: the API shows only its public half.
const ED25519_KEY: &str = "whsk_BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";

fn with_key(env: &TestEnv, key: &SecretsKey) -> Settings {
    Settings {
        secrets_key: Some(key.clone()),
        ..env.settings()
    }
}

/// Every stored secret value, read straight from the database: `(column, row, value)`.
async fn stored_secrets(env: &TestEnv) -> Vec<(String, String, String)> {
    let sql = "SELECT CAST('webhooks.secret' AS TEXT), id, secret FROM webhooks
        UNION ALL SELECT CAST('webhooks.previous_secret' AS TEXT), id, previous_secret FROM webhooks WHERE previous_secret IS NOT NULL
        UNION ALL SELECT CAST('webhooks.signing' AS TEXT), id, signing FROM webhooks
        UNION ALL SELECT CAST('accounts.signing_secret' AS TEXT), id, signing_secret FROM accounts WHERE signing_secret IS NOT NULL
        ORDER BY 1, 2";
    match env.backend {
        Backend::Sqlite => {
            let url = format!("{}?mode=ro", env.database_url);
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
        }
    }
}

/// Fails unless every stored secret is sealed and none holds any of `secrets` (nor their key
/// material without its `whsec_`/`whsk_` prefix).
fn assert_all_sealed(stored: &[(String, String, String)], secrets: &[&str]) {
    for (column, row, value) in stored {
        assert!(
            value.starts_with("enc1:"),
            "{column} of {row} is stored in plaintext: {value}"
        );
        for secret in secrets {
            let bare = secret.split_once('_').map_or(*secret, |(_, b)| b);
            assert!(
                !value.contains(secret) && !value.contains(bare),
                "{column} of {row} holds a secret"
            );
        }
    }
}

async fn secret_of(app: &TestApp, account: &TestAccount, webhook: &Value) -> Value {
    let id = webhook["id"].as_str().unwrap();
    app.get(&format!("/v1/webhooks/{id}/secret"), &account.key)
        .await
}

async fn set_callback(app: &TestApp, account: &TestAccount, url: String) -> String {
    let (status, body) = app
        .call(
            "PUT",
            "/v1/me/callback-url",
            Some(&account.key),
            Some(json!({ "callback_url": url })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.get("/v1/me/signing-secret", &account.key).await["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn with(mut case: Value, key: &str, value: &str) -> Value {
    case[key] = json!(value);
    case
}

/// Runs `herald serve` on `env`'s database without `HERALD_SECRETS_KEY` and returns what it
/// wrote to stderr; fails if it is still running after 20 s.
fn serve_without_key(env: &TestEnv) -> String {
    let dir = env.dir.path().join("cli");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
        ])
        .arg(&env.database_url)
        .arg("--data-dir")
        .arg(&dir)
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("herald starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald serve started without the key on an encrypted database");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn refusal(settings: Settings) -> String {
    match Herald::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    }
}

async fn with_a_key_every_stored_secret_is_encrypted_and_deliveries_verify(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let key = SecretsKey::generate();
    let mut app = TestApp::start(with_key(&env, &key)).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let hook = |path: &str, signing: Value| json!({ "url": receiver.url(path), "events": ["*"], "signing": signing });
    let hmac = app
        .create_webhook(&acme, hook("/hmac", json!({ "mode": "standard" })))
        .await;
    let mut ed_hook = hook("/ed25519", json!({ "mode": "ed25519" }));
    ed_hook["secret"] = json!(ED25519_KEY);
    let ed25519 = app.create_webhook(&acme, ed_hook).await;
    app.create_webhook(
        &acme,
        hook("/bearer", json!({ "mode": "bearer", "token": BEARER })),
    )
    .await;
    app.create_webhook(
        &acme,
        hook(
            "/header",
            json!({ "mode": "header", "name": "secret-key", "value": HEADER_VALUE }),
        ),
    )
    .await;
    set_callback(&app, &acme, receiver.url("/callback-before")).await;
    // Set again: the existing callback webhook is updated in place, its signing column resealed.
    let account_secret = set_callback(&app, &acme, receiver.url("/callback")).await;
    let old = secret_of(&app, &acme, &hmac).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let ed_keys = secret_of(&app, &acme, &ed25519).await;
    let (status, rotated) = app
        .call(
            "POST",
            &format!(
                "/v1/webhooks/{}/secret/rotate",
                hmac["id"].as_str().unwrap()
            ),
            Some(&acme.key),
            Some(json!({ "grace_period": "1h" })),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();

    app.publish(&acme, "tts.completed", json!({ "id": "tts-1" }))
        .await;
    let got = receiver.wait_for(5, None, WAIT).await;
    let at = |p: &str| got.iter().find(|r| r.path == p).unwrap().clone();
    let hmac_case = at("/hmac").signed_case();
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([
            with(hmac_case.clone(), "secret", &old),
            with(hmac_case, "secret", &new),
            with(at("/callback").signed_case(), "secret", &account_secret),
        ]),
    );
    verify_with_python(
        "verify_ed25519.py",
        &json!([with(
            at("/ed25519").signed_case(),
            "public_key",
            ed_keys["public_key"].as_str().unwrap()
        )]),
    );
    assert_eq!(
        at("/bearer").header("authorization"),
        format!("Bearer {BEARER}")
    );
    assert_eq!(at("/header").header("secret-key"), HEADER_VALUE);

    let stored = stored_secrets(&env).await;
    // Five webhooks (each with a secret and a signing mode), one previous secret, the account's.
    assert_eq!(stored.len(), 12, "{stored:?}");
    assert_all_sealed(
        &stored,
        &[
            &old,
            &new,
            &account_secret,
            ED25519_KEY,
            BEARER,
            HEADER_VALUE,
        ],
    );
    app.stop().await;

    // Without the key, or with another one, the server refuses to start and says why.
    for settings in [env.settings(), with_key(&env, &SecretsKey::generate())] {
        let message = refusal(settings).await;
        assert!(message.contains("HERALD_SECRETS_KEY"), "{message}");
    }
    let stderr = serve_without_key(&env);
    assert!(
        stderr.contains("HERALD_SECRETS_KEY is not set"),
        "herald serve names the missing key: {stderr}"
    );

    // With the key it starts again and signs with the same secrets.
    let app = TestApp::start(with_key(&env, &key)).await;
    app.publish(&acme, "tts.completed", json!({ "id": "tts-2" }))
        .await;
    let again = receiver.wait_for(2, Some("/hmac"), WAIT).await;
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([with(again[1].signed_case(), "secret", &new)]),
    );
    assert_eq!(stored_secrets(&env).await, stored, "nothing to re-encrypt");
}

async fn plaintext_secrets_are_encrypted_when_the_key_is_added(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let receiver = TestReceiver::start().await;
    let mut app = TestApp::start(env.settings()).await;
    let acme = app.create_account("Acme").await;
    let hmac = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hmac"), "events": ["*"] }),
        )
        .await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/bearer"), "events": ["*"],
                "signing": { "mode": "bearer", "token": BEARER } }),
    )
    .await;
    let account_secret = set_callback(&app, &acme, receiver.url("/callback")).await;
    let secret = secret_of(&app, &acme, &hmac).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;
    let plain = stored_secrets(&env).await;
    assert!(
        plain.iter().all(|(_, _, v)| !v.starts_with("enc1:"))
            && plain.iter().any(|(_, _, v)| *v == secret),
        "without a key secrets are stored as they are: {plain:?}"
    );

    let key = SecretsKey::generate();
    let mut app = TestApp::start(with_key(&env, &key)).await;
    let sealed = stored_secrets(&env).await;
    assert_eq!(sealed.len(), plain.len());
    assert_all_sealed(&sealed, &[&secret, &account_secret, BEARER]);
    app.stop().await;

    // The pass is done once: a second start with the key leaves the sealed values as they are.
    let app = TestApp::start(with_key(&env, &key)).await;
    assert_eq!(stored_secrets(&env).await, sealed);
    app.publish(&acme, "stt.completed", json!({ "id": "stt-1" }))
        .await;
    let got = receiver.wait_for(3, None, WAIT).await;
    let at = |p: &str| got.iter().find(|r| r.path == p).unwrap().clone();
    verify_with_python(
        "verify_standardwebhooks.py",
        &json!([
            with(at("/hmac").signed_case(), "secret", &secret),
            with(at("/callback").signed_case(), "secret", &account_secret),
        ]),
    );
    assert_eq!(
        at("/bearer").header("authorization"),
        format!("Bearer {BEARER}")
    );
}

on_both_backends!(
    with_a_key_every_stored_secret_is_encrypted_and_deliveries_verify,
    plaintext_secrets_are_encrypted_when_the_key_is_added,
);
