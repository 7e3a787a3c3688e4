//! The records Herald keeps, as the store returns them and the API shows them.

use super::contract::{PayloadFormat, SigningMode, WebhookKind};
use super::event_type::EventFilter;
use super::flow::RateLimit;
use super::ids::{AccountId, AttemptId, DeliveryId, EventId, WebhookId};
use super::ordering::WebhookOrdering;
use super::outcome::ErrorKind;
use super::retry::RetryPolicy;
use super::secret::SigningSecret;
use super::time::Timestamp;
use super::url::WebhookUrl;
use serde::Serialize;
use serde_json::value::RawValue;
use std::time::Duration;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The secret before the last rotation or change of signing mode, still signing until the
    /// time beside it.
    pub previous_secret: Option<(SigningSecret, Timestamp)>,
    /// Why it was disabled: `gone` (410), `failing`, or `manual`.
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed (none has succeeded since).
    pub failing_since: Option<Timestamp>,
    /// At most this many deliveries a second, across all nodes (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Whether its deliveries go in publish order, per key or all of them.
    pub ordering: WebhookOrdering,
    /// Paused by its receiver (until a success after the pause) or its circuit open, when it
    /// was read: the claims decide when its deliveries go.
    pub held: bool,
}

impl Webhook {
    /// Whether publishing may hand this webhook's new deliveries straight to the publishing
    /// node's dispatcher. When not, they are left to the claims, which see the whole queue: a
    /// listener's deliveries go down its stream, on the node holding it; an ordered webhook's
    /// must wait behind the earlier ones of their key, which only a claim sees.
    pub fn takes_hand_overs(&self) -> bool {
        // A rate-limited webhook's allowance is taken in the claims' transactions, so its
        // deliveries all go through them.
        // So is a held one's (paused, or its circuit open): the claims apply its gate.
        self.kind != WebhookKind::Listener
            && self.rate_limit.is_none()
            && self.ordering == WebhookOrdering::None
            && !self.held
    }

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

    /// Replaces the signing secret. The old one keeps signing beside the new one until
    /// `now + grace` (not at all if `grace` is zero), so receivers can move from one to the other;
    /// a secret still in an earlier grace period gives way (there is one previous secret).
    pub fn replace_secret(&mut self, new: SigningSecret, now: Timestamp, grace: Duration) {
        let old = std::mem::replace(&mut self.secret, new);
        self.previous_secret = (!grace.is_zero()).then(|| (old, now.plus(grace)));
    }

    /// Moves to another signing mode. A Standard Webhooks mode that needs a key of the other kind
    /// (HMAC ↔ ed25519) takes `fresh()`, and the old key keeps signing beside it during `grace` if
    /// the old mode signed with it: a receiver still verifying the old scheme is not cut off by
    /// the switch (deliveries carry `v1,… v1a,…` meanwhile).
    pub fn change_signing(
        &mut self,
        mode: SigningMode,
        fresh: impl FnOnce() -> SigningSecret,
        now: Timestamp,
        grace: Duration,
    ) {
        let wants_ed25519 = matches!(mode, SigningMode::Ed25519);
        if mode.signs_with_secret() && wants_ed25519 != self.secret.is_ed25519() {
            let new = fresh();
            debug_assert_eq!(new.is_ed25519(), wants_ed25519);
            let grace = if self.signing.signs_with_secret() {
                grace
            } else {
                Duration::ZERO
            };
            self.replace_secret(new, now, grace);
        }
        self.signing = mode;
    }
}

/// An event as published: its `data` is kept as the exact JSON text the producer sent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: EventId,
    pub account: AccountId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: Timestamp,
    /// Any JSON value, exactly as published.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub data: Box<RawValue>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The key this delivery is ordered under, when its webhook's `ordering` is `key`: it is
    /// attempted only after every earlier delivery of the key has succeeded or failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// Its place in the order of its key (or, `fifo`, of its whole webhook), for an ordered
    /// delivery: a larger one was published later and is attempted after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// One recorded try of a delivery.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn webhook(signing: SigningMode, secret: SigningSecret) -> Webhook {
        let now = Timestamp::from_millis(1_700_000_000_000);
        Webhook {
            id: WebhookId::generate(),
            account_id: AccountId::from_trusted("acc_1".to_owned()),
            url: WebhookUrl::from_trusted("https://example.com/".to_owned()),
            events: vec![EventFilter::All],
            secret,
            description: String::new(),
            retry: RetryPolicy::default(),
            status: WebhookStatus::Active,
            created_at: now,
            updated_at: now,
            kind: WebhookKind::Subscription,
            job_id: None,
            signing,
            format: PayloadFormat::Envelope,
            previous_secret: None,
            disabled_reason: None,
            failing_since: None,
            rate_limit: None,
            ordering: WebhookOrdering::None,
            held: false,
        }
    }

    fn kinds(w: &Webhook, at: Timestamp) -> Vec<bool> {
        w.signing_secrets(at).map(|s| s.is_ed25519()).collect()
    }

    #[test]
    fn a_switch_between_hmac_and_ed25519_signs_with_both_during_the_grace() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let hmac = SigningSecret::generate();
        let mut w = webhook(SigningMode::Standard, hmac.clone());
        w.change_signing(
            SigningMode::Ed25519,
            SigningSecret::generate_ed25519,
            now,
            DAY,
        );
        assert_eq!(w.signing, SigningMode::Ed25519);
        assert_eq!(kinds(&w, now), [true, false]);
        assert_eq!(w.previous_secret, Some((hmac, now.plus(DAY))));
        assert_eq!(kinds(&w, now.plus(DAY)), [true], "the grace has ended");

        let ed = w.secret.clone();
        w.change_signing(SigningMode::Standard, SigningSecret::generate, now, DAY);
        assert_eq!(kinds(&w, now), [false, true]);
        assert_eq!(w.previous_secret, Some((ed, now.plus(DAY))));

        w.change_signing(
            SigningMode::Ed25519,
            SigningSecret::generate_ed25519,
            now,
            Duration::ZERO,
        );
        assert_eq!(kinds(&w, now), [true], "no grace asked for");
    }

    #[test]
    fn ordered_and_listener_webhooks_take_no_hand_overs() {
        let mut w = webhook(SigningMode::Standard, SigningSecret::generate());
        assert!(w.takes_hand_overs());
        w.ordering = WebhookOrdering::Key;
        assert!(!w.takes_hand_overs(), "a claim sees what comes before");
        w.ordering = WebhookOrdering::None;
        w.kind = WebhookKind::Listener;
        assert!(!w.takes_hand_overs());
    }

    #[test]
    fn a_switch_that_keeps_the_key_kind_keeps_the_key() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let hmac = SigningSecret::generate();
        let mut w = webhook(SigningMode::Standard, hmac.clone());
        let bearer = SigningMode::Bearer {
            token: "t".to_owned(),
        };
        w.change_signing(bearer, || unreachable!("no new key"), now, DAY);
        w.change_signing(
            SigningMode::Standard,
            || unreachable!("no new key"),
            now,
            DAY,
        );
        assert_eq!((&w.secret, &w.previous_secret), (&hmac, &None));

        // Deliveries in bearer mode carried no signature: no receiver verifies the old key.
        w.change_signing(SigningMode::None, || unreachable!("no new key"), now, DAY);
        w.change_signing(
            SigningMode::Ed25519,
            SigningSecret::generate_ed25519,
            now,
            DAY,
        );
        assert_eq!(kinds(&w, now), [true]);
    }
}
