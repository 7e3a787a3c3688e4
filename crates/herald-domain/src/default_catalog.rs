//! The default event type catalog: the seed providers' events, Herald's own events, and the
//! events of jobs, each with a JSON Schema (draft 2020-12) of its `data` and an example.
//!
//! The schemas are plain data here; the server compiles and enforces them. How strict each one is
//! follows who makes the data:
//! - **Jobs and Herald's own events** (`<kind>.<status>`, `webhook.test`, `webhook.disabled`):
//!   Herald writes the data itself, so the schema is exact: every field required, no other
//!   allowed, each status with its own constants.
//! - **Seed 000's events** (`tts.*`, `stt.*`, `voice.*`): the provider writes the data, and the
//!   seed's page shows one example (`tts.completed`), not a list of required fields. The schemas
//!   type every field the seed shows (a wrong type is refused) but require none and allow more,
//!   as receivers must ignore fields they do not know. Where a default job kind publishes the same
//!   name (`tts.completed` is also a `tts` job's status), the schema is either shape (`anyOf`).

use crate::event_type::EventTypeInfo;
use crate::job::JobStatus;
use serde_json::{Value, json};

/// Job kinds of the default configuration; each adds `<kind>.queued`, `.processing`,
/// `.completed` and `.failed` to the catalog.
pub const DEFAULT_JOB_KINDS: [&str; 4] = ["tts", "stt", "voice", "transcription"];

/// The default catalog: the seed providers' events plus `webhook.test`. (The server adds the job
/// kinds' status events and `webhook.disabled`: see [`job_event`] and [`webhook_disabled`].)
pub fn default_event_types() -> Vec<EventTypeInfo> {
    let seed_000 = [
        ("tts.completed", "Text-to-speech generation completed"),
        ("tts.failed", "Text-to-speech generation failed"),
        ("stt.completed", "Speech-to-text transcription completed"),
        ("stt.failed", "Speech-to-text transcription failed"),
        ("voice.created", "Custom voice created"),
        ("voice.ready", "Custom voice processing completed"),
        ("voice.failed", "Custom voice processing failed"),
    ];
    let mut types: Vec<EventTypeInfo> = seed_000
        .into_iter()
        .map(|(name, description)| {
            let (schema, example) = seed_000_event(name);
            entry(name, description, schema, example)
        })
        .collect();
    // Seed 002: the body is the whole transcription, as `GET` shows it: a job of kind
    // `transcription` in Herald.
    for (status, description) in [
        (JobStatus::Completed, "Transcription finished successfully"),
        (JobStatus::Failed, "Transcription failed"),
    ] {
        let (schema, example) = job_event("transcription", status);
        types.push(entry(
            &format!("transcription.{}", status.as_str()),
            description,
            schema,
            example,
        ));
    }
    types.push(entry(
        "webhook.test",
        "A test event sent on request to one webhook",
        object(
            json!({
                "webhook_id": webhook_id(),
                "message": { "type": "string" },
            }),
            true,
        ),
        json!({
            "webhook_id": "wh_0193a8f2c1d47e5b9a3c6d2e8f104b7a",
            "message": "This is a test event from Herald.",
        }),
    ));
    types
}

fn entry(name: &str, description: &str, schema: Value, example: Value) -> EventTypeInfo {
    EventTypeInfo {
        name: name.to_owned(),
        description: description.to_owned(),
        schema: Some(schema),
        example: Some(example),
        ..EventTypeInfo::default()
    }
}

/// An object schema with these `properties`; `exact`: all of them required and no others.
fn object(properties: Value, exact: bool) -> Value {
    let mut schema = json!({ "type": "object", "properties": properties });
    if exact {
        let required: Vec<Value> = properties
            .as_object()
            .map(|p| p.keys().map(|k| Value::from(k.as_str())).collect())
            .unwrap_or_default();
        schema["required"] = Value::Array(required);
        schema["additionalProperties"] = Value::Bool(false);
    }
    schema
}

fn webhook_id() -> Value {
    json!({ "type": "string", "pattern": "^wh_[0-9a-f]{32}$" })
}

fn timestamp() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn url() -> Value {
    json!({ "type": "string", "format": "uri" })
}

