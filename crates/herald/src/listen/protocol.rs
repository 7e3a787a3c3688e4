//! The messages of a `herald listen --forward-to` stream (`GET /v1/listen`, a WebSocket), as
//! JSON text frames. One type for both ends, so the server and the CLI cannot disagree.
//!
//! The server speaks first, with [`ServerMessage::Ready`]; then sends a
//! [`ServerMessage::Delivery`] per attempt, which the CLI answers with a
//! [`ClientMessage::Result`] carrying the same `id`. A close frame from the CLI ends the stream
//! for good (its webhook is deleted); a stream that breaks off leaves the webhook for the CLI to
//! take up again (`?resume=`) within its lease.

use serde::{Deserialize, Serialize};

/// A close code of the server's: the listener webhook was deleted, or another stream took it
/// over; the CLI stops rather than reconnect.
pub const CLOSE_REVOKED: u16 = 4000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The stream is up: the ephemeral webhook that feeds it, and the secret its deliveries are
    /// signed with.
    Ready(Ready),
    /// One attempt of a delivery, to POST to the local URL as it is.
    Delivery(Delivery),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub webhook_id: String,
    /// `whsec_…`: what the local receiver verifies signatures with.
    pub secret: String,
    /// The event types (or patterns) the webhook gets.
    pub events: Vec<String>,
    /// The webhook was taken up again (`?resume=`), not made new.
    pub resumed: bool,
    /// How long the webhook outlives a broken stream, for the CLI to come back within.
    pub lease_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Numbers the attempts of this stream; the answer carries it back.
    pub id: u64,
    pub delivery_id: String,
    pub event_type: String,
    pub attempt: u32,
    /// The request's headers, in order, as a delivery over HTTP carries them.
    pub headers: Vec<(String, String)>,
    /// The request's body, byte for byte (JSON, so text).
    pub body: String,
    /// How long the local receiver has to answer.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// What the local receiver made of a delivery.
    Result(DeliveryResult),
}

/// The local receiver's answer to one [`Delivery`], or why there was none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryResult {
    pub id: u64,
    /// The status it answered with; `None` when it could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The first bytes of its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Its `Retry-After` header, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Why it could not be reached (connection refused, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// It did not answer within the delivery's timeout.
    #[serde(default)]
    pub timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let ready = ServerMessage::Ready(Ready {
            webhook_id: "wh_1".into(),
            secret: "whsec_x".into(),
            events: vec!["*".into()],
            resumed: false,
            lease_seconds: 60,
        });
        let text = serde_json::to_string(&ready).unwrap();
        assert!(
            text.starts_with(r#"{"type":"ready","webhook_id":"wh_1""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), ready);
        let result: ClientMessage =
            serde_json::from_str(r#"{"type":"result","id":7,"status":500}"#).unwrap();
        assert_eq!(
            result,
            ClientMessage::Result(DeliveryResult {
                id: 7,
                status: Some(500),
                ..DeliveryResult::default()
            })
        );
    }
}
