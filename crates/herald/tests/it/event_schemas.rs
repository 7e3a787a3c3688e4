//! Event schemas: data that violates its type's schema is a 422 naming the path and stores
//! nothing; valid data is delivered unchanged; the catalog shows each schema and example.

use crate::common::{ADMIN, Backend, TestAccount, TestApp, TestReceiver};
use axum::http::StatusCode;
use herald::domain::EventTypeInfo;
use serde_json::{Value, json};
use std::time::Duration;

/// A configured type with a strict schema (the default catalog's seed schemas are open).
fn render_completed() -> EventTypeInfo {
    EventTypeInfo {
        name: "render.completed".into(),
        description: "A render finished".into(),
        schema: Some(json!({
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "status": { "enum": ["done", "failed"] },
                "voice": {
                    "type": "object",
                    "properties": { "id": { "type": "string" } },
                    "required": ["id"],
                },
                "segments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": { "start": { "type": "number" } },
                        "required": ["start"],
                    },
                },
            },
            "required": ["id", "status"],
            "additionalProperties": false,
        })),
        example: Some(json!({ "id": "r-1", "status": "done" })),
        ..EventTypeInfo::default()
    }
}

async fn app_with_schema(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        s.event_types.push(render_completed());
        s.event_types.push(EventTypeInfo {
            name: "render.started".into(),
            ..EventTypeInfo::default()
        });
    })
    .await
}

async fn subscribed(app: &TestApp, receiver: &TestReceiver) -> TestAccount {
    let acme = app.create_account("acme").await;
    app.create_webhook(
        &acme,
        json!({ "url": receiver.url("/hooks"), "events": ["render.*", "tts.*"] }),
    )
    .await;
    acme
}

/// Publishes `data` (raw JSON text) and returns the answer.
async fn publish_raw(
    app: &TestApp,
    account: &TestAccount,
    event_type: &str,
    data: &str,
) -> (StatusCode, Value) {
    let body = format!(
        r#"{{"account": "{}", "type": "{event_type}", "data": {data}}}"#,
        account.id
    );
    let response = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap())
}