/// A seed 000 event's schema and example. The seed documents `tts.completed`'s data; the others
/// follow its shape (an id, the input, the result or an error).
fn seed_000_event(name: &str) -> (Value, Value) {
    let text = json!({ "type": "string", "description": "The text spoken or transcribed" });
    let error = json!({ "type": "string", "description": "Why it failed" });
    let duration =
        json!({ "type": "number", "minimum": 0, "description": "Audio length in seconds" });
    let (properties, example) = match name {
        "tts.completed" => (
            json!({
                "id": { "type": "string", "description": "The generation's id" },
                "text": text, "voice_id": { "type": "string" }, "audio_url": url(), "duration": duration,
            }),
            // The seed's own example.
            json!({
                "id": "tts-123", "text": "Hello, world!", "voice_id": "default-voice",
                "audio_url": "https://cdn.60db.com/audio/tts-123.mp3", "duration": 2.5,
            }),
        ),
        "tts.failed" => (
            json!({ "id": { "type": "string" }, "text": text, "voice_id": { "type": "string" }, "error": error }),
            json!({ "id": "tts-124", "text": "Hello, world!", "voice_id": "no-such-voice", "error": "voice not found" }),
        ),
        "stt.completed" => (
            json!({
                "id": { "type": "string" }, "audio_url": url(), "text": text, "duration": duration,
                "language": { "type": "string", "description": "BCP 47 language tag" },
            }),
            json!({
                "id": "stt-123", "audio_url": "https://cdn.60db.com/audio/in-123.mp3",
                "text": "Hello, world!", "duration": 2.5, "language": "en",
            }),
        ),
        "stt.failed" => (
            json!({ "id": { "type": "string" }, "audio_url": url(), "error": error }),
            json!({ "id": "stt-124", "audio_url": "https://cdn.60db.com/audio/in-124.mp3", "error": "audio could not be decoded" }),
        ),
        "voice.created" | "voice.ready" => (
            json!({ "id": { "type": "string", "description": "The voice's id" }, "name": { "type": "string" } }),
            json!({ "id": "voice-789", "name": "Narrator" }),
        ),
        _ => (
            json!({ "id": { "type": "string" }, "name": { "type": "string" }, "error": error }),
            json!({ "id": "voice-790", "name": "Narrator", "error": "the samples are too short" }),
        ),
    };
    let seed = object(properties, false);
    // The default job kinds publish `<kind>.completed` and `.failed` under the same names.
    let job = name.split_once('.').and_then(|(kind, status)| {
        let status = JobStatus::parse(status)?;
        DEFAULT_JOB_KINDS
            .contains(&kind)
            .then(|| job_event(kind, status).0)
    });
    let schema = match job {
        Some(job) => json!({
            "description": "What the provider publishes (seed 000), or the job itself when a job of this kind changes status",
            "anyOf": [seed, job],
        }),
        None => seed,
    };
    (schema, example)
}

/// The schema and an example of `<kind>.<status>`: the job itself, as `GET /v1/jobs/{id}`
/// shows it ([`crate::Job`]).
pub fn job_event(kind: &str, status: JobStatus) -> (Value, Value) {
    let terminal = status.is_terminal();
    let any = json!({ "description": "Any JSON value the provider set, or null" });
    let progress = match status {
        JobStatus::Completed => json!({ "const": 1 }),
        _ => json!({ "type": "number", "minimum": 0, "maximum": 1 }),
    };
    let completed_at = if terminal {
        timestamp()
    } else {
        json!({ "type": "null" })
    };
    let schema = object(
        json!({
            "id": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$" },
            "account": { "type": "string", "pattern": "^acc_[0-9a-f]{32}$" },
            "kind": { "const": kind },
            "status": { "const": status.as_str() },
            "progress": progress,
            "input": any, "result": any, "error": any,
            "webhook_url": { "anyOf": [url(), { "type": "null" }] },
            "created_at": timestamp(), "updated_at": timestamp(), "completed_at": completed_at,
        }),
        true,
    );
    let (progress, result, error) = match status {
        JobStatus::Queued => (json!(0.0), Value::Null, Value::Null),
        JobStatus::Processing => (json!(0.4), Value::Null, Value::Null),
        JobStatus::Completed => (
            json!(1.0),
            json!({ "url": "https://cdn.example.com/results/job_0193a8f2c1d4.json" }),
            Value::Null,
        ),
        JobStatus::Failed => (
            json!(0.4),
            Value::Null,
            json!({ "code": "input_unreadable", "message": "the input could not be read" }),
        ),
    };
    let example = json!({
        "id": "job_0193a8f2c1d47e5b9a3c6d2e8f104b7a",
        "account": "acc_0193a8f2c0aa7d3e8b1f5c9a2d6e4b80",
        "kind": kind,
        "status": status.as_str(),
        "progress": progress,
        "input": { "text": "Hello, world!" },
        "result": result,
        "error": error,
        "webhook_url": "https://example.com/hooks/jobs",
        "created_at": "2026-04-23T10:12:03Z",
        "updated_at": if terminal { "2026-04-23T10:14:27Z" } else { "2026-04-23T10:12:03Z" },
        "completed_at": if terminal { json!("2026-04-23T10:14:27Z") } else { Value::Null },
    });
    (schema, example)
}

/// The schema and an example of `webhook.disabled`, which the store publishes when it disables
/// a webhook (`reason`: `gone` after a 410, `failing` after failing for `delivery.disable_after`).
pub fn webhook_disabled() -> (Value, Value) {
    let schema = object(
        json!({
            "webhook_id": webhook_id(),
            "url": url(),
            "reason": { "enum": ["gone", "failing"] },
            "disabled_at": timestamp(),
        }),
        true,
    );
    let example = json!({
        "webhook_id": "wh_0193a8f2c1d47e5b9a3c6d2e8f104b7a",
        "url": "https://example.com/hooks",
        "reason": "failing",
        "disabled_at": "2026-04-23T10:12:03.250Z",
    });
    (schema, example)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_entry_has_a_schema_and_an_example() {
        let types = default_event_types();
        assert_eq!(types.len(), 10);
        for t in &types {
            assert!(t.schema.is_some() && t.example.is_some(), "{}", t.name);
        }
        let tts = types.iter().find(|t| t.name == "tts.completed").unwrap();
        assert_eq!(
            tts.schema.as_ref().unwrap()["anyOf"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let voice = types.iter().find(|t| t.name == "voice.created").unwrap();
        assert!(voice.schema.as_ref().unwrap().get("anyOf").is_none());
    }

    #[test]
    fn job_schemas_name_every_field_of_a_job() {
        let (schema, example) = job_event("tts", JobStatus::Failed);
        let required = schema["required"].as_array().unwrap();
        assert_eq!(required.len(), 12);
        for field in required {
            assert!(example.get(field.as_str().unwrap()).is_some(), "{field}");
        }
    }
}
