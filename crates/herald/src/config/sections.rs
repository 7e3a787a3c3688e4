//! The sections of the settings (`[api]`, `[delivery]`, `[retention]`, `[listeners]`,
//! `[tasks]`, `[operator]`, `[portal]`, `[registration.*]`) with their defaults; [`super::Settings`]
//! holds one of each and checks them.

use crate::domain::duration::HumanDuration;
use crate::domain::{PayloadFormat, RetryPolicyDoc, SigningMode};
use ipnet::IpNet;
use serde::Deserialize;
use std::time::Duration;

/// `herald listen --forward-to` streams (`GET /v1/listen`) and their ephemeral webhooks.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerSettings {
    /// How long a listener webhook lives past its stream's last sign of life. The node holding
    /// the stream renews it every third of this; a CLI whose stream broke may take it up again
    /// (same webhook, same secret) within it; once it lapses (the node died, or the CLI did not
    /// come back), retention removes the webhook at its next pass.
    pub lease: HumanDuration,
    /// Streams one account may hold open at once on one node.
    pub max_per_account: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            lease: HumanDuration(Duration::from_secs(60)),
            max_per_account: 10,
        }
    }
}

/// Background tasks (recovering a webhook, bulk retries): how the runner on each node works them.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSettings {
    /// Deliveries re-queued per transaction; also how much due backlog a task's scope may have
    /// before the task waits for the dispatcher to take it.
    pub batch: usize,
    /// How long a task waits before it looks at its scope's backlog again.
    pub pace: HumanDuration,
    /// How often an idle runner looks for tasks made on other nodes (one made on this node
    /// wakes it at once).
    pub poll_interval: HumanDuration,
    /// How long a runner holds a task without renewing it; a task whose runner died is taken up
    /// again once this lapses.
    pub lease: HumanDuration,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            batch: 500,
            pace: HumanDuration(Duration::from_secs(1)),
            poll_interval: HumanDuration(Duration::from_secs(5)),
            lease: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// Limits of the HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Requests each API key may make: a token bucket per key, kept in each node's memory (with
    /// N nodes behind a load balancer a key may get up to N times this).
    pub rate_limit: RateLimit,
    /// The admin token's own bucket. Unlimited by default: the admin token is the provider's
    /// own backend, and publishing is its hot path.
    pub admin_rate_limit: RateLimit,
    /// Open connections the API holds at most (lowered at start to fit the open-file limit).
    /// A new connection beyond it closes the longest-open one that has no request in progress.
    pub max_connections: usize,
    /// Time a connection has to send a complete request head, counted from when it opens and,
    /// on a kept-alive connection, from the end of the previous answer (so it is also the
    /// keep-alive idle timeout).
    pub header_timeout: HumanDuration,
    /// Time a request has to send its whole body once its head has arrived (408 after).
    pub body_timeout: HumanDuration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            rate_limit: RateLimit {
                per_second: 1000,
                burst: Some(2000),
            },
            admin_rate_limit: RateLimit::UNLIMITED,
            max_connections: 10_000,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// A token bucket: `per_second` requests a second on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second; 0 means unlimited.
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet spell; by default twice `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub const UNLIMITED: Self = Self {
        per_second: 0,
        burst: None,
    };

    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0
    }

    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.per_second.saturating_mul(2))
    }
}

/// How long finished records are kept before the janitor prunes them.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Events whose deliveries have all finished (succeeded, failed or cancelled) are deleted
    /// with their deliveries and attempts once this old; `0` keeps them forever.
    pub events: HumanDuration,
    /// Finished (completed or failed) jobs are deleted this long after they finished, with
    /// their own webhook once its deliveries are gone; `0` keeps them forever.
    pub jobs: HumanDuration,
    /// How often a pruning pass runs (the first one a minute after start, or sooner).
    pub interval: HumanDuration,
    /// Most events (or jobs, or idempotency keys, or rows of an account being erased)
    /// deleted in one transaction.
    pub batch: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            events: HumanDuration(Duration::from_secs(30 * 86_400)),
            jobs: HumanDuration(Duration::from_secs(30 * 86_400)),
            interval: HumanDuration(Duration::from_secs(600)),
            batch: 500,
        }
    }
}

/// How deliveries are made.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Whether this node sends deliveries. Off, it stores events and their deliveries but
    /// attempts none (other nodes on the same database still do): a node that only serves the
    /// API, or a server that must send nothing anywhere, such as the one the API fuzzing in
    /// `tests/it/openapi.rs` runs against, whose invented webhook URLs may name any host.
    pub enabled: bool,
    /// Attempts in flight at once on this node.
    pub workers: usize,
    /// Attempts in flight at once to one webhook on this node.
    pub per_webhook_concurrency: usize,
    /// Workers kept for first attempts: retries and re-queued deliveries run on the others, so a
    /// backlog of them never holds up a first attempt. Unset: a quarter of `workers`.
    pub fresh_reserve: Option<usize>,
    /// Retries and re-queued deliveries in flight at once to one webhook on this node; its
    /// first attempts still go beside them. Lower, a backlog falling due together drains more
    /// slowly and is gentler on an endpoint back from failing, and on a small node leaves more
    /// of the cores to other webhooks' first attempts (docs/BENCHMARKS.md). Unset:
    /// `per_webhook_concurrency`.
    pub retry_concurrency: Option<usize>,
    /// Retries starting at once on this node: a retry holds a turn until it ends or has waited
    /// 5 ms for its endpoint. Sent to a fast endpoint, a backlog of retries falling due
    /// together costs the cores, not waiting, and every one running is one more a first
    /// attempt to another webhook queues behind; sent to a slow one, each soon lets the next
    /// start, so its backlog still drains at its concurrency. Unset: twice the cores.
    pub retry_turns: Option<usize>,
    /// Most deliveries leased in one claim.
    pub claim_batch: usize,
    /// How long a claim holds a delivery before another claim may take it. Keep it longer than
    /// the longest webhook timeout, or a slow attempt may be repeated by another node.
    pub lease: HumanDuration,
    /// Longest idle wait between looks at the queue (new work wakes the dispatcher sooner).
    pub poll_interval: HumanDuration,
    /// Bytes of each response body kept with the attempt.
    pub response_capture_bytes: usize,
    pub user_agent: String,
    pub event_type_header: String,
    pub attempt_header: String,
    /// A header carrying the delivery id besides `webhook-id` (seed 002's `X-QuillAI-Delivery`);
    /// empty for none. Empty `event_type_header` or `attempt_header` leave those out too.
    pub delivery_id_header: String,
    /// How `delivery_id_header` shows the id: `id` (`dlv_…`) or `uuid` (the same id as a UUID).
    pub delivery_id_format: DeliveryIdFormat,
    /// The envelope's field names.
    pub envelope: EnvelopeFields,
    /// A webhook whose attempts have all failed for this long is disabled.
    pub disable_after: HumanDuration,
    /// The retry policy of webhooks that do not set their own.
    pub retry: RetryPolicyDoc,
    /// How long shutdown waits for attempts in flight.
    pub shutdown_grace: HumanDuration,
    /// Private networks deliveries may reach outside dev mode (CIDR, e.g. `"10.20.0.0/16"`):
    /// let through both when a webhook URL is checked and at connect time, after DNS.
    pub allow_networks: Vec<IpNet>,
    /// After this many failed attempts in a row to one webhook its circuit opens: its
    /// deliveries wait (not attempted, their schedules and attempts not spent) while one probe a
    /// `probe_interval` tries it, across all nodes; the first success closes it. 0: never.
    pub circuit_after: u32,
    /// How often a webhook whose circuit is open is tried (with a delivery that is due).
    pub probe_interval: HumanDuration,
}

impl DeliverySettings {
    /// Workers kept for first attempts ([`DeliverySettings::fresh_reserve`]).
    pub fn fresh_reserve(&self) -> usize {
        self.fresh_reserve.unwrap_or(self.workers / 4)
    }

    /// Retries holding a turn at once ([`DeliverySettings::retry_turns`]).
    pub fn retry_turns(&self) -> usize {
        self.retry_turns.unwrap_or_else(|| {
            2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Retries in flight at once to one webhook ([`DeliverySettings::retry_concurrency`]).
    pub fn retry_concurrency(&self) -> usize {
        self.retry_concurrency
            .unwrap_or(self.per_webhook_concurrency)
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 64,
            per_webhook_concurrency: 16,
            fresh_reserve: None,
            retry_concurrency: None,
            retry_turns: None,
            claim_batch: 256,
            lease: HumanDuration(Duration::from_secs(120)),
            poll_interval: HumanDuration(Duration::from_secs(1)),
            response_capture_bytes: 4096,
            user_agent: format!("Herald-Webhooks/{}", env!("CARGO_PKG_VERSION")),
            event_type_header: "herald-event-type".to_owned(),
            attempt_header: "herald-attempt".to_owned(),
            delivery_id_header: String::new(),
            delivery_id_format: DeliveryIdFormat::Id,
            envelope: EnvelopeFields::default(),
            disable_after: HumanDuration(Duration::from_secs(5 * 86_400)),
            retry: RetryPolicyDoc::default(),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            allow_networks: Vec::new(),
            circuit_after: 10,
            probe_interval: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryIdFormat {
    Id,
    Uuid,
}

/// The names of the envelope's three fields (seed 000 calls `type` `event`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeFields {
    #[serde(rename = "type")]
    pub type_field: String,
    #[serde(rename = "timestamp")]
    pub timestamp_field: String,
    #[serde(rename = "data")]
    pub data_field: String,
}

impl Default for EnvelopeFields {
    fn default() -> Self {
        Self {
            type_field: "type".into(),
            timestamp_field: "timestamp".into(),
            data_field: "data".into(),
        }
    }
}

/// What webhooks made by one registration model get unless they say otherwise.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelDefaults {
    pub signing: SigningMode,
    pub format: PayloadFormat,
    /// Unset: the operator's default policy (`delivery.retry`).
    pub retry: Option<RetryPolicyDoc>,
}

impl Default for ModelDefaults {
    fn default() -> Self {
        Self {
            signing: SigningMode::Standard,
            format: PayloadFormat::Envelope,
            retry: None,
        }
    }
}

/// Defaults per registration model.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSettings {
    /// `POST /v1/webhooks` (a request may set its own signing, format and retry).
    pub subscription: ModelDefaults,
    /// `PUT /v1/me/callback-url`.
    pub callback: ModelDefaults,
    /// A job's `webhook_url`.
    pub job: ModelDefaults,
}

/// The operator's own events (`delivery.exhausted`, `webhook.failing`, `webhook.disabled`,
/// `webhook.recovered`), sent to `url` signed with `secret` by Herald's own dispatcher
/// (`store/operator.rs`). Unset `url` (the default): none are made, and a node that starts so
/// removes the operator's webhook.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorSettings {
    /// Where the operator events go (also `HERALD_OPERATOR_URL`). Trusted configuration: `http`
    /// is allowed and the egress policy does not apply to it (it is the operator's own
    /// endpoint, often on an internal network).
    pub url: Option<String>,
    /// The Standard Webhooks secret (`whsec_…`) the events are signed with (also
    /// `HERALD_OPERATOR_SECRET`).
    pub secret: Option<OperatorSecret>,
    /// How long a webhook must have been failing (every attempt failed) before
    /// `webhook.failing` is sent; below `delivery.disable_after`, so it comes before the
    /// webhook is disabled.
    pub failing_after: HumanDuration,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            failing_after: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// The customer portal (`/portal`): how it presents the provider, where it may be embedded, and
/// how long its links and sessions last.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSettings {
    /// The provider's name, in every page's header and title.
    pub provider_name: String,
    /// An image shown beside the name (an absolute `https://` URL, or `http://` in dev mode);
    /// none by default. The page's Content-Security-Policy allows images from its origin.
    pub logo_url: Option<String>,
    /// Colours, as `#rgb` or `#rrggbb`.
    pub colors: PortalColors,
    /// Origins that may show the portal in a frame (`https://dashboard.example.com`), the
    /// Content-Security-Policy's `frame-ancestors`; empty (the default): none may. The session
    /// cookie is `SameSite=Lax`, so an embedding page must be on the same site as Herald.
    pub frame_ancestors: Vec<String>,
    /// The address customers reach Herald at (`https://hooks.example.com`), from which portal
    /// links are made; unset: the `Host` of the request that asks for the link.
    pub public_url: Option<String>,
    /// How long a session lasts once a link opened it.
    pub session_lifetime: HumanDuration,
    /// How long a link may wait to be opened.
    pub link_lifetime: HumanDuration,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            provider_name: "Herald".to_owned(),
            logo_url: None,
            colors: PortalColors::default(),
            frame_ancestors: Vec::new(),
            public_url: None,
            session_lifetime: HumanDuration(Duration::from_secs(8 * 3600)),
            link_lifetime: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// The operator's signing secret as configured. `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct OperatorSecret(pub String);

