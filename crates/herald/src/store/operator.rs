//! Operator events (`[operator]`): Herald's own notices to the operator about customers'
//! endpoints (`delivery.exhausted`, `webhook.failing`, `webhook.disabled`, `webhook.recovered`).
//!
//! They are events of a hidden account ([`ACCOUNT`]) whose one webhook ([`WEBHOOK`], of kind
//! `operator`) is the operator's URL, made or updated at every start from the configuration.
//! Each is written in the transaction that writes the condition causing it (the recorder's
//! write, each backend's `record.rs`), so it is as durable as that condition, and the dispatcher
//! delivers and retries it like any event, in the operator webhook's own lane. The backends find
//! the rows in their dialect; what they share is here: the fixed ids, the webhook, and the
//! events' data (what an operator needs, never a customer's payload or a secret).

use super::{AttemptRecord, NewEvent, NextStep};
use crate::domain::{
    AccountId, Attempt, EventFilter, EventTypeInfo, PayloadFormat, RetryPolicy, SigningMode,
    SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind, WebhookOrdering, WebhookStatus,
    WebhookUrl,
};
use serde_json::{Value, json};
use std::time::Duration;

/// The hidden account operator events belong to. Not a well-formed account id, so no API route
/// can name it (a path with it is a 404, a body or query with it a 422).
pub const ACCOUNT: &str = "acc_operator";
/// The operator's webhook, one for all nodes: each node makes or updates it at start.
pub const WEBHOOK: &str = "wh_operator";

/// The operator event types.
pub const EVENT_TYPES: [&str; 4] = [
    "delivery.exhausted",
    "webhook.failing",
    "webhook.disabled",
    "webhook.recovered",
];

/// The hidden account's row, made once (both dialects): `?`s for its id, name and time.
pub(crate) const INSERT_ACCOUNT: &str =
    "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";
/// The account's name, for whoever reads the table.
pub(crate) const ACCOUNT_NAME: &str = "Herald operator (hidden)";

/// How the operator's webhook row is brought in line with the configuration when it exists
/// (both dialects): what the configuration sets, active, undeleted; its failure record is kept.
pub(crate) const UPSERT_WEBHOOK: &str = "ON CONFLICT (id) DO UPDATE SET url = excluded.url,
     events = excluded.events, secret = excluded.secret, description = excluded.description,
     retry = excluded.retry, status = 'active', updated_at = excluded.updated_at,
     signing = excluded.signing, format = excluded.format, previous_secret = NULL,
     previous_secret_until = NULL, disabled_reason = NULL, deleted_at = NULL";

/// What the recorder needs to make operator events (see [`super::HealthPolicy`]).
#[derive(Clone, Copy, Debug)]
pub struct OperatorPolicy {
    /// A webhook failing this long is reported (`webhook.failing`), once per failing spell.
    pub failing_after: Duration,
}

impl OperatorPolicy {
    /// Webhooks failing since this moment (ms) or earlier are reported at `now`.
    pub(crate) fn failing_before(&self, now: Timestamp) -> i64 {
        now.minus(self.failing_after).millis()
    }
}

/// The operator's webhook: the configured URL and secret, every operator event, Standard
/// Webhooks signing, the envelope, and `retry` (the default policy).
pub fn webhook(
    url: WebhookUrl,
    secret: SigningSecret,
    retry: RetryPolicy,
    now: Timestamp,
) -> Webhook {
    Webhook {
        id: WebhookId::from_trusted(WEBHOOK.to_owned()),
        account_id: AccountId::from_trusted(ACCOUNT.to_owned()),
        url,
        events: vec![EventFilter::parse("*").expect("* is a filter")],
        secret,
        description: "Herald's operator events ([operator] in the configuration)".to_owned(),
        retry,
        status: WebhookStatus::Active,
        created_at: now,
        updated_at: now,
        kind: WebhookKind::Operator,
        job_id: None,
        signing: SigningMode::Standard,
        format: PayloadFormat::Envelope,
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        rate_limit: None,
        ordering: WebhookOrdering::None,
        held: false,
    }
}

/// A delivery whose retry policy is spent, as the store found it while writing its result
/// (only while the result's lease still held it, and never one to the operator's webhook).
#[derive(Debug)]
pub(crate) struct Exhausted {
    pub delivery_id: String,
    pub account: String,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub url: String,
}

