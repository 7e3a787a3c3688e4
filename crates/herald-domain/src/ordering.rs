//! Ordering per key (docs/architecture.md, "Ordering"): a webhook's `ordering` mode, an event's
//! `ordering_key`, and the rule that gives each delivery its key at fan-out. The store keeps at
//! most one delivery of a key in flight and takes them in publish order; different keys (and
//! deliveries without a key) still go in parallel.

use serde::{Deserialize, Serialize};

/// Longest ordering key, in characters.
pub const MAX_ORDERING_KEY: usize = 200;

/// How a webhook orders its deliveries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOrdering {
    /// No order: deliveries go in parallel, up to the webhook's concurrency (the default).
    #[default]
    None,
    /// Deliveries of one event `ordering_key` go one at a time, in publish order; different
    /// keys go in parallel; events without a key are not ordered.
    Key,
    /// Every delivery of the webhook goes one at a time, in publish order.
    Fifo,
}

/// The key every delivery of a `fifo` webhook gets: one queue for the whole webhook.
const FIFO_KEY: &str = "";

impl WebhookOrdering {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Key => "key",
            Self::Fifo => "fifo",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::None, Self::Key, Self::Fifo]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// The ordering key of a delivery of an event keyed `event_key` to a webhook ordered so:
    /// none (unordered) for `none` or an event without a key under `key`, one constant for
    /// `fifo`.
    pub fn delivery_key(self, event_key: Option<&OrderingKey>) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Key => event_key.map(OrderingKey::as_str),
            Self::Fifo => Some(FIFO_KEY),
        }
    }

    /// A stored delivery key as an event's key: none for a `fifo` webhook's (its key is the
    /// whole webhook, not one the publisher gave).
    pub fn event_key_of(delivery_key: Option<String>) -> Option<String> {
        delivery_key.filter(|k| k != FIFO_KEY)
    }
}

/// An event's ordering key: 1 to [`MAX_ORDERING_KEY`] characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderingKey(String);

impl OrderingKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let n = s.chars().count();
        if n == 0 || n > MAX_ORDERING_KEY || s.chars().any(char::is_control) {
            return Err(format!(
                "ordering_key must be 1 to {MAX_ORDERING_KEY} characters, without control characters"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A key Herald makes itself (a job's id), already known to be well-formed.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_gives_the_delivery_its_key() {
        let key = OrderingKey::parse("job_1").unwrap();
        assert_eq!(WebhookOrdering::None.delivery_key(Some(&key)), None);
        assert_eq!(WebhookOrdering::Key.delivery_key(Some(&key)), Some("job_1"));
        assert_eq!(WebhookOrdering::Key.delivery_key(None), None, "unordered");
        assert_eq!(WebhookOrdering::Fifo.delivery_key(None), Some(""));
        assert_eq!(WebhookOrdering::Fifo.delivery_key(Some(&key)), Some(""));
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(OrderingKey::parse("a").is_ok());
        assert!(OrderingKey::parse(&"é".repeat(MAX_ORDERING_KEY)).is_ok());
        assert!(OrderingKey::parse(&"a".repeat(MAX_ORDERING_KEY + 1)).is_err());
        assert!(OrderingKey::parse("").is_err());
        assert!(OrderingKey::parse("a\0b").is_err());
        assert!(OrderingKey::parse("a\nb").is_err());
    }

    #[test]
    fn modes_round_trip_their_names() {
        for o in [
            WebhookOrdering::None,
            WebhookOrdering::Key,
            WebhookOrdering::Fifo,
        ] {
            assert_eq!(WebhookOrdering::parse(o.as_str()), Some(o));
        }
        assert_eq!(WebhookOrdering::parse("lifo"), None);
    }
}
