//! `herald verify`, the built binary on a delivery captured from a real server: a good capture
//! exits 0; a wrong secret, a changed body, a stale timestamp, a missing header and a malformed
//! signature each exit non-zero naming the cause.

use crate::common::{Backend, TestApp, TestReceiver};
use herald::domain::SigningSecret;
use serde_json::json;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A delivery as a receiver captured it.
struct Capture {
    secret: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Capture {
    fn with_header(&self, name: &str, value: Option<&str>) -> Vec<(String, String)> {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, _)| n != name)
            .cloned()
            .collect();
        if let Some(v) = value {
            headers.push((name.to_owned(), v.to_owned()));
        }
        headers
    }
}

/// One real delivery, signed by the server with the webhook's secret.
async fn captured() -> Capture {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("acme").await;
    let webhook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hooks"), "events": ["tts.*"] }),
        )
        .await;
    app.publish(
        &acme,
        "tts.completed",
        json!({ "id": "tts-1", "text": "a, b: c", "duration": 2.5 }),
    )
    .await;
    let r = receiver
        .wait_for(1, None, Duration::from_secs(10))
        .await
        .remove(0);
    let id = webhook["id"].as_str().unwrap();
    let secret = app
        .get(&format!("/v1/webhooks/{id}/secret"), &acme.key)
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let headers = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    Capture {
        secret,
        headers,
        body: r.body.to_vec(),
    }
}

async fn verify(key: &[&str], headers: &[(String, String)], body: &[u8]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("verify").args(key);
    for (n, v) in headers {
        cmd.args(["--header", &format!("{n}: {v}")]);
    }
    run(cmd, body).await
}

async fn run(mut cmd: tokio::process::Command, body: &[u8]) -> Output {
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

fn says(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Refused, with `what` in the message.
fn refused(out: &Output, what: &str) {
    assert!(!out.status.success(), "accepted: {}", says(out));
    assert!(
        says(out).contains(what),
        "expected {what:?} in: {}",
        says(out)
    );
}

/// The JSON re-indented by a tool that keeps the keys in order: a newline and indent after
/// `{` and `,`, a space after `:`, outside strings, and a final newline.
fn reindented(body: &[u8]) -> Vec<u8> {
    let (mut out, mut in_string, mut escaped) = (Vec::new(), false, false);
    for &b in body {
        out.push(b);
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b',' => out.extend_from_slice(b"\n  "),
            b':' => out.push(b' '),
            _ => {}
        }
    }
    out.push(b'\n');
    out
}

#[tokio::test]
async fn verify_accepts_a_good_capture_and_names_each_failure() {
    let c = captured().await;
    let key = ["--secret", c.secret.as_str()];
    let out = verify(&key, &c.headers, &c.body).await;
    assert!(out.status.success(), "{}", says(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "signature valid"
    );

    // The headers from a file: a raw HTTP capture, request line, head and body.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.http");
    let lines: String = c
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let head = format!("POST /hooks HTTP/1.1\r\n{lines}\r\n");
    std::fs::write(&file, [head.as_bytes(), &c.body].concat()).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["verify", "--secret", &c.secret, "--headers"])
        .arg(&file);
    let out = run(cmd, &c.body).await;
    assert!(out.status.success(), "{}", says(&out));

    // A wrong secret.
    let wrong = SigningSecret::generate();
    let out = verify(&["--secret", wrong.expose()], &c.headers, &c.body).await;
    refused(&out, "no signature matches this body under this key");
    refused(&out, "the key is wrong, or the body was changed");

    // A changed body: the usual changes are named.
    refused(
        &verify(&key, &c.headers, &[c.body.as_slice(), b"\n"].concat()).await,
        "a trailing newline was added",
    );
    refused(
        &verify(&key, &c.headers, &reindented(&c.body)).await,
        "its JSON was re-formatted",
    );
    let edited = String::from_utf8(c.body.clone())
        .unwrap()
        .replace("tts-1", "tts-2");
    refused(
        &verify(&key, &c.headers, edited.as_bytes()).await,
        "no signature matches",
    );

    // A stale timestamp, signed properly: said, with by how much and that it would match.
    let secret = SigningSecret::parse(&c.secret).unwrap();
    let old = herald::domain::Timestamp::now().unix_seconds() - 3 * 3600 - 60;
    let id = c
        .headers
        .iter()
        .find(|(n, _)| n == "webhook-id")
        .unwrap()
        .1
        .clone();
    let mut stale_headers = c.with_header("webhook-timestamp", Some(&old.to_string()));
    stale_headers.retain(|(n, _)| n != "webhook-signature");
    stale_headers.push(("webhook-signature".into(), secret.sign(&id, old, &c.body)));
    let out = verify(&key, &stale_headers, &c.body).await;
    refused(&out, "stale timestamp");
    refused(&out, "3h 1m");
    refused(&out, "the signature itself matches this body");
    let out = verify(
        &["--secret", &c.secret, "--tolerance", "4h"],
        &stale_headers,
        &c.body,
    )
    .await;
    assert!(out.status.success(), "{}", says(&out));

    // A missing header, and malformed signatures.
    refused(
        &verify(&key, &c.with_header("webhook-signature", None), &c.body).await,
        "missing header webhook-signature",
    );
    refused(
        &verify(&key, &c.with_header("webhook-id", None), &c.body).await,
        "missing header webhook-id",
    );
    let cases = [
        ("v1,***", "is not valid base64"),
        ("v1,c2hvcnQ=", "5 bytes long"),
        (
            "K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            "has no version",
        ),
        (
            "v1a,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            "32 bytes long; an ed25519 signature is 64",
        ),
    ];
    for (signature, what) in cases {
        let out = verify(
            &key,
            &c.with_header("webhook-signature", Some(signature)),
            &c.body,
        )
        .await;
        refused(&out, "malformed webhook-signature");
        refused(&out, what);
    }
    refused(
        &verify(
            &key,
            &c.with_header("webhook-timestamp", Some("soon")),
            &c.body,
        )
        .await,
        "malformed webhook-timestamp",
    );
}

#[tokio::test]
async fn verify_checks_ed25519_signatures_with_the_public_key() {
    let secret = SigningSecret::generate_ed25519();
    let public = secret.public_key().unwrap();
    let now = herald::domain::Timestamp::now().unix_seconds();
    let body =
        br#"{"type":"voice.ready","timestamp":"2026-04-23T10:12:03Z","data":{"id":"voice-1"}}"#;
    let headers = vec![
        (
            "webhook-id".to_owned(),
            "dlv_0193a8f2c1d47e5b9a3c6d2e8f104b7a".to_owned(),
        ),
        ("webhook-timestamp".to_owned(), now.to_string()),
        (
            "webhook-signature".to_owned(),
            secret.sign("dlv_0193a8f2c1d47e5b9a3c6d2e8f104b7a", now, body),
        ),
    ];
    let out = verify(&["--public-key", &public], &headers, body).await;
    assert!(out.status.success(), "{}", says(&out));
    let hmac = SigningSecret::generate();
    refused(
        &verify(&["--secret", hmac.expose()], &headers, body).await,
        "no v1 signature",
    );
    refused(
        &verify(&["--public-key", &public], &headers, b"{}").await,
        "no signature matches",
    );
}
