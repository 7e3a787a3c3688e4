//! The document's `webhooks` section: for each event type of the catalog, the POST a receiver
//! gets (headers, body, the answers Herald acts on), so a customer can generate receiver types.
//! The envelope's field names and the header names are the operator's settings, as in
//! `dispatch/message.rs`.

use crate::config::Settings;
use crate::domain::{Catalog, EventTypeInfo, JobStatus};
use serde_json::{Map, Value, json};

/// `{"<event type>": {"post": …}}` for every type of `catalog`, and
/// `{"operator:<event type>": …}` for the operator events, which go to the operator's URL alone.
pub fn section(settings: &Settings, catalog: &Catalog) -> Value {
    let mut entries: Map<String, Value> = catalog
        .types()
        .iter()
        .map(|t| (t.name.clone(), json!({ "post": delivery(settings, t) })))
        .collect();
    for t in crate::store::operator::described() {
        let mut post = delivery(settings, &t);
        post["tags"] = json!(["operator events"]);
        post["description"] = json!(OPERATOR_DESCRIPTION);
        post["operationId"] = json!(format!("receive_operator_{}", t.name.replace('.', "_")));
        entries.insert(format!("operator:{}", t.name), json!({ "post": post }));
    }
    Value::Object(entries)
}

const OPERATOR_DESCRIPTION: &str = "What the operator's URL (`[operator]` in the configuration) \
gets, and no customer: Herald's notices about customers' endpoints, in the envelope below, signed \
per Standard Webhooks (`v1,…`) with the operator's `whsec_` secret, retried on the default policy \
(`delivery.retry`). Their `data` never holds a customer's payload or a secret.";

/// The delivery of one event type, as an operation the receiver implements.
fn delivery(settings: &Settings, info: &EventTypeInfo) -> Value {
    let summary = if info.description.is_empty() {
        info.name.clone()
    } else {
        format!("{}: {}", info.name, info.description)
    };
    json!({
        "tags": ["deliveries to receivers"],
        "summary": summary,
        "description": DESCRIPTION,
        "operationId": format!("receive_{}", info.name.replace(['.', '-'], "_")),
        "parameters": headers(settings),
        "requestBody": {
            "required": true,
            "content": { "application/json": body(settings, info) }
        },
        "responses": {
            "2XX": { "description": "Received: the delivery succeeded" },
            "410": { "description": "Gone: the webhook is disabled at once, nothing more is sent" },
            "default": {
                "description": "Anything else (or a timeout, or no connection) fails this \
                    attempt; it is retried per the webhook's retry policy, honouring Retry-After"
            }
        }
    })
}

const DESCRIPTION: &str = "What the webhook's URL gets when an event of this type is published \
to an account whose webhook subscribes to it: a POST of `application/json`, signed per Standard \
Webhooks (`webhook-signature` over `{webhook-id}.{webhook-timestamp}.{body}`; HMAC-SHA256 `v1,…` \
with the webhook's `whsec_` secret, or ed25519 `v1a,…`; several space-separated signatures while a \
replaced key is in its grace period). Webhooks in `bearer`, `header` or `none` signing mode get \
their static credential, or nothing, in place of the signature. The body is the envelope below; \
with `format: raw`, the event's `data` alone. Answer with a 2xx within the webhook's timeout (10 s \
by default); redirects are not followed.";

fn header(name: &str, description: &str, required: bool, schema: Value) -> Value {
    json!({
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    })
}

