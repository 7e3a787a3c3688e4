//! How one webhook's deliveries are shaped and authenticated: the signing mode, the payload
//! format, and which registration model made the webhook.

use super::shown::shown;
use serde::{Deserialize, Serialize};

const MAX_CREDENTIAL: usize = 4096;

/// How a receiver can tell a delivery is genuine.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SigningMode {
    /// Standard Webhooks HMAC-SHA256 (`v1,…`), the default.
    Standard,
    /// Standard Webhooks ed25519 (`v1a,…`); receivers verify with the published public key.
    Ed25519,
    /// A static `Authorization: Bearer <token>` header.
    // Seed 001's newer API.
    Bearer { token: String },
    /// A static header of the account's choosing, such as `secret-key: <key>`.
    // Seed 001's older API.
    Header { name: String, value: String },
    /// No authentication at all: an explicit opt-in.
    // Seed 002.
    None,
}

/// Header names a webhook may not set itself: transport framing, and Herald's own.
fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "user-agent"
            | "authorization"
    ) || n.starts_with("webhook-")
}

fn check_value(what: &str, v: &str) -> Result<(), String> {
    let printable = v
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if v.is_empty() || v.len() > MAX_CREDENTIAL || !printable {
        return Err(format!(
            "{what} must be 1 to {MAX_CREDENTIAL} printable ASCII characters"
        ));
    }
    Ok(())
}

impl SigningMode {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Bearer { token } => check_value("signing.token", token),
            Self::Header { name, value } => {
                if http::HeaderName::try_from(name.as_str()).is_err() || name.len() > 128 {
                    return Err(format!(
                        "signing.name {} is not a valid header name",
                        shown(name)
                    ));
                }
                if is_reserved_header(name) {
                    return Err(format!(
                        "signing.name {} is reserved; use another header name",
                        shown(name)
                    ));
                }
                check_value("signing.value", value)
            }
            _ => Ok(()),
        }
    }

    /// The mode without its credential, for showing.
    pub fn redacted(&self) -> serde_json::Value {
        match self {
            Self::Bearer { .. } => serde_json::json!({ "mode": "bearer" }),
            Self::Header { name, .. } => serde_json::json!({ "mode": "header", "name": name }),
            other => serde_json::to_value(other).expect("modes serialize"),
        }
    }

    /// Whether deliveries carry a Standard Webhooks signature made with the webhook's secret.
    pub fn signs_with_secret(&self) -> bool {
        matches!(self, Self::Standard | Self::Ed25519)
    }
}

/// The body of a delivery.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{"type", "timestamp", "data"}` (field names set by the operator).
    #[default]
    Envelope,
    /// The event's `data`, bare.
    Raw,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Envelope, Self::Raw]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// Which registration model made a webhook: one of the three seed models, or a `herald listen`
/// stream.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// `POST /v1/webhooks` (seed 000).
    Subscription,
    /// The account's single callback URL, subscribed to everything (seed 003).
    Callback,
    /// A job's own `webhook_url`: that job's terminal event only (seed 002).
    Job,
    /// An ephemeral webhook living as long as a `herald listen --forward-to` stream (and its
    /// lease): its deliveries go down that stream, never over HTTP from the server.
    Listener,
    /// The operator's own webhook (`[operator]` in the configuration), in Herald's hidden
    /// operator account: it receives the operator events, is never disabled for failing, and
    /// its failures produce no operator events.
    Operator,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Callback => "callback",
            Self::Job => "job",
            Self::Listener => "listener",
            Self::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Subscription,
            Self::Callback,
            Self::Job,
            Self::Listener,
            Self::Operator,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_mode_refuses_reserved_and_malformed_names() {
        let header = |name: &str, value: &str| SigningMode::Header {
            name: name.into(),
            value: value.into(),
        };
        assert!(header("secret-key", "k_123").validate().is_ok());
        for bad in [
            "Host",
            "content-length",
            "webhook-signature",
            "Authorization",
            "bad header",
            "",
        ] {
            assert!(header(bad, "x").validate().is_err(), "{bad:?}");
        }
        assert!(header("secret-key", "a\r\nb").validate().is_err());
        assert!(
            SigningMode::Bearer {
                token: String::new()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn modes_parse_from_json_and_hide_credentials_when_shown() {
        let m: SigningMode =
            serde_json::from_str(r#"{"mode":"bearer","token":"sk_live"}"#).unwrap();
        assert_eq!(m.redacted(), serde_json::json!({ "mode": "bearer" }));
        assert!(serde_json::from_str::<SigningMode>(r#"{"mode":"hmac"}"#).is_err());
    }
}
