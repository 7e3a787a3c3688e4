//! The records Herald keeps, as the store returns them and the API shows them.

use super::contract::{PayloadFormat, SigningMode, WebhookKind};
use super::event_type::EventFilter;
use super::ids::{AccountId, AttemptId, DeliveryId, EventId, WebhookId};
use super::outcome::ErrorKind;
use super::retry::RetryPolicy;
use super::secret::SigningSecret;
use super::time::Timestamp;
use super::url::WebhookUrl;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Clone, Debug, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Active,
    Disabled,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: WebhookId,
    pub account_id: AccountId,
    pub url: WebhookUrl,
    pub events: Vec<EventFilter>,
    pub secret: SigningSecret,
    pub description: String,
    pub retry: RetryPolicy,
    pub status: WebhookStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub kind: WebhookKind,
    /// For a job's own webhook: the job.
    pub job_id: Option<String>,
    pub signing: SigningMode,
    pub format: PayloadFormat,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub previous_secret: Option<(SigningSecret, Timestamp)>,
    /// Why it was disabled: `gone` (410), `failing`, or `manual`.
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed (none has succeeded since).
    pub failing_since: Option<Timestamp>,
}

impl Webhook {
    /// The secrets that sign a delivery made at `now`: the current one, and the previous one
    /// during its grace period.
    pub fn signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &SigningSecret> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(s, _)| s);
        std::iter::once(&self.secret).chain(previous)
    }
}

/// An event as published: its `data` is kept as the exact JSON text the producer sent.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: EventId,
    pub account: AccountId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: Timestamp,
    pub data: Box<RawValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub account: AccountId,
    pub event_id: EventId,
    pub event_type: String,
    pub webhook_id: WebhookId,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts_made: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One recorded try of a delivery.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub id: AttemptId,
    /// 1 for the first try.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    /// The first bytes of the response body (up to the capture limit), as text.
    pub response_body: Option<String>,
    /// The Herald node that made the attempt.
    pub node: Option<String>,
}
