//! A webhook as the API shows it (never its secret, nor a bearer token or header value).

use crate::domain::flow::FlowState;
use crate::domain::{
    AccountId, EventFilter, PayloadFormat, RateLimit, RetryPolicyDoc, SigningMode, Timestamp,
    Webhook, WebhookId, WebhookKind, WebhookOrdering, WebhookStatus,
};
use crate::store::WebhookFlow;
use serde::Serialize;
use utoipa::ToSchema;

/// A webhook as the API shows it: never its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    id: WebhookId,
    #[schema(example = "https://example.com/webhooks")]
    url: String,
    /// Event types (`tts.completed`), prefixes (`tts.*`) or `*`.
    #[schema(example = json!(["tts.*"]))]
    events: Vec<String>,
    status: WebhookStatus,
    created_at: Timestamp,
    account: AccountId,
    description: String,
    /// The policy in force, every field filled in.
    retry: RetryPolicyDoc,
    kind: WebhookKind,
    signing: SigningView,
    format: PayloadFormat,
    /// Why it is disabled: `gone` (the receiver answered 410), `failing` or `manual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    updated_at: Timestamp,
    /// Whether deliveries go in publish order: `none`, per event `ordering_key`, or `fifo`.
    ordering: WebhookOrdering,
    /// At most this many deliveries a second, across all nodes; `null`: no limit.
    rate_limit: Option<RateLimit>,
    /// Whether its deliveries go now, how many wait, and when the next may go (shown by
    /// `GET /v1/webhooks/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<FlowView>,
}

/// A webhook's flow control now.
#[derive(Serialize, ToSchema)]
pub struct FlowView {
    state: FlowState,
    /// Deliveries not finished (due, in flight or scheduled).
    pending: u64,
    /// When the next attempt may go: its earliest due delivery, later if paused, at its rate
    /// limit, or its circuit open (then: the next probe). `null` with nothing pending.
    next_attempt_at: Option<Timestamp>,
}

impl WebhookView {
    pub fn with_flow(mut self, flow: Option<WebhookFlow>) -> Self {
        self.flow = flow.map(|f| FlowView {
            state: f.state,
            pending: f.pending,
            next_attempt_at: f.next_attempt_at,
        });
        self
    }
}

/// A webhook's signing mode as shown: a bearer token or a header's value is never shown.
#[derive(Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum SigningView {
    /// Standard Webhooks HMAC-SHA256 (`v1,…`).
    Standard,
    /// Standard Webhooks ed25519 (`v1a,…`).
    Ed25519,
    /// A static `Authorization: Bearer` token.
    Bearer,
    /// A static header of the account's choosing.
    Header { name: String },
    /// Unauthenticated deliveries.
    None,
}

impl From<&SigningMode> for SigningView {
    fn from(m: &SigningMode) -> Self {
        match m {
            SigningMode::Standard => Self::Standard,
            SigningMode::Ed25519 => Self::Ed25519,
            SigningMode::Bearer { .. } => Self::Bearer,
            SigningMode::Header { name, .. } => Self::Header { name: name.clone() },
            SigningMode::None => Self::None,
        }
    }
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.as_str().to_owned(),
            events: w.events.iter().map(EventFilter::to_pattern).collect(),
            status: w.status,
            created_at: w.created_at,
            account: w.account_id,
            description: w.description,
            retry: w.retry.to_doc(),
            kind: w.kind,
            signing: SigningView::from(&w.signing),
            format: w.format,
            disabled_reason: w.disabled_reason,
            updated_at: w.updated_at,
            rate_limit: w.rate_limit,
            flow: None,
            ordering: w.ordering,
        }
    }
}