impl From<(String, String, String, String, String, String)> for Exhausted {
    fn from(r: (String, String, String, String, String, String)) -> Self {
        Self {
            delivery_id: r.0,
            account: r.1,
            event_id: r.2,
            event_type: r.3,
            webhook_id: r.4,
            url: r.5,
        }
    }
}

/// A customer's webhook an operator event is about: id, account, URL, and the start of the
/// failing spell in question (ms), if any.
#[derive(Debug)]
pub(crate) struct Notice {
    pub id: String,
    pub account: String,
    pub url: String,
    pub failing_since: Option<i64>,
}

impl From<(String, String, String, Option<i64>)> for Notice {
    fn from(r: (String, String, String, Option<i64>)) -> Self {
        Self {
            id: r.0,
            account: r.1,
            url: r.2,
            failing_since: r.3,
        }
    }
}

/// The (delivery, lease) of each result that spends its delivery's retry policy.
pub(crate) fn exhausted_keys(records: &[AttemptRecord]) -> Vec<(&str, &str)> {
    records
        .iter()
        .filter(|r| r.next == NextStep::Failed)
        .map(|r| (r.delivery_id.as_str(), r.lease.as_str()))
        .collect()
}

/// `delivery.exhausted` for a delivery the store found spent, with its last attempt.
pub(crate) fn delivery_exhausted(
    found: &Exhausted,
    records: &[AttemptRecord],
    now: Timestamp,
) -> NewEvent {
    let last = records
        .iter()
        .rev()
        .find(|r| r.delivery_id.as_str() == found.delivery_id)
        .map(|r| &r.attempt);
    event(
        "delivery.exhausted",
        json!({
            "account_id": found.account,
            "webhook_id": found.webhook_id,
            "url": found.url,
            "delivery_id": found.delivery_id,
            "event_id": found.event_id,
            "event_type": found.event_type,
            "attempts": last.map(|a| a.number),
            "last_attempt": last.map(attempt),
            "exhausted_at": now,
        }),
        now,
    )
}

/// `webhook.failing`: every attempt has failed since `failing_since`, for `failing_after`.
pub(crate) fn webhook_failing(w: &Notice, records: &[AttemptRecord], now: Timestamp) -> NewEvent {
    event(
        "webhook.failing",
        json!({
            "account_id": w.account,
            "webhook_id": w.id,
            "url": w.url,
            "failing_since": w.failing_since.map(Timestamp::from_millis),
            "last_attempt": last_attempt_to(records, &w.id).map(attempt),
            "reported_at": now,
        }),
        now,
    )
}

/// The operator's copy of `webhook.disabled` (the account gets its own): why (`gone`: it
/// answered 410; `failing`: failing for `delivery.disable_after`).
pub(crate) fn webhook_disabled(
    w: &Notice,
    reason: &str,
    records: &[AttemptRecord],
    now: Timestamp,
) -> NewEvent {
    event(
        "webhook.disabled",
        json!({
            "account_id": w.account,
            "webhook_id": w.id,
            "url": w.url,
            "reason": reason,
            "failing_since": w.failing_since.map(Timestamp::from_millis),
            "last_attempt": last_attempt_to(records, &w.id).map(attempt),
            "disabled_at": now,
        }),
        now,
    )
}

/// `webhook.recovered`: a webhook reported failing (or disabled) succeeded again.
pub(crate) fn webhook_recovered(w: &Notice, now: Timestamp) -> NewEvent {
    event(
        "webhook.recovered",
        json!({
            "account_id": w.account,
            "webhook_id": w.id,
            "url": w.url,
            "failing_since": w.failing_since.map(Timestamp::from_millis),
            "recovered_at": now,
        }),
        now,
    )
}

/// The last attempt to webhook `id` among `records` (the batch being written).
fn last_attempt_to<'a>(records: &'a [AttemptRecord], id: &str) -> Option<&'a Attempt> {
    records
        .iter()
        .rev()
        .find(|r| r.webhook_id.as_str() == id)
        .map(|r| &r.attempt)
}

/// What an operator needs of an attempt: when, what came back or why nothing did. Not the
/// response body: that is the customer's.
fn attempt(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "started_at": a.started_at,
        "duration_ms": a.duration_ms,
        "status": a.status_code,
        "error_kind": a.error_kind.map(|k| k.as_str()),
        "error": a.error,
    })
}