impl std::fmt::Debug for OperatorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorSecret(…)")
    }
}

/// The portal's colours. Text on `primary` is white, so it must be dark enough to read.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalColors {
    /// Buttons, links and the chart's line.
    pub primary: String,
    /// The header bar (its text is white).
    pub header: String,
}

impl Default for PortalColors {
    fn default() -> Self {
        Self {
            primary: "#1d4ed8".to_owned(),
            header: "#1e293b".to_owned(),
        }
    }
}

impl PortalSettings {
    /// Checks what serde cannot; every message names its key.
    pub fn check(&self, dev: bool) -> Result<(), String> {
        let name = self.provider_name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("portal.provider_name must be 1 to 100 printable characters".into());
        }
        for (key, value) in [
            ("portal.colors.primary", &self.colors.primary),
            ("portal.colors.header", &self.colors.header),
        ] {
            if !is_hex_colour(value) {
                return Err(format!(
                    "{key} must be a colour as #rgb or #rrggbb, not {value:?}"
                ));
            }
        }
        if let Some(logo) = &self.logo_url {
            web_url(logo, dev).map_err(|e| format!("portal.logo_url: {e}"))?;
        }
        if let Some(public) = &self.public_url {
            web_url(public, dev).map_err(|e| format!("portal.public_url: {e}"))?;
        }
        for origin in &self.frame_ancestors {
            let url = web_url(origin, dev).map_err(|e| format!("portal.frame_ancestors: {e}"))?;
            if url.origin().ascii_serialization() != origin.trim_end_matches('/') {
                return Err(format!(
                    "portal.frame_ancestors: {origin:?} is not an origin (scheme, host and port only)"
                ));
            }
        }
        let (session, link) = (self.session_lifetime.0, self.link_lifetime.0);
        if session < Duration::from_secs(1) || session > Duration::from_secs(30 * 86_400) {
            return Err("portal.session_lifetime must be between 1s and 30d".into());
        }
        if link < Duration::from_secs(1) || link > Duration::from_secs(7 * 86_400) {
            return Err("portal.link_lifetime must be between 1s and 7d".into());
        }
        Ok(())
    }

    /// The origin of the logo, which the Content-Security-Policy lets images come from.
    pub fn logo_origin(&self) -> Option<String> {
        let url = url::Url::parse(self.logo_url.as_deref()?).ok()?;
        Some(url.origin().ascii_serialization())
    }
}

fn is_hex_colour(value: &str) -> bool {
    value
        .strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An absolute `https://` URL (`http://` too in dev mode) with a host.
fn web_url(text: &str, dev: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme_ok = url.scheme() == "https" || (dev && url.scheme() == "http");
    if !scheme_ok || url.host_str().is_none() {
        return Err(format!(
            "{text:?} must be an https:// URL (http:// only in dev mode)"
        ));
    }
    Ok(url)
}
