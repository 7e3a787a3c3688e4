//! Per-credential request rate limits: 429 with `Retry-After` and the JSON error once a key's
//! burst is spent, other credentials unaffected, the key let through again after the advertised
//! wait, and nothing written for a refused request.

use crate::common;

use common::{ADMIN, Backend, TestApp, eventually};
use herald::config::RateLimit;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What one request got back.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

async fn send(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").map(|v| {
        v.to_str()
            .unwrap()
            .parse()
            .expect("Retry-After is whole seconds")
    });
    let text = resp.text().await.unwrap();
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Sends requests made by `request(i)` until one is refused; returns the answers.
async fn until_refused<F, Fut>(mut request: F) -> Vec<Answer>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut answers = Vec::new();
    for i in 0..100 {
        let a = request(i).await;
        let refused = a.status == StatusCode::TOO_MANY_REQUESTS;
        answers.push(a);
        if refused {
            return answers;
        }
    }
    panic!("100 requests in a row were all let through a limit of 5/s");
}

fn assert_refusal(a: &Answer) -> Duration {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.body["error"]["code"], "rate_limited", "{}", a.body);
    assert!(a.body["error"]["message"].is_string(), "{}", a.body);
    let secs = a.retry_after.expect("a 429 carries Retry-After");
    assert!(secs >= 1, "Retry-After is at least one second");
    Duration::from_secs(secs)
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_while_other_keys_go_on() {
    let five = RateLimit {
        per_second: 5,
        burst: Some(5),
    };
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.api.rate_limit = five;
        s.api.admin_rate_limit = five;
    })
    .await;
    let a = app.create_account("a").await;
    let b = app.create_account("b").await;

    // Bad credentials are 401s however many come: they never reach a bucket.
    for _ in 0..20 {
        let bad = send(&app, "GET", "/v1/webhooks", "not-a-key", None).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    }

    // Key A spends its burst on writes; the refused one creates nothing.
    let started = Instant::now();
    let answers = until_refused(|i| {
        let body = json!({ "url": format!("http://127.0.0.1:9/hook/{i}"), "events": ["*"] });
        send(&app, "POST", "/v1/webhooks", &a.key, Some(body))
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (refused, let_through) = answers.split_last().unwrap();
    assert!(let_through.iter().all(|x| x.status == StatusCode::CREATED));
    assert!(
        let_through.len() >= 5 && (let_through.len() as f64) <= 5.0 + 5.0 * elapsed + 1.0,
        "{} requests let through in {elapsed:.2}s with a burst of 5 at 5/s",
        let_through.len()
    );
    let wait = assert_refusal(refused);

    // At the same moment, key B of another account is let through.
    let other = send(&app, "GET", "/v1/webhooks", &b.key, None).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);

    // After the advertised wait, key A is let through again, and it sees exactly the webhooks
    // its accepted requests made.
    tokio::time::sleep(wait).await;
    let listed = eventually(
        "key A to be let through again",
        Duration::from_secs(10),
        || async {
            let x = send(&app, "GET", "/v1/webhooks?limit=200", &a.key, None).await;
            (x.status == StatusCode::OK).then_some(x.body)
        },
    )
    .await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        let_through.len(),
        "the refused POST left no webhook behind: {listed}"
    );

    // The admin token has a bucket of its own: a refused publish stores no event.
    let answers = until_refused(|i| {
        let body = json!({ "account": a.id, "type": "tts.completed", "data": { "n": i } });
        send(&app, "POST", "/v1/events", ADMIN, Some(body))
    })
    .await;
    let (refused, published) = answers.split_last().unwrap();
    assert!(published.iter().all(|x| x.status == StatusCode::ACCEPTED));
    let wait = assert_refusal(refused);
    tokio::time::sleep(wait).await;
    let events = eventually(
        "the admin token to be let through again",
        Duration::from_secs(10),
        || async {
            let path = format!("/v1/events?account={}&limit=200", a.id);
            let x = send(&app, "GET", &path, ADMIN, None).await;
            (x.status == StatusCode::OK).then_some(x.body)
        },
    )
    .await;
    let stored: Vec<i64> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(stored.len(), published.len(), "{events}");
    assert!(
        !stored.contains(&(published.len() as i64)),
        "the refused publish left no event: {stored:?}"
    );

    let metrics = app.metrics_text().await;
    let refusals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_requests_rate_limited_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refusal counter in {metrics}"));
    assert!(refusals >= 2, "{metrics}");
}