/// The operator event types, each with a JSON Schema of its `data` and an example made by the
/// functions above, for the OpenAPI document's `webhooks` section. They are not in the catalog:
/// no customer subscribes to them or publishes them.
pub fn described() -> Vec<EventTypeInfo> {
    use crate::domain::{AttemptId, DeliveryId, ErrorKind};
    let now = Timestamp::from_millis(1_769_861_100_000);
    let since = Timestamp::from_millis(1_769_857_500_000);
    let webhook = "wh_0193a8f2c1d47e5b9a3c6d2e8f104b7a";
    let w = Notice {
        id: webhook.to_owned(),
        account: "acc_0193a8f2b0c47e5b9a3c6d2e8f104b11".to_owned(),
        url: "https://example.com/hooks".to_owned(),
        failing_since: Some(since.millis()),
    };
    let delivery = DeliveryId::from_trusted("dlv_0193a8f3aa047e5b9a3c6d2e8f104c20".to_owned());
    let records = [AttemptRecord {
        delivery_id: delivery.clone(),
        webhook_id: WebhookId::from_trusted(webhook.to_owned()),
        lease: String::new(),
        attempt: Attempt {
            id: AttemptId::generate(),
            number: 8,
            started_at: now.minus(Duration::from_secs(10)),
            duration_ms: 10_000,
            status_code: None,
            error_kind: Some(ErrorKind::Timeout),
            error: Some("no complete answer within 10s".to_owned()),
            response_body: None,
            node: None,
        },
        next: NextStep::Failed,
        gone: false,
        pause_until: None,
        ordered: false,
    }];
    let exhausted = Exhausted {
        delivery_id: delivery.to_string(),
        account: w.account.clone(),
        event_id: "evt_0193a8f3a9f47e5b9a3c6d2e8f104c1f".to_owned(),
        event_type: "tts.completed".to_owned(),
        webhook_id: w.id.clone(),
        url: w.url.clone(),
    };
    let data = |e: NewEvent| serde_json::from_str::<Value>(e.data.get()).expect("json");
    let examples = [
        (
            "A delivery's retry policy is spent: it failed for good",
            data(delivery_exhausted(&exhausted, &records, now)),
        ),
        (
            "A webhook has been failing for operator.failing_after (once per failing spell)",
            data(webhook_failing(&w, &records, now)),
        ),
        (
            "Herald disabled a webhook (the account gets its own webhook.disabled)",
            data(webhook_disabled(&w, "failing", &records, now)),
        ),
        (
            "A webhook reported failing or disabled succeeded again",
            data(webhook_recovered(&w, now)),
        ),
    ];
    EVENT_TYPES
        .iter()
        .zip(examples)
        .map(|(name, (description, example))| EventTypeInfo {
            name: (*name).to_owned(),
            description: description.to_owned(),
            schema: Some(schema(name)),
            example: Some(example),
            ..EventTypeInfo::default()
        })
        .collect()
}

/// The JSON Schema of an operator event's `data`.
fn schema(event_type: &str) -> Value {
    let string = json!({ "type": "string" });
    let time = json!({ "type": "string", "format": "date-time" });
    let nullable_time = json!({ "type": ["string", "null"], "format": "date-time" });
    let last_attempt = json!({
        "type": ["object", "null"],
        "description": "The last attempt: its answer's status, or why there was none (never the answer's body)",
        "required": ["number", "started_at", "duration_ms", "status", "error_kind", "error"],
        "properties": {
            "number": { "type": "integer", "minimum": 1 },
            "started_at": time,
            "duration_ms": { "type": "integer", "minimum": 0 },
            "status": { "type": ["integer", "null"] },
            "error_kind": { "type": ["string", "null"] },
            "error": { "type": ["string", "null"] }
        }
    });
    let mut properties = json!({
        "account_id": string,
        "webhook_id": string,
        "url": string,
    });
    let extra = match event_type {
        "delivery.exhausted" => json!({
            "delivery_id": string, "event_id": string, "event_type": string,
            "attempts": { "type": ["integer", "null"] }, "last_attempt": last_attempt,
            "exhausted_at": time,
        }),
        "webhook.failing" => json!({
            "failing_since": nullable_time, "last_attempt": last_attempt, "reported_at": time,
        }),
        "webhook.disabled" => json!({
            "reason": { "enum": ["gone", "failing"] }, "failing_since": nullable_time,
            "last_attempt": last_attempt, "disabled_at": time,
        }),
        _ => json!({ "failing_since": nullable_time, "recovered_at": time }),
    };
    let map = properties.as_object_mut().expect("an object");
    map.extend(extra.as_object().expect("an object").clone());
    let required: Vec<String> = map.keys().cloned().collect();
    json!({ "type": "object", "required": required, "properties": properties })
}

