//! Event types, the catalog of known ones, and the filters a webhook subscribes with.

use super::shown::shown;
use serde::{Deserialize, Serialize};

const MAX_TYPE_LEN: usize = 128;

/// A dotted, lowercase event type name such as `tts.completed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(s: &str) -> Result<Self, String> {
        let well_formed = !s.is_empty()
            && s.len() <= MAX_TYPE_LEN
            && s.split('.').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
            });
        if well_formed {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "invalid event type {}: use dot-separated lowercase segments of a-z, 0-9, '_' or '-', like \"tts.completed\"",
                shown(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a webhook subscribes to: one exact type, every type under a prefix (`tts.*`), or all (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    All,
    /// Holds the prefix with its trailing dot: `tts.*` is stored as `tts.`.
    Prefix(String),
    Exact(EventType),
}

impl EventFilter {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            return EventType::parse(prefix)
                .map(|t| Self::Prefix(format!("{}.", t.as_str())))
                .map_err(|_| {
                    format!(
                        "invalid event filter {}: a prefix filter looks like \"tts.*\"",
                        shown(s)
                    )
                });
        }
        EventType::parse(s).map(Self::Exact)
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(p) => event_type.starts_with(p.as_str()),
            Self::Exact(t) => t.as_str() == event_type,
        }
    }

    /// The filter as the user wrote it.
    pub fn to_pattern(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Prefix(p) => format!("{p}*"),
            Self::Exact(t) => t.as_str().to_owned(),
        }
    }
}

/// Does any of `filters` accept `event_type`?
pub fn any_matches(filters: &[EventFilter], event_type: &str) -> bool {
    filters.iter().any(|f| f.matches(event_type))
}

/// One entry of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A JSON Schema of the events' `data` (draft 2020-12 unless it names another in
    /// `$schema`). Published data must match it; the server compiles it at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// A `data` value that matches `schema`: what `herald trigger` sends by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<serde_json::Value>,
    /// A JSON file holding `schema` (configuration only; the server reads it at start, relative
    /// to the configuration file, and fills `schema` with it).
    #[serde(default, skip_serializing)]
    pub schema_file: Option<String>,
    /// A JSON file holding `example` (as `schema_file`; JSON can say `null`, TOML cannot).
    #[serde(default, skip_serializing)]
    pub example_file: Option<String>,
}

/// The known event types, from configuration.
#[derive(Clone, Debug)]
pub struct Catalog {
    types: Vec<EventTypeInfo>,
    allow_unknown: bool,
}

impl Catalog {
    pub fn new(types: Vec<EventTypeInfo>, allow_unknown: bool) -> Result<Self, String> {
        for t in &types {
            EventType::parse(&t.name)?;
        }
        Ok(Self {
            types,
            allow_unknown,
        })
    }

    pub fn types(&self) -> &[EventTypeInfo] {
        &self.types
    }

    /// The entry of the type `name`, if the catalog has one.
    pub fn get(&self, name: &str) -> Option<&EventTypeInfo> {
        self.types.iter().find(|t| t.name == name)
    }

    fn known(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn known_names(&self) -> String {
        self.types
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a type an event is published with.
    pub fn check_publishable(&self, s: &str) -> Result<EventType, String> {
        let t = EventType::parse(s)?;
        if self.allow_unknown || self.known(t.as_str()) {
            Ok(t)
        } else {
            Err(format!(
                "unknown event type {}; known types: {}",
                shown(s),
                self.known_names()
            ))
        }
    }

    /// Checks a webhook's subscription: an exact type must be known, a prefix must cover one.
    pub fn check_filter(&self, s: &str) -> Result<EventFilter, String> {
        let f = EventFilter::parse(s)?;
        let ok = self.allow_unknown
            || match &f {
                EventFilter::All => true,
                EventFilter::Prefix(_) => self.types.iter().any(|t| f.matches(&t.name)),
                EventFilter::Exact(t) => self.known(t.as_str()),
            };
        if ok {
            Ok(f)
        } else {
            Err(format!(
                "{} matches no known event type; known types: {}",
                shown(s),
                self.known_names()
            ))
        }
    }
}

pub use crate::default_catalog::default_event_types;

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(default_event_types(), false).unwrap()
    }

    #[test]
    fn filters_match_exact_prefix_and_all() {
        let exact = EventFilter::parse("tts.completed").unwrap();
        let prefix = EventFilter::parse("tts.*").unwrap();
        let all = EventFilter::parse("*").unwrap();
        assert!(exact.matches("tts.completed") && !exact.matches("tts.failed"));
        assert!(prefix.matches("tts.completed") && prefix.matches("tts.failed"));
        assert!(!prefix.matches("stt.completed") && !prefix.matches("ttsx.completed"));
        assert!(all.matches("voice.ready"));
        assert_eq!(prefix.to_pattern(), "tts.*");
    }

    #[test]
    fn catalog_rejects_unknown_types_and_empty_prefixes() {
        let c = catalog();
        assert!(c.check_publishable("tts.completed").is_ok());
        let err = c.check_publishable("tts.exploded").unwrap_err();
        assert!(
            err.contains("tts.completed"),
            "error names the known types: {err}"
        );
        assert!(c.check_filter("voice.*").is_ok());
        assert!(c.check_filter("video.*").is_err());
        assert!(c.check_filter("TTS.completed").is_err());
        assert!(c.check_filter("tts.").is_err());
        assert!(c.check_filter("*.completed").is_err());
    }

    #[test]
    fn allow_unknown_accepts_any_well_formed_type() {
        let c = Catalog::new(default_event_types(), true).unwrap();
        assert!(c.check_publishable("render.done").is_ok());
        assert!(c.check_publishable("render..done").is_err());
    }
}