fn headers(settings: &Settings) -> Vec<Value> {
    let d = &settings.delivery;
    let id = json!({ "type": "string", "pattern": "^dlv_[0-9a-f]{32}$" });
    let mut all = vec![
        header(
            "webhook-id",
            "The delivery's id: the same on every retry, so receivers can deduplicate",
            true,
            id,
        ),
        header(
            "webhook-timestamp",
            "When this attempt was signed, in Unix seconds",
            true,
            json!({ "type": "string", "pattern": "^[0-9]+$" }),
        ),
        header(
            "webhook-signature",
            "Space-separated `v1,<base64>` (HMAC-SHA256) or `v1a,<base64>` (ed25519) signatures; \
             absent in `bearer`, `header` and `none` signing modes",
            false,
            json!({ "type": "string" }),
        ),
        header(
            "user-agent",
            "Herald's user agent",
            true,
            json!({ "type": "string", "example": d.user_agent }),
        ),
    ];
    if !d.event_type_header.is_empty() {
        all.push(header(
            &d.event_type_header,
            "The event type",
            true,
            json!({ "type": "string" }),
        ));
    }
    if !d.attempt_header.is_empty() {
        all.push(header(
            &d.attempt_header,
            "The attempt's number, 1 for the first",
            true,
            json!({ "type": "string", "pattern": "^[1-9][0-9]*$" }),
        ));
    }
    if !d.delivery_id_header.is_empty() {
        all.push(header(
            &d.delivery_id_header,
            "The delivery's id again, under the operator's header name",
            true,
            json!({ "type": "string" }),
        ));
    }
    all
}

/// The body's schema and, when the catalog has an example of the type's `data`, an example
/// envelope holding it.
fn body(settings: &Settings, info: &EventTypeInfo) -> Value {
    let mut media = json!({ "schema": envelope(settings, info) });
    if let Some(example) = &info.example {
        let f = &settings.delivery.envelope;
        let mut envelope = Map::new();
        envelope.insert(f.type_field.clone(), json!(info.name));
        envelope.insert(f.timestamp_field.clone(), json!("2025-01-31T12:00:00Z"));
        envelope.insert(f.data_field.clone(), example.clone());
        media["example"] = Value::Object(envelope);
    }
    media
}

/// The body: `{"type", "timestamp", "data"}` under the operator's field names.
fn envelope(settings: &Settings, info: &EventTypeInfo) -> Value {
    let f = &settings.delivery.envelope;
    let mut properties = Map::new();
    properties.insert(
        f.type_field.clone(),
        json!({ "type": "string", "const": info.name }),
    );
    properties.insert(
        f.timestamp_field.clone(),
        json!({ "type": "string", "format": "date-time",
                "description": "When the event happened (RFC 3339)" }),
    );
    properties.insert(f.data_field.clone(), data(settings, info));
    json!({
        "type": "object",
        "required": [f.type_field, f.timestamp_field, f.data_field],
        "properties": properties,
    })
}

/// What `data` holds: the catalog entry's JSON Schema as it is, when it has one (publishing
/// checks data against it, so it holds for what is delivered); else the job itself for a job's
/// status events, Herald's own shape for its own events, otherwise an object as the provider
/// published it. (A type that is both a configured type and a job kind's status, such as
/// `tts.completed` by default, may be published either way, so without a schema its `data` is
/// only an object.)
fn data(settings: &Settings, info: &EventTypeInfo) -> Value {
    if let Some(schema) = &info.schema {
        return schema.clone();
    }
    let configured = settings.event_types.iter().any(|t| t.name == info.name);
    let is_job_event = settings.job_kinds.iter().any(|kind| {
        JobStatus::ALL
            .iter()
            .any(|s| info.name == format!("{kind}.{}", s.as_str()))
    });
    if is_job_event && !configured {
        return json!({ "$ref": "#/components/schemas/Job" });
    }
    match info.name.as_str() {
        "webhook.test" => json!({
            "type": "object",
            "required": ["webhook_id", "message"],
            "properties": {
                "webhook_id": { "$ref": "#/components/schemas/WebhookId" },
                "message": { "type": "string" }
            }
        }),
        "webhook.disabled" => json!({
            "type": "object",
            "required": ["webhook_id", "url", "reason", "disabled_at"],
            "properties": {
                "webhook_id": { "$ref": "#/components/schemas/WebhookId" },
                "url": { "type": "string" },
                "reason": { "type": "string", "enum": ["gone", "failing"] },
                "disabled_at": { "$ref": "#/components/schemas/Timestamp" }
            }
        }),
        _ => json!({
            "type": "object",
            "description": "The event's data, exactly as the provider published it"
        }),
    }
}