fn event(event_type: &str, data: Value, now: Timestamp) -> NewEvent {
    let data = serde_json::value::to_raw_value(&data).expect("json serializes");
    let mut e = NewEvent::new(
        AccountId::from_trusted(ACCOUNT.to_owned()),
        event_type.to_owned(),
        data,
    );
    e.timestamp = now;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AttemptId, DeliveryId, ErrorKind};

    fn record(delivery: &DeliveryId, webhook: &str, number: u32, next: NextStep) -> AttemptRecord {
        AttemptRecord {
            delivery_id: delivery.clone(),
            webhook_id: WebhookId::from_trusted(webhook.to_owned()),
            lease: format!("lease-{number}"),
            attempt: Attempt {
                id: AttemptId::generate(),
                number,
                started_at: Timestamp::from_millis(1_000 * i64::from(number)),
                duration_ms: 12,
                status_code: (number == 3).then_some(503),
                error_kind: (number != 3).then_some(ErrorKind::Timeout),
                error: (number != 3).then(|| "timed out".to_owned()),
                response_body: Some("the customer's own words".to_owned()),
                node: None,
            },
            next,
            gone: false,
            pause_until: None,
            ordered: false,
        }
    }

    #[test]
    fn each_type_is_described_by_a_schema_its_example_matches() {
        let described = described();
        let names: Vec<&str> = described.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, EVENT_TYPES);
        // Compiling checks each example (made by the functions that make the events) against
        // its schema.
        crate::schemas::EventSchemas::compile(&described).unwrap();
    }

    #[test]
    fn only_spent_results_are_exhausted() {
        let (a, b) = (DeliveryId::generate(), DeliveryId::generate());
        let records = [
            record(&a, "wh_1", 1, NextStep::RetryAt(Timestamp::from_millis(5))),
            record(&b, "wh_1", 3, NextStep::Failed),
        ];
        assert_eq!(exhausted_keys(&records), [(b.as_str(), "lease-3")]);
    }

    #[test]
    fn an_exhausted_delivery_is_described_by_its_last_attempt_without_the_answer_body() {
        let d = DeliveryId::generate();
        let records = [
            record(&d, "wh_1", 2, NextStep::RetryAt(Timestamp::from_millis(5))),
            record(&d, "wh_1", 3, NextStep::Failed),
        ];
        let found = Exhausted::from((
            d.to_string(),
            "acc_1".into(),
            "evt_1".into(),
            "tts.completed".into(),
            "wh_1".into(),
            "https://example.com/hook".into(),
        ));
        let e = delivery_exhausted(&found, &records, Timestamp::from_millis(9_000));
        assert_eq!(
            (e.account.as_str(), e.event_type.as_str()),
            (ACCOUNT, "delivery.exhausted")
        );
        let data: Value = serde_json::from_str(e.data.get()).unwrap();
        assert_eq!(data["attempts"], 3);
        assert_eq!(data["last_attempt"]["status"], 503);
        assert_eq!(data["event_type"], "tts.completed");
        assert!(!e.data.get().contains("customer's own words"));
    }

    #[test]
    fn webhook_notices_carry_the_spell_and_the_batch_s_last_attempt() {
        let d = DeliveryId::generate();
        let records = [record(
            &d,
            "wh_1",
            1,
            NextStep::RetryAt(Timestamp::from_millis(5)),
        )];
        let w = Notice::from((
            "wh_1".into(),
            "acc_1".into(),
            "https://example.com/hook".into(),
            Some(1_000),
        ));
        let now = Timestamp::from_millis(60_000);
        for (e, kind) in [
            (webhook_failing(&w, &records, now), "webhook.failing"),
            (
                webhook_disabled(&w, "failing", &records, now),
                "webhook.disabled",
            ),
            (webhook_recovered(&w, now), "webhook.recovered"),
        ] {
            assert_eq!(e.event_type, kind);
            let data: Value = serde_json::from_str(e.data.get()).unwrap();
            assert_eq!(data["webhook_id"], "wh_1");
            assert_eq!(data["account_id"], "acc_1");
            assert_eq!(
                data["failing_since"],
                Timestamp::from_millis(1_000).to_rfc3339()
            );
        }
        let data: Value =
            serde_json::from_str(webhook_failing(&w, &records, now).data.get()).unwrap();
        assert_eq!(data["last_attempt"]["error_kind"], "timeout");
    }
}
