//! What goes on the wire for one attempt: the body in the webhook's format and the headers of
//! the delivery contract (docs/architecture.md), signed per the webhook's signing mode.

use crate::config::{DeliveryIdFormat, DeliverySettings, EnvelopeFields};
use crate::domain::{PayloadFormat, SigningMode, Timestamp};
use crate::store::ClaimedDelivery;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The operator's contract: envelope field names and header names.
pub struct MessageFormat {
    envelope: EnvelopeFields,
    event_type_header: Option<HeaderName>,
    attempt_header: Option<HeaderName>,
    delivery_id_header: Option<(HeaderName, DeliveryIdFormat)>,
}

fn header_name(name: &str) -> anyhow::Result<Option<HeaderName>> {
    Ok(if name.is_empty() {
        None
    } else {
        Some(HeaderName::try_from(name)?)
    })
}

impl MessageFormat {
    pub fn new(settings: &DeliverySettings) -> anyhow::Result<Self> {
        Ok(Self {
            envelope: settings.envelope.clone(),
            event_type_header: header_name(&settings.event_type_header)?,
            attempt_header: header_name(&settings.attempt_header)?,
            delivery_id_header: header_name(&settings.delivery_id_header)?
                .map(|h| (h, settings.delivery_id_format)),
        })
    }

    /// The body: the envelope, or the event's data as published.
    pub fn body(&self, claim: &ClaimedDelivery) -> Vec<u8> {
        let event = &claim.event;
        match claim.webhook.format {
            PayloadFormat::Raw => event.data.get().as_bytes().to_vec(),
            PayloadFormat::Envelope => {
                let json = |s: &str| serde_json::to_string(s).expect("strings serialize");
                let f = &self.envelope;
                format!(
                    "{{{}:{},{}:{},{}:{}}}",
                    json(&f.type_field),
                    json(&event.event_type),
                    json(&f.timestamp_field),
                    json(&event.timestamp.to_rfc3339()),
                    json(&f.data_field),
                    event.data.get()
                )
                .into_bytes()
            }
        }
    }

    /// The headers of one attempt made at `now`.
    pub fn headers(&self, claim: &ClaimedDelivery, body: &[u8], now: Timestamp) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::try_from(value) {
                h.insert(name, v);
            }
        };
        let msg_id = claim.delivery_id.as_str();
        let ts = now.unix_seconds();
        put(http::header::CONTENT_TYPE, "application/json");
        put(HeaderName::from_static("webhook-id"), msg_id);
        put(
            HeaderName::from_static("webhook-timestamp"),
            &ts.to_string(),
        );
        let webhook = &claim.webhook;
        match &webhook.signing {
            SigningMode::Standard | SigningMode::Ed25519 => {
                let mut signatures: Vec<String> = webhook
                    .signing_secrets(now)
                    .map(|s| s.sign(msg_id, ts, body))
                    .collect();
                // During a switch between HMAC and ed25519: `v1,… v1a,…`, in the order of the
                // Standard Webhooks spec's example (stable: the current key first within a kind).
                signatures.sort_by_key(|s| s.starts_with("v1a,"));
                put(
                    HeaderName::from_static("webhook-signature"),
                    &signatures.join(" "),
                );
            }
            SigningMode::Bearer { token } => {
                put(http::header::AUTHORIZATION, &format!("Bearer {token}"))
            }
            SigningMode::Header { name, value } => {
                if let Ok(name) = HeaderName::try_from(name.as_str()) {
                    put(name, value);
                }
            }
            SigningMode::None => {}
        }
        if let Some(name) = &self.event_type_header {
            put(name.clone(), &claim.event.event_type);
        }
        if let Some(name) = &self.attempt_header {
            put(name.clone(), &claim.attempt_number.to_string());
        }
        if let Some((name, format)) = &self.delivery_id_header {
            let value = match format {
                DeliveryIdFormat::Id => msg_id.to_owned(),
                DeliveryIdFormat::Uuid => as_uuid(msg_id),
            };
            put(name.clone(), &value);
        }
        h
    }
}

/// A `dlv_<32 hex>` id written as the hyphenated UUID it is.
fn as_uuid(id: &str) -> String {
    let hex = id.rsplit('_').next().unwrap_or(id);
    uuid::Uuid::try_parse(hex)
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_else(|_| id.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn delivery_ids_read_as_uuids() {
        assert_eq!(
            super::as_uuid("dlv_0193b2c4d5e67f8091a2b3c4d5e6f708"),
            "0193b2c4-d5e6-7f80-91a2-b3c4d5e6f708"
        );
    }
}
