//! Event data schemas: each catalog entry's JSON Schema compiled once at start, published `data`
//! checked against it, and what is wrong said with its JSON path (`data.voice.id`).
//!
//! The schemas are plain JSON in the catalog (`herald-domain` stays free of the validator); this
//! module owns the `jsonschema` crate, built without its default features so a `$ref` can
//! never fetch anything: a reference that is not inside the schema fails at start.

use crate::domain::EventTypeInfo;
use anyhow::Context;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::path::Path;

/// The compiled schemas of the catalog's types that have one.
#[derive(Default)]
pub struct EventSchemas {
    by_type: HashMap<String, Validator>,
}

/// Why `data` does not match its type's schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a path from `data`: `data`, `data.voice.id`, `data.segments[2].start`.
    pub path: String,
    /// What is wrong there, naming the path.
    pub message: String,
}

impl EventSchemas {
    /// Compiles every schema of `types` and checks each example against its schema. An error
    /// names the event type and the key: `event_types["tts.completed"].example: …`.
    pub fn compile(types: &[EventTypeInfo]) -> Result<Self, String> {
        let mut by_type = HashMap::new();
        for t in types {
            let key = |k: &str| format!("event_types[{:?}].{k}", t.name);
            for (file_key, file) in [
                ("schema_file", &t.schema_file),
                ("example_file", &t.example_file),
            ] {
                if file.is_some() {
                    return Err(format!(
                        "{}: files are read when the configuration file is loaded, and this one was not",
                        key(file_key)
                    ));
                }
            }
            let Some(schema) = &t.schema else {
                continue;
            };
            // Draft 2020-12 unless `$schema` names another; `format` is checked, not only
            // noted (a `date-time` that is not one is refused); no reference is ever fetched.
            let validator = jsonschema::options()
                .offline()
                .should_validate_formats(true)
                .build(schema)
                .map_err(|e| format!("{}: not a valid JSON Schema: {e}", key("schema")))?;
            if let Some(example) = &t.example
                && let Err(e) = validator.validate(example)
            {
                let v = describe(&e);
                return Err(format!(
                    "{}: does not match the schema: {}",
                    key("example"),
                    v.message
                ));
            }
            by_type.insert(t.name.clone(), validator);
        }
        Ok(Self { by_type })
    }

    /// Whether `event_type` has a schema.
    pub fn has_schema(&self, event_type: &str) -> bool {
        self.by_type.contains_key(event_type)
    }

    /// Checks the `data` of an event of `event_type`. A type without a schema takes any data
    /// and costs one map lookup: the data is parsed only when there is a schema to check.
    pub fn check(&self, event_type: &str, data: &RawValue) -> Result<(), Violation> {
        let Some(validator) = self.by_type.get(event_type) else {
            return Ok(());
        };
        let value: Value = serde_json::from_str(data.get()).map_err(|e| Violation {
            path: "data".to_owned(),
            message: format!("data could not be read: {e}"),
        })?;
        validator.validate(&value).map_err(|e| describe(&e))
    }
}

/// A violation with its path, and, for `anyOf`/`oneOf`, the reason of the alternative that came
/// closest (fewest errors), since "matches none of the alternatives" does not help anyone.
fn describe(error: &ValidationError<'_>) -> Violation {
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } =
        error.kind()
        && let Some(closest) = context
            .iter()
            .filter(|errors| !errors.is_empty())
            .min_by_key(|errors| errors.len())
    {
        return describe(&closest[0]);
    }
    let mut path = String::from("data");
    for segment in error.instance_path().iter() {
        match segment {
            LocationSegment::Property(name) => push_property(&mut path, &name),
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    let message = match error.kind() {
        ValidationErrorKind::Required { property } => {
            push_property(&mut path, property.as_str().unwrap_or_default());
            format!("{path} is required")
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected }
            if !unexpected.is_empty() =>
        {
            push_property(&mut path, &unexpected[0]);
            format!(
                "{path} is not allowed: the schema permits no properties besides those it names"
            )
        }
        _ => {
            // The path stands in for the value (which may be large or private); the few
            // messages that do not name the value (`const`) get the path in front.
            let message = error.masked_with(path.as_str()).to_string();
            if message.contains(path.as_str()) {
                message
            } else {
                format!("{path}: {message}")
            }
        }
    };
    Violation { path, message }
}

/// `.name` for a plain name, `["odd name"]` (a JSON string) for anything else.
fn push_property(path: &mut String, name: &str) {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        path.push('.');
        path.push_str(name);
    } else {
        path.push('[');
        path.push_str(&Value::from(name).to_string());
        path.push(']');
    }
}