async fn violations_are_422_naming_the_path_and_store_nothing(backend: Backend) {
    let app = app_with_schema(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = subscribed(&app, &receiver).await;
    let cases = [
        (
            r#"{"id": 5, "status": "done"}"#,
            "data.id",
            "is not of type \"string\"",
        ),
        (r#"{"id": "r-1"}"#, "data.status", "is required"),
        (
            r#"{"id": "r-1", "status": "done", "extra": 1}"#,
            "data.extra",
            "is not allowed",
        ),
        (
            r#"{"id": "r-1", "status": "gone"}"#,
            "data.status",
            "is not one of",
        ),
        (
            r#"{"id": "r-1", "status": "done", "segments": [{"start": 0}, {"start": "1s"}]}"#,
            "data.segments[1].start",
            "is not of type \"number\"",
        ),
        (
            r#"{"id": "r-1", "status": "done", "voice": {}}"#,
            "data.voice.id",
            "is required",
        ),
    ];
    for (data, path, says) in cases {
        let (status, body) = publish_raw(&app, &acme, "render.completed", data).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{data}: {body}");
        let error = &body["error"];
        assert_eq!(error["code"], "schema_violation", "{body}");
        assert_eq!(error["field"], path, "{data}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("render.completed")
                && message.contains(path)
                && message.contains(says),
            "{data}: {message}"
        );
    }
    // The default catalog's open seed schemas still refuse a wrong type.
    let (status, body) = publish_raw(&app, &acme, "tts.completed", r#"{"duration": "2.5s"}"#).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("data.duration")),
        "{body}"
    );

    // Nothing was stored, nothing is on its way.
    let events = app
        .get(&format!("/v1/events?account={}", acme.id), ADMIN)
        .await;
    assert_eq!(events["data"], json!([]), "{events}");
    let deliveries = app.get("/v1/deliveries", &acme.key).await;
    assert_eq!(deliveries["data"], json!([]), "{deliveries}");

    // A batch answers per event, as it always has: the bad one names its index and path.
    let (status, batch) = app
        .call(
            "POST",
            "/v1/events/batch",
            Some(ADMIN),
            Some(json!({ "events": [
                { "account": acme.id, "type": "render.completed", "data": { "id": "r-2", "status": "done" } },
                { "account": acme.id, "type": "render.completed", "data": { "id": "r-3", "status": "done", "voice": { "id": 7 } } },
            ] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["data"][0]["deliveries"], 1, "{batch}");
    assert_eq!(
        batch["data"][1]["error"]["field"], "events[1].data.voice.id",
        "{batch}"
    );
    let got = receiver.wait_for(1, None, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["data"]["id"], "r-2");
    let events = app
        .get(&format!("/v1/events?account={}", acme.id), ADMIN)
        .await;
    assert_eq!(
        events["data"].as_array().unwrap().len(),
        1,
        "only the valid event: {events}"
    );
}

async fn valid_data_is_delivered_byte_for_byte(backend: Backend) {
    let app = app_with_schema(backend).await;
    let receiver = TestReceiver::start().await;
    let acme = subscribed(&app, &receiver).await;
    // Spacing, key order, number forms and escapes as the producer wrote them.
    let data = r#"{ "status" : "done", "id":"r-\u00e9",
        "segments": [ {"start": 1.250}, {"start": 2e0} ], "voice": {"id": "v-1"} }"#;
    let (status, body) = publish_raw(&app, &acme, "render.completed", data).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A type without a schema takes anything, as before.
    let (status, body) = publish_raw(&app, &acme, "render.started", r#"[1, "two", null]"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = receiver.wait_for(2, None, Duration::from_secs(10)).await;
    let completed = got
        .iter()
        .find(|r| r.header("herald-event-type") == "render.completed")
        .unwrap();
    let text = String::from_utf8(completed.body.to_vec()).unwrap();
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
}

async fn the_catalog_shows_schemas_and_examples(backend: Backend) {
    let app = app_with_schema(backend).await;
    let (status, catalog) = app.call("GET", "/v1/event-types", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let types = catalog["data"].as_array().unwrap();
    let entry = |name: &str| {
        types
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        entry("render.completed")["schema"],
        render_completed().schema.unwrap()
    );
    assert_eq!(
        entry("render.completed")["example"],
        json!({ "id": "r-1", "status": "done" })
    );
    let started = entry("render.started").as_object().unwrap();
    assert!(
        !started.contains_key("schema") && !started.contains_key("example"),
        "{started:?}"
    );
    for name in [
        "tts.completed",
        "transcription.failed",
        "tts.queued",
        "webhook.test",
        "webhook.disabled",
    ] {
        assert!(
            entry(name)["schema"].is_object() && !entry(name)["example"].is_null(),
            "{name}"
        );
    }
    assert_eq!(
        entry("tts.completed")["example"]["audio_url"],
        "https://cdn.60db.com/audio/tts-123.mp3"
    );
    assert_eq!(
        entry("tts.queued")["schema"]["properties"]["status"],
        json!({ "const": "queued" })
    );
}

on_both_backends!(
    violations_are_422_naming_the_path_and_store_nothing,
    valid_data_is_delivered_byte_for_byte,
    the_catalog_shows_schemas_and_examples,
);

/// A schema that is not one, or an example that breaks its schema, stops the start and names
/// the type and the key.
#[test]
fn a_bad_schema_or_example_stops_the_start() {
    let mut settings = herald::config::Settings::default();
    let mut bad = render_completed();
    bad.example = Some(json!({ "id": "r-1", "status": "later" }));
    settings.event_types.push(bad);
    let err = settings.check().unwrap_err().to_string();
    assert!(
        err.contains("event_types[\"render.completed\"].example") && err.contains("data.status"),
        "{err}"
    );
    let mut settings = herald::config::Settings::default();
    settings.event_types.push(EventTypeInfo {
        schema: Some(json!({ "type": 12 })),
        ..render_completed()
    });
    let err = settings.check().unwrap_err().to_string();
    assert!(
        err.contains("event_types[\"render.completed\"].schema"),
        "{err}"
    );
}
