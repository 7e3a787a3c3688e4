//! Prefixed, time-sortable identifiers (`acc_…`, `wh_…`, `evt_…`, `dlv_…`, `tsk_…`).
//!
//! The suffix is a UUIDv7 in lowercase hex: its leading 48 bits are the creation time in
//! milliseconds, so ids sort by creation time and serve directly as pagination cursors.

use super::time::Timestamp;
use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, later in sort order than any made before it in this process.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts only a well-formed id of this kind; anything else is `None`
            /// (callers answer 404 for a path id, 422 for a body or query id).
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?.strip_prefix('_')?;
                let ok = rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                ok.then(|| Self(s.to_owned()))
            }

            /// Wraps a value read back from the store, which only holds ids it made.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            /// A bound between ids of this kind by creation time: every id made before `at`
            /// sorts before it, every id made at or after it sorts after. (The suffix begins
            /// with the creation time in milliseconds, as 12 hex digits.) Lets the store find
            /// records made in a span of time through the primary key.
            pub fn bound_at(at: Timestamp) -> String {
                let millis = at.millis().clamp(0, 0xffff_ffff_ffff);
                format!("{}_{millis:012x}", $prefix)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::string(
                    Some(concat!("^", $prefix, "_[0-9a-f]{32}$")),
                    None,
                    concat!("`", $prefix, "_` and 32 lowercase hex digits (a UUIDv7: ids sort by creation time)"),
                    concat!($prefix, "_0193e5c4a1b27c3d8e9f0a1b2c3d4e5f"),
                )
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An account: one customer of the provider.
    AccountId, "acc"
);
prefixed_id!(
    /// An API key's public id (the key itself is shown once and stored hashed).
    ApiKeyId, "key"
);
prefixed_id!(
    /// A webhook endpoint.
    WebhookId, "wh"
);
prefixed_id!(
    /// A published event.
    EventId, "evt"
);
prefixed_id!(
    /// One event on its way to one webhook; sent as `webhook-id`, stable across retries.
    DeliveryId, "dlv"
);
prefixed_id!(
    /// One try of a delivery.
    AttemptId, "att"
);
prefixed_id!(
    /// A background task (re-queuing deliveries in bulk), whose progress the API shows.
    TaskId, "tsk"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_bound_splits_ids_by_creation_time() {
        let before = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let at = Timestamp::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = EventId::generate();
        let bound = EventId::bound_at(at);
        assert!(before.as_str() < bound.as_str(), "{before} < {bound}");
        assert!(after.as_str() > bound.as_str(), "{after} > {bound}");
        let same_ms = format!("{bound}{}", "0".repeat(20));
        assert!(
            same_ms.as_str() > bound.as_str(),
            "made at `at` is not before it"
        );
    }

    #[test]
    fn generated_ids_parse_and_sort_by_creation() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(EventId::parse(a.as_str()), Some(a.clone()));
        assert!(WebhookId::parse(a.as_str()).is_none());
        assert!(EventId::parse("evt_123").is_none());
        assert!(EventId::parse("evt_0193ABCDEF0123456789ABCDEF012345").is_none());
    }
}