/// Reads each entry's `schema_file` and `example_file` (JSON, relative to `dir`, the
/// configuration file's directory) into its `schema` and `example`.
pub fn read_schema_files(types: &mut [EventTypeInfo], dir: &Path) -> anyhow::Result<()> {
    for t in types {
        let name = t.name.clone();
        read_json(&name, "schema", t.schema_file.take(), &mut t.schema, dir)?;
        read_json(&name, "example", t.example_file.take(), &mut t.example, dir)?;
    }
    Ok(())
}

fn read_json(
    event_type: &str,
    key: &str,
    file: Option<String>,
    slot: &mut Option<Value>,
    dir: &Path,
) -> anyhow::Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    let at = format!("event_types[{event_type:?}].{key}_file");
    if slot.is_some() {
        anyhow::bail!("{at}: set {key} or {key}_file, not both");
    }
    let path = dir.join(&file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{at}: reading {}", path.display()))?;
    *slot = Some(
        serde_json::from_str(&text)
            .with_context(|| format!("{at}: {} is not JSON", path.display()))?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(schema: Value, example: Option<Value>) -> EventTypeInfo {
        EventTypeInfo {
            name: "render.completed".into(),
            schema: Some(schema),
            example,
            ..EventTypeInfo::default()
        }
    }

    fn check(schemas: &EventSchemas, data: Value) -> Result<(), Violation> {
        let raw = serde_json::value::to_raw_value(&data).unwrap();
        schemas.check("render.completed", &raw)
    }

    #[test]
    fn every_default_example_matches_its_schema() {
        let settings = crate::config::Settings::default();
        let catalog = settings.catalog().unwrap();
        let schemas = EventSchemas::compile(catalog.types()).expect("the default catalog compiles");
        for t in catalog.types() {
            assert!(
                t.schema.is_some() && t.example.is_some(),
                "{} has a schema and an example",
                t.name
            );
            assert!(schemas.has_schema(&t.name));
            let raw = serde_json::value::to_raw_value(t.example.as_ref().unwrap()).unwrap();
            assert_eq!(schemas.check(&t.name, &raw), Ok(()), "{}", t.name);
        }
    }

    #[test]
    fn a_job_as_herald_sends_it_matches_its_status_schema() {
        use crate::domain::{AccountId, Job, JobPatch, JobStatus, Timestamp};
        let settings = crate::config::Settings::default();
        let schemas = EventSchemas::compile(settings.catalog().unwrap().types()).unwrap();
        let queued = Job {
            id: "job_1".into(),
            account: AccountId::generate(),
            kind: "tts".into(),
            status: JobStatus::Queued,
            progress: 0.0,
            input: Some(serde_json::value::to_raw_value(&json!({"text": "hi"})).unwrap()),
            result: None,
            error: None,
            webhook_url: Some("https://example.com/hook".into()),
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            completed_at: None,
        };
        let to = |job: &Job, status| {
            let patch = JobPatch {
                status: Some(status),
                progress: Some(0.5),
                ..JobPatch::default()
            };
            job.apply(
                &patch,
                Timestamp::from_millis(job.created_at.millis() + 1234),
            )
            .unwrap()
            .0
        };
        let processing = to(&queued, JobStatus::Processing);
        for job in [
            queued.clone(),
            processing.clone(),
            to(&processing, JobStatus::Completed),
            to(&processing, JobStatus::Failed),
        ] {
            let raw = serde_json::value::to_raw_value(&job).unwrap();
            assert_eq!(
                schemas.check(&job.event_type(), &raw),
                Ok(()),
                "{}",
                job.event_type()
            );
        }
        // A queued job's data is not a completed one's.
        let raw = serde_json::value::to_raw_value(&queued).unwrap();
        let v = schemas.check("tts.completed", &raw);
        assert!(
            v.is_ok(),
            "tts.completed is also seed 000's open shape: {v:?}"
        );
        let v = schemas.check("stt.processing", &raw).unwrap_err();
        assert!(
            ["data.kind", "data.status"].contains(&v.path.as_str()),
            "{v:?}"
        );
    }

    #[test]
    fn violations_name_their_path() {
        let schemas = EventSchemas::compile(&[entry(
            json!({
                "type": "object",
                "properties": {
                    "voice": {
                        "type": "object",
                        "properties": { "id": { "type": "string" } },
                        "required": ["id"],
                        "additionalProperties": false,
                    },
                    "status": { "enum": ["done", "failed"] },
                    "segments": { "type": "array", "items": { "type": "number" } },
                    "odd key": { "type": "integer" },
                },
            }),
            None,
        )])
        .unwrap();
        let cases = [
            (
                json!({ "voice": { "id": 5 } }),
                "data.voice.id",
                "is not of type \"string\"",
            ),
            (json!({ "voice": {} }), "data.voice.id", "is required"),
            (
                json!({ "voice": { "id": "v", "x": 1 } }),
                "data.voice.x",
                "is not allowed",
            ),
            (json!({ "status": "gone" }), "data.status", "is not one of"),
            (
                json!({ "segments": [1, "two"] }),
                "data.segments[1]",
                "is not of type \"number\"",
            ),
            (
                json!({ "odd key": 1.5 }),
                "data[\"odd key\"]",
                "is not of type \"integer\"",
            ),
            (json!([]), "data", "is not of type \"object\""),
        ];
        for (data, path, says) in cases {
            let v = check(&schemas, data.clone()).unwrap_err();
            assert_eq!(v.path, path, "{data}: {v:?}");
            assert!(
                v.message.starts_with(path) && v.message.contains(says),
                "{data}: {v:?}"
            );
        }
        assert_eq!(
            check(&schemas, json!({ "voice": { "id": "v" }, "more": true })),
            Ok(())
        );
        assert_eq!(
            EventSchemas::default()
                .check("any.type", &RawValue::from_string("[1]".into()).unwrap()),
            Ok(()),
            "a type without a schema takes any data"
        );
    }

    #[test]
    fn the_default_dialect_is_2020_12_and_nothing_is_fetched() {
        // `prefixItems` exists only since 2020-12.
        let schemas = EventSchemas::compile(&[entry(
            json!({ "type": "array", "prefixItems": [{ "type": "string" }] }),
            None,
        )])
        .unwrap();
        assert!(check(&schemas, json!(["a", 1])).is_ok());
        assert_eq!(check(&schemas, json!([1])).unwrap_err().path, "data[0]");
        let draft7 = EventSchemas::compile(&[entry(
            json!({ "$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{ "type": "string" }] }),
            None,
        )])
        .unwrap();
        assert_eq!(check(&draft7, json!([1])).unwrap_err().path, "data[0]");
        let remote = EventSchemas::compile(&[entry(
            json!({ "$ref": "https://example.com/schemas/render.json" }),
            None,
        )]);
        assert!(remote.is_err(), "a remote $ref is refused at start");
        let formats = EventSchemas::compile(&[entry(
            json!({ "type": "string", "format": "date-time" }),
            None,
        )])
        .unwrap();
        assert!(check(&formats, json!("yesterday")).is_err());
        assert!(check(&formats, json!("2026-04-23T10:12:03Z")).is_ok());
    }

    #[test]
    fn a_bad_schema_or_example_is_refused_naming_type_and_key() {
        let err = EventSchemas::compile(&[entry(json!({ "type": "strin" }), None)])
            .err()
            .unwrap();
        assert!(
            err.starts_with("event_types[\"render.completed\"].schema: "),
            "{err}"
        );
        let err = EventSchemas::compile(&[entry(
            json!({ "type": "object", "required": ["id"] }),
            Some(json!({ "name": "x" })),
        )])
        .err()
        .unwrap();
        assert!(
            err.starts_with("event_types[\"render.completed\"].example: ")
                && err.contains("data.id is required"),
            "{err}"
        );
    }

    /// What a check adds to a publish, beside reading the publish body itself (the JSON parse
    /// every publish already pays). Run: `cargo test --release -p herald --lib cost_of_checks
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_checks() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Publish<'a> {
            account: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            #[serde(borrow)]
            data: &'a RawValue,
        }
        let settings = crate::config::Settings::default();
        let catalog = settings.catalog().unwrap();
        let schemas = EventSchemas::compile(catalog.types()).unwrap();
        let time = |what: &str, f: &mut dyn FnMut()| {
            let n = 200_000;
            let start = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            println!(
                "{what}: {:.0} ns",
                start.elapsed().as_nanos() as f64 / n as f64
            );
        };
        // The benchmark's data (herald-bench), the seed's example, a job as Herald sends it.
        let bench = RawValue::from_string(r#"{"t":1733456789123456,"s":42}"#.into()).unwrap();
        let seed = serde_json::value::to_raw_value(&catalog.get("tts.completed").unwrap().example)
            .unwrap();
        let job = serde_json::value::to_raw_value(
            &catalog.get("transcription.completed").unwrap().example,
        )
        .unwrap();
        let body = format!(
            r#"{{"account":"acc_0193a8f2c0aa7d3e8b1f5c9a2d6e4b80","type":"tts.completed","data":{}}}"#,
            bench.get()
        );
        time("publish body read (baseline)", &mut || {
            std::hint::black_box(serde_json::from_str::<Publish<'_>>(&body).unwrap());
        });
        time("type without a schema", &mut || {
            std::hint::black_box(schemas.check("render.completed", &bench)).unwrap();
        });
        time("tts.completed, the benchmark's data", &mut || {
            std::hint::black_box(schemas.check("tts.completed", &bench)).unwrap();
        });
        time("tts.completed, the seed's example", &mut || {
            std::hint::black_box(schemas.check("tts.completed", &seed)).unwrap();
        });
        time("transcription.completed, a whole job", &mut || {
            std::hint::black_box(schemas.check("transcription.completed", &job)).unwrap();
        });
    }

    #[test]
    fn schema_files_are_read_relative_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), r#"{"type": "object"}"#).unwrap();
        std::fs::write(dir.path().join("e.json"), r#"{"a": null}"#).unwrap();
        let mut types = vec![EventTypeInfo {
            name: "render.completed".into(),
            schema_file: Some("s.json".into()),
            example_file: Some("e.json".into()),
            ..EventTypeInfo::default()
        }];
        read_schema_files(&mut types, dir.path()).unwrap();
        assert_eq!(types[0].schema, Some(json!({ "type": "object" })));
        assert_eq!(types[0].example, Some(json!({ "a": null })));
        EventSchemas::compile(&types).unwrap();
        let mut missing = vec![EventTypeInfo {
            name: "render.completed".into(),
            schema_file: Some("nope.json".into()),
            ..EventTypeInfo::default()
        }];
        let err = read_schema_files(&mut missing, dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("event_types[\"render.completed\"].schema_file"),
            "{err:#}"
        );
    }
}
