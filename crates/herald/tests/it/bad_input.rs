//! Bad input: each malformed request answers its status with the JSON error (naming the field
//! where one applies) and leaves nothing written; without --dev, http:// URLs and loopback or
//! private targets are refused with 422.

use crate::common;

use common::Backend;

use axum::http::StatusCode;
use common::{ADMIN, TestAccount, TestApp, TestReceiver};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const BODY_LIMIT: usize = 4096;
const NO_SUCH_ACCOUNT: &str = "acc_00000000000000000000000000000000";

#[derive(Clone, Copy)]
enum Cred {
    Admin,
    Key,
}

/// One malformed request and the error it must get.
struct Case {
    method: &'static str,
    path: String,
    cred: Cred,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(method: &'static str, path: impl Into<String>, cred: Cred, body: Option<String>) -> Case {
    Case {
        method,
        path: path.into(),
        cred,
        body,
        headers: Vec::new(),
        status: StatusCode::OK,
        code: "",
        field: None,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
    fn malformed(self) -> Self {
        self.answers(StatusCode::BAD_REQUEST, "malformed_request", None)
    }
    fn too_large(self) -> Self {
        self.answers(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
    }
    fn invalid(self, field: &'static str) -> Self {
        self.answers(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            Some(field),
        )
    }
    /// Well-formed JSON of the wrong shape: 422 naming no field.
    fn not_an_object(self) -> Self {
        self.answers(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", None)
    }
    fn not_found(self) -> Self {
        self.answers(StatusCode::NOT_FOUND, "not_found", None)
    }
    fn not_allowed(self) -> Self {
        self.answers(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
    }
    fn answers(
        mut self,
        status: StatusCode,
        code: &'static str,
        field: Option<&'static str>,
    ) -> Self {
        (self.status, self.code, self.field) = (status, code, field);
        self
    }
}

/// Sends a case and checks the status and the `{"error": {code, message, field?}}` body;
/// returns what differs.
async fn check(app: &TestApp, account: &TestAccount, c: &Case) -> Option<String> {
    let token = match c.cred {
        Cred::Admin => ADMIN,
        Cred::Key => account.key.as_str(),
    };
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = app
        .call_raw(c.method, &c.path, Some(token), c.body.as_deref(), &headers)
        .await;
    let error = &body["error"];
    let got = (
        status,
        error["code"].as_str(),
        error.get("field").and_then(Value::as_str),
    );
    let has_message = error["message"].as_str().is_some_and(|m| !m.is_empty());
    if got == (c.status, Some(c.code), c.field) && has_message {
        return None;
    }
    let shown: String = c.body.as_deref().unwrap_or("").chars().take(100).collect();
    Some(format!(
        "{} {} {shown:?}\n    want {} {} field={:?}\n    got  {status} {body}",
        c.method, c.path, c.status, c.code, c.field
    ))
}

/// A dev server with a small body limit (or the one given), one account, one webhook, one delivered event.
struct Seeded {
    app: TestApp,
    _receiver: TestReceiver,
    acme: TestAccount,
    webhook: String,
    delivery: String,
}

async fn seeded(backend: Backend) -> Seeded {
    seeded_with_limit(backend, BODY_LIMIT).await
}

async fn seeded_with_limit(backend: Backend, body_limit: usize) -> Seeded {
    let app = TestApp::spawn_with(backend, |s| s.body_limit = body_limit).await;
    let receiver = TestReceiver::start().await;
    let acme = app.create_account("Acme").await;
    let webhook = app
        .create_webhook(
            &acme,
            json!({ "url": receiver.url("/hook"), "events": ["tts.*"] }),
        )
        .await;
    let event = app.publish(&acme, "tts.completed", json!({ "n": 1 })).await;
    receiver.wait_for(1, None, WAIT).await;
    let deliveries = app
        .deliveries_of(&acme, event["id"].as_str().unwrap())
        .await;
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&acme, &delivery, "succeeded", WAIT)
        .await;
    Seeded {
        webhook: webhook["id"].as_str().unwrap().to_owned(),
        app,
        _receiver: receiver,
        acme,
        delivery,
    }
}

/// Everything the store shows through the API.
async fn store_contents(s: &Seeded) -> Vec<Value> {
    let key = s.acme.key.as_str();
    let mut seen = Vec::new();
    for (path, token) in [
        ("/v1/accounts?limit=200".to_owned(), ADMIN),
        ("/v1/webhooks?limit=200".to_owned(), key),
        (format!("/v1/webhooks/{}/secret", s.webhook), key),
        ("/v1/events?limit=200".to_owned(), ADMIN),
        ("/v1/deliveries?limit=200".to_owned(), ADMIN),
        (format!("/v1/deliveries/{}", s.delivery), key),
    ] {
        seen.push(s.app.get(&path, token).await);
    }
    seen
}

/// Runs every case, then checks every case answered as expected and the store is as it was.
async fn run_table(s: &Seeded, cases: &[Case]) {
    let before = store_contents(s).await;
    let mut wrong = Vec::new();
    for c in cases {
        wrong.extend(check(&s.app, &s.acme, c).await);
    }
    let after = store_contents(s).await;
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert!(
        before == after,
        "a rejected request wrote something:\nbefore: {}\nafter:  {}",
        json!(before),
        json!(after)
    );
}

/// `base` with the members of `extra` added or replaced, as a JSON string.
fn merged(base: &Value, extra: Value) -> Option<String> {
    let mut body = base.clone();
    let members = extra.as_object().unwrap().clone();
    body.as_object_mut().unwrap().extend(members);
    Some(body.to_string())
}

fn raw(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[rustfmt::skip]
fn table(s: &Seeded) -> Vec<Case> {
    use Cred::{Admin, Key};
    let (post, get, patch) = ("POST", "GET", "PATCH");
    let hook = |extra: Value| merged(&json!({ "url": "https://example.com/hook", "events": ["tts.completed"] }), extra);
    let event = |extra: Value| merged(&json!({ "account": s.acme.id, "type": "tts.completed", "data": { "n": 2 } }), extra);
    let url = |u: &str| hook(json!({ "url": u }));
    let retry = |r: Value| hook(json!({ "retry": r }));
    let wh = format!("/v1/webhooks/{}", s.webhook);
    let (wh, dlv) = (wh.as_str(), s.delivery.as_str());
    let big_name = json!({ "name": "x".repeat(BODY_LIMIT + 1) }).to_string();
    vec![
        // 400: the body is not one JSON document.
        case(post, "/v1/webhooks", Key, raw(r#"{"url": "https://example.com/", "events": ["#)).malformed(),
        case(post, "/v1/webhooks", Key, raw("url=https://example.com/&events=*")).malformed(),
        case(post, "/v1/accounts", Admin, raw(r#"{"name": "Acme 2"} and more"#)).malformed(),
        case(post, "/v1/accounts", Admin, raw(r#"{"name": "Acme 2"}}"#)).malformed(),
        case(post, "/v1/accounts", Admin, raw("")).malformed(),
        case(post, "/v1/accounts", Admin, raw("  \n ")).malformed(),
        case(post, "/v1/events", Admin, raw(r#"{"account": "acc_"#)).malformed(),
        case(patch, wh, Key, raw(r#"{"url": }"#)).malformed(),
        // 422 naming no field: JSON, but not an object.
        case(post, "/v1/accounts", Admin, raw(r#""Acme 2""#)).not_an_object(),
        case(post, "/v1/webhooks", Key, raw("null")).not_an_object(),
        // 413: larger than the body limit.
        case(post, "/v1/accounts", Admin, Some(big_name)).too_large(),
        case(post, "/v1/events", Admin, event(json!({ "data": { "blob": "y".repeat(2 * BODY_LIMIT) } }))).too_large(),
        case(post, "/v1/webhooks", Key, hook(json!({ "description": "z".repeat(BODY_LIMIT) }))).too_large(),
        // 422 on webhook bodies.
        case(post, "/v1/webhooks", Key, raw(r#"{"events": ["*"]}"#)).invalid("url"),
        case(post, "/v1/webhooks", Key, raw(r#"{"url": 42, "events": ["*"]}"#)).invalid("url"),
        case(post, "/v1/webhooks", Key, url("not a url")).invalid("url"),
        case(post, "/v1/webhooks", Key, url("ftp://example.com/")).invalid("url"),
        case(post, "/v1/webhooks", Key, url("https://user:pw@example.com/")).invalid("url"),
        case(post, "/v1/webhooks", Key, url("https://example.com/#frag")).invalid("url"),
        case(post, "/v1/webhooks", Key, url(&format!("https://example.com/{}", "p".repeat(2048)))).invalid("url"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": [] }))).invalid("events"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": "tts.completed" }))).invalid("events"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": vec!["*"; 101] }))).invalid("events"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": ["tts.exploded"] }))).invalid("events[0]"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": ["tts.completed", "tts."] }))).invalid("events[1]"),
        case(post, "/v1/webhooks", Key, hook(json!({ "secret": "whsec_c2hvcnQ=" }))).invalid("secret"),
        case(post, "/v1/webhooks", Key, hook(json!({ "description": "d".repeat(1001) }))).invalid("description"),
        case(post, "/v1/webhooks", Key, retry(json!({ "schedule": ["5 minutes"] }))).invalid("retry"),
        case(post, "/v1/webhooks", Key, retry(json!({ "schedule": vec!["1s"; 51] }))).invalid("retry"),
        case(post, "/v1/webhooks", Key, retry(json!({ "timeout": "2m" }))).invalid("retry"),
        case(post, "/v1/webhooks", Key, retry(json!({ "retry_on": "sometimes" }))).invalid("retry.retry_on"),
        // Found by schemathesis: serde reads a struct from an array of its fields too.
        case(post, "/v1/webhooks", Key, hook(json!({ "retry": [null, null] }))).invalid("retry"),
        case(post, "/v1/webhooks", Key, hook(json!({ "signing": ["bearer", "t"] }))).invalid("signing"),
        // PostgreSQL's text holds no NUL.
        case(post, "/v1/webhooks", Key, hook(json!({ "description": "a\u{0}b" }))).invalid("description"),
        case(post, "/v1/webhooks", Admin, hook(json!({}))).invalid("account"),
        case(patch, wh, Key, raw(r#"{"url": "ftp://example.com/"}"#)).invalid("url"),
        case(patch, wh, Key, raw(r#"{"description": "new", "url": "https://example.com/#x"}"#)).invalid("url"),
        case(patch, wh, Key, raw(r#"{"events": []}"#)).invalid("events"),
        case(patch, wh, Key, raw(r#"{"status": "paused"}"#)).invalid("status"),
        // 422 on account and event bodies.
        case(post, "/v1/accounts", Admin, raw(r#"{"name": "   "}"#)).invalid("name"),
        case(post, "/v1/accounts", Admin, raw("{}")).invalid("name"),
        case(post, "/v1/events", Admin, event(json!({ "type": "tts.exploded" }))).invalid("type"),
        case(post, "/v1/events", Admin, event(json!({ "type": "TTS.Completed" }))).invalid("type"),
        case(post, "/v1/events", Admin, merged(&json!({ "account": s.acme.id, "type": "tts.completed" }), json!({}))).invalid("data"),
        case(post, "/v1/events", Admin, event(json!({ "timestamp": "yesterday" }))).invalid("timestamp"),
        case(post, "/v1/events", Admin, event(json!({ "timestamp": 1769686500 }))).invalid("timestamp"),
        case(post, "/v1/events", Admin, event(json!({}))).header("idempotency-key", "k".repeat(300)).invalid("Idempotency-Key"),
        // 422 on list parameters.
        case(get, "/v1/webhooks?limit=0", Key, None).invalid("limit"),
        case(get, "/v1/events?limit=1000", Admin, None).invalid("limit"),
        case(get, "/v1/events?limit=ten", Admin, None).invalid("limit"),
        case(get, "/v1/deliveries?limit=-1", Key, None).invalid("limit"),
        case(get, "/v1/accounts?limit=201", Admin, None).invalid("limit"),
        case(get, "/v1/deliveries?cursor=bogus", Key, None).invalid("cursor"),
        case(get, format!("/v1/webhooks?cursor={dlv}"), Key, None).invalid("cursor"),
        case(get, "/v1/deliveries?status=lost", Key, None).invalid("status"),
        case(get, "/v1/deliveries?webhook=wh_nope", Key, None).invalid("webhook"),
        case(get, "/v1/deliveries?event=nope", Key, None).invalid("event"),
        case(get, "/v1/events?since=yesterday", Key, None).invalid("since"),
        case(get, "/v1/events?type=a%00b", Key, None).invalid("type"),
        // GET /v1/listen checks its query before it asks for the WebSocket upgrade (schemathesis:
        // a bad `resume` or `events` answered 426 Upgrade Required).
        case(get, "/v1/listen?events=y%21Z%29", Key, None).invalid("events[0]"),
        case(get, "/v1/listen?resume=", Key, None).not_found(),
        case(get, "/v1/listen?resume=wh_x&events=*", Key, None).invalid("events"),
        // 404: unknown accounts, ids and routes.
        case(post, "/v1/events", Admin, event(json!({ "account": NO_SUCH_ACCOUNT }))).not_found(),
        case(post, "/v1/events", Admin, event(json!({ "account": "acme" }))).not_found(),
        case(post, "/v1/webhooks", Key, hook(json!({ "account": NO_SUCH_ACCOUNT }))).not_found(),
        case(patch, "/v1/webhooks/wh_nope", Key, hook(json!({}))).not_found(),
        case(get, "/v1/nothing-here", Key, None).not_found(),
        case(get, "/v2/webhooks", Key, None).not_found(),
        // 405: a known route, the wrong method.
        case("DELETE", "/v1/accounts", Admin, None).not_allowed(),
        case("PUT", wh, Key, hook(json!({}))).not_allowed(),
        case(post, "/v1/deliveries", Key, raw("{}")).not_allowed(),
        case(get, format!("/v1/deliveries/{dlv}/retry"), Key, None).not_allowed(),
    ]
}

async fn each_bad_input_answers_its_status_with_the_json_error_and_writes_nothing(
    backend: Backend,
) {
    let seeded = seeded(backend).await;
    let cases = table(&seeded);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    run_table(&seeded, &cases).await;
}

/// An unknown field is named by its path, once ("retry.attempts", not "retry.attempts.attempts").
#[rustfmt::skip]
async fn an_unknown_field_is_refused_naming_that_field_once(backend: Backend) {
    use Cred::{Admin, Key};
    let s = seeded(backend).await;
    let hook = json!({ "url": "https://example.com/hook", "events": ["tts.completed"] });
    let wh = format!("/v1/webhooks/{}", s.webhook);
    let cases = [
        case("POST", "/v1/webhooks", Key, merged(&hook, json!({ "colour": "blue" }))).invalid("colour"),
        case("POST", "/v1/webhooks", Key, merged(&hook, json!({ "retry": { "attempts": 3 } }))).invalid("retry.attempts"),
        case("PATCH", wh, Key, raw(r#"{"secret": "whsec_c2hvcnQ="}"#)).invalid("secret"),
        case("POST", "/v1/accounts", Admin, raw(r#"{"name": "Acme 2", "plan": "pro"}"#)).invalid("plan"),
        case("POST", "/v1/events", Admin, merged(&json!({ "account": s.acme.id, "type": "tts.completed", "data": {} }), json!({ "id": "evt_1" }))).invalid("id"),
    ];
    run_table(&s, &cases).await;
}

/// serde's derived structs would read a JSON array as their fields in declaration order; a
/// request body must be an object, so an array is refused with 422 and writes nothing.
#[rustfmt::skip]
async fn a_json_array_body_is_refused_not_read_as_positional_fields(backend: Backend) {
    use Cred::{Admin, Key};
    let s = seeded(backend).await;
    let cases = [
        case("POST", "/v1/accounts", Admin, raw(r#"["Mallory"]"#)).not_an_object(),
        case("POST", "/v1/webhooks", Key, raw(r#"[null, "http://127.0.0.1:9/array", ["*"], null, "", null]"#)).not_an_object(),
        case("POST", "/v1/events", Admin, Some(json!([s.acme.id, "tts.completed", {}, null]).to_string())).not_an_object(),
        case("PATCH", format!("/v1/webhooks/{}", s.webhook), Key, raw(r#"["https://example.com/moved"]"#)).not_an_object(),
    ];
    run_table(&s, &cases).await;
}

async fn without_dev_http_and_private_targets_are_refused_with_422(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.dev = false).await;
    let acme = app.create_account("Acme").await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://localhost/",
        "https://LOCALHOST./",
        "https://api.localhost/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
    ] {
        let body = json!({ "url": url, "events": ["*"] });
        let (status, answer) = app
            .call("POST", "/v1/webhooks", Some(&acme.key), Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_value", "{url}: {answer}");
        assert_eq!(answer["error"]["field"], "url", "{url}: {answer}");
    }
    let public = "https://example.com/hook";
    let created = app
        .create_webhook(&acme, json!({ "url": public, "events": ["*"] }))
        .await;
    assert_eq!(created["url"], public);

    // Moving an existing webhook onto a private target is refused the same way.
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    let patch = json!({ "url": "https://10.0.0.1/" });
    let (status, answer) = app.call("PATCH", &path, Some(&acme.key), Some(patch)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "url", "{answer}");

    let list = app.get("/v1/webhooks", &acme.key).await;
    let urls: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["url"])
        .collect();
    assert_eq!(urls, vec![public], "only the public webhook is stored");
}

/// `depth` arrays nested inside one another, around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Input limits: JSON nested deeper than 64 levels anywhere in a body is refused with 400
/// before anything reads it; over-long strings in any field are refused with 422 naming it,
/// and the message does not echo them back.
#[rustfmt::skip]
async fn deep_nesting_and_over_long_fields_are_refused_and_write_nothing(backend: Backend) {
    use Cred::{Admin, Key};
    let s = seeded_with_limit(backend, 256 * 1024).await;
    let (post, patch, put) = ("POST", "PATCH", "PUT");
    let hook = |extra: Value| merged(&json!({ "url": "https://example.com/hook", "events": ["tts.completed"] }), extra);
    let wh = format!("/v1/webhooks/{}", s.webhook);
    let rotate = format!("{wh}/secret/rotate");
    let long = "a".repeat(10_000);
    let publish = |data: &str| raw(&format!(r#"{{"account": "{}", "type": "tts.completed", "data": {data}}}"#, s.acme.id));
    let cases = vec![
        // Nesting: 65 levels in event data, in a job's input, in a webhook body, in a rotation
        // body; and 100 000 levels, far past serde_json's own recursion limit.
        case(post, "/v1/events", Admin, publish(&nested(64, "1"))).malformed(),
        case(post, "/v1/events", Admin, publish(&format!(r#"{{"a": {}}}"#, nested(63, "{}")))).malformed(),
        case(post, "/v1/events", Admin, publish(&nested(100_000, ""))).malformed(),
        case(post, "/v1/jobs", Admin, raw(&format!(r#"{{"account": "{}", "kind": "tts", "input": {}}}"#, s.acme.id, nested(64, "")))).malformed(),
        case(post, "/v1/webhooks", Key, hook(json!({ "retry": serde_json::from_str::<Value>(&nested(70, "")).unwrap() }))).malformed(),
        case(post, &rotate, Key, raw(&format!(r#"{{"secret": {}}}"#, nested(65, "")))).malformed(),
        // Over-long strings.
        case(post, "/v1/accounts", Admin, raw(&json!({ "name": "n".repeat(201) }).to_string())).invalid("name"),
        case(post, "/v1/events", Admin, merged(&json!({ "account": s.acme.id, "data": {} }), json!({ "type": long }))).invalid("type"),
        case(post, "/v1/webhooks", Key, hook(json!({ "events": [format!("{long}.*")] }))).invalid("events[0]"),
        case(post, "/v1/webhooks", Key, hook(json!({ "description": "é".repeat(1001) }))).invalid("description"),
        case(post, "/v1/webhooks", Key, hook(json!({ "secret": format!("whsec_{long}") }))).invalid("secret"),
        case(post, "/v1/webhooks", Key, hook(json!({ "signing": { "mode": "bearer", "token": "t".repeat(4097) } }))).invalid("signing"),
        case(post, "/v1/webhooks", Key, hook(json!({ "signing": { "mode": "header", "name": long, "value": "v" } }))).invalid("signing"),
        case(post, "/v1/webhooks", Key, hook(json!({ "retry": { "schedule": [long] } }))).invalid("retry"),
        case(post, "/v1/webhooks", Key, hook(json!({ "retry": { "preset": long } }))).invalid("retry"),
        case(patch, &wh, Key, raw(&json!({ "url": format!("https://example.com/{long}") }).to_string())).invalid("url"),
        case(post, &rotate, Key, raw(&json!({ "grace_period": long }).to_string())).invalid("grace_period"),
        case(put, "/v1/me/callback-url", Key, raw(&json!({ "callback_url": format!("https://example.com/{long}") }).to_string())).invalid("callback_url"),
        case(post, "/v1/jobs", Admin, raw(&json!({ "account": s.acme.id, "kind": long }).to_string())).invalid("kind"),
        case(post, "/v1/jobs", Admin, raw(&json!({ "account": s.acme.id, "kind": "tts", "id": "j".repeat(129) }).to_string())).invalid("id"),
        case(post, "/v1/jobs", Admin, raw(&json!({ "account": s.acme.id, "kind": "tts", "webhook_url": format!("https://example.com/{long}") }).to_string())).invalid("webhook_url"),
    ];
    assert!(cases.len() >= 10);
    run_table(&s, &cases).await;
    for c in &cases {
        let token = match c.cred { Admin => ADMIN, Key => s.acme.key.as_str() };
        let (_, body) = s.app.call_raw(c.method, &c.path, Some(token), c.body.as_deref(), &[]).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() <= 1024, "{} {}: a {}-byte message echoes the input", c.method, c.path, message.len());
    }
}

/// 64 levels of nesting are accepted, and brackets inside strings are not nesting.
async fn sixty_four_levels_of_nesting_are_accepted(backend: Backend) {
    let s = seeded_with_limit(backend, 256 * 1024).await;
    for data in [
        // tts.completed's schema wants an object: the body, `data` and 62 arrays.
        format!(r#"{{"n": {}}}"#, nested(62, "")),
        json!({ "text": "[".repeat(1000) }).to_string(),
        json!({ "text": format!("\\\"{}", "{".repeat(1000)) }).to_string(),
    ] {
        let body = format!(
            r#"{{"account": "{}", "type": "tts.completed", "data": {data}}}"#,
            s.acme.id
        );
        let (status, answer) = s
            .app
            .call_raw("POST", "/v1/events", Some(ADMIN), Some(&body), &[])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
}

/// Sends `request` as raw bytes on a new connection and reads the answer to its end; returns
/// the status, the content type and the body.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before it has read all of a request it refuses.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {text:?}"));
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// What hyper or axum refuse before a handler runs (bytes that are not HTTP, limits of the
/// request line and headers, a path that is not UTF-8) and bodies not declared as JSON are
/// answered in the JSON error shape too, and write nothing.
async fn what_the_http_layer_refuses_is_answered_as_a_json_error(backend: Backend) {
    let s = seeded(backend).await;
    let before = store_contents(&s).await;
    let key = &s.acme.key;
    let body = r#"{"name": "Sneaky"}"#;
    let many_headers: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(String, String, u16, &str)> = vec![
        (
            "a path segment that is not UTF-8".into(),
            format!(
                "GET /v1/webhooks/%00%ff HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
            ),
            400,
            "malformed_request",
        ),
        (
            "a 100,000-character cursor".into(),
            format!(
                "GET /v1/webhooks?cursor={} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n",
                "c".repeat(100_000)
            ),
            414,
            "uri_too_long",
        ),
        (
            "500 request headers".into(),
            format!("GET /v1/webhooks HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "a malformed request line".into(),
            "GET  /v1 /webhooks HTTP/9.9 extra\r\nhost: x\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "two Content-Length headers".into(),
            format!(
                "POST /v1/accounts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncontent-length: 3\r\n\r\n{body}",
                body.len()
            ),
            400,
            "malformed_request",
        ),
        (
            "a JSON body declared as text/plain".into(),
            format!(
                "POST /v1/accounts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "a JSON body with no Content-Type".into(),
            format!(
                "POST /v1/accounts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "a form posted to an optional JSON body".into(),
            format!(
                "POST /v1/webhooks/{}/secret/rotate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 5\r\nconnection: close\r\n\r\na=b&c",
                s.webhook
            ),
            415,
            "unsupported_media_type",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, request, status, code) in &cases {
        let (got, content_type, body) = raw_exchange(&s.app, request.as_bytes()).await;
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let message = json["error"]["message"].as_str().unwrap_or("");
        if got != *status
            || content_type != "application/json"
            || json["error"]["code"] != *code
            || message.is_empty()
        {
            wrong.push(format!(
                "{what}: want {status} {code}, got {got} {content_type:?} {body:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        store_contents(&s).await,
        before,
        "a refused request wrote something"
    );
}

on_both_backends!(
    what_the_http_layer_refuses_is_answered_as_a_json_error,
    each_bad_input_answers_its_status_with_the_json_error_and_writes_nothing,
    an_unknown_field_is_refused_naming_that_field_once,
    a_json_array_body_is_refused_not_read_as_positional_fields,
    without_dev_http_and_private_targets_are_refused_with_422,
    deep_nesting_and_over_long_fields_are_refused_and_write_nothing,
    sixty_four_levels_of_nesting_are_accepted,
);
