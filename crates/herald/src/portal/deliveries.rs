//! Deliveries: the log filtered by webhook, event type, status and time (read by the API's own
//! `delivery_query`, so the filters mean what they mean in `GET /v1/deliveries`), a delivery with
//! its attempts, the request as it is sent and each response's status and captured body, and a
//! manual retry.

use super::session::{Form, Session};
use super::{Chrome, PortalResult, render};
use crate::api::AppState;
use crate::api::deliveries::{ListParams, delivery_query, delivery_with_attempts, retry_delivery};
use crate::dispatch::message::MessageFormat;
use crate::domain::{Delivery, DeliveryStatus, Event, Timestamp, Webhook};
use crate::store::{ClaimedDelivery, PageRequest};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// The filter form's fields, as the browser sends them.
#[derive(Default, Deserialize)]
pub(super) struct Filters {
    webhook: Option<String>,
    /// One event's deliveries (a job's page links here).
    event: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    /// `datetime-local` (UTC) or RFC 3339.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

/// A `datetime-local` value (`2026-01-31T12:00`, read as UTC) as RFC 3339; anything else as it
/// came, for the API's check to judge. Empty means unset.
pub(super) fn rfc3339(value: &Option<String>) -> Option<String> {
    let v = value.as_deref()?.trim();
    if v.is_empty() {
        return None;
    }
    Some(if v.len() == 16 && v.as_bytes()[10] == b'T' {
        format!("{v}:00Z")
    } else {
        v.to_owned()
    })
}

fn given(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// A delivery as a row shows it.
pub(super) struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub status: &'static str,
    /// The badge's class for the status.
    pub tone: &'static str,
    pub attempts: u32,
    pub created: String,
    pub next_attempt: String,
    /// For an ordered delivery, its key (or the whole webhook) and its place; else empty.
    pub ordering: String,
}

pub(super) fn tone(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Succeeded => "ok",
        DeliveryStatus::Failed => "bad",
        DeliveryStatus::Pending => "wait",
        DeliveryStatus::Cancelled => "off",
    }
}

impl From<&Delivery> for DeliveryRow {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            event_type: d.event_type.clone(),
            webhook_id: d.webhook_id.to_string(),
            status: d.status.as_str(),
            tone: tone(d.status),
            attempts: d.attempts_made,
            created: d.created_at.to_rfc3339(),
            next_attempt: d
                .next_attempt_at
                .map(Timestamp::to_rfc3339)
                .unwrap_or_default(),
            ordering: match (&d.ordering_key, d.seq) {
                (Some(key), Some(seq)) => format!("{key}, #{seq}"),
                (None, Some(seq)) => format!("the whole webhook, #{seq}"),
                (Some(key), None) => key.clone(),
                (None, None) => String::new(),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "portal/deliveries.html")]
struct ListPage {
    chrome: Chrome,
    error: Option<String>,
    deliveries: Vec<DeliveryRow>,
    /// The account's webhooks for the filter: id and URL.
    webhooks: Vec<(String, String)>,
    types: Vec<String>,
    statuses: [&'static str; 4],
    chosen_webhook: String,
    chosen_type: String,
    chosen_status: String,
    since: String,
    until: String,
    /// The next page's query string.
    next: Option<String>,
}

/// `GET /portal/deliveries`: the account's deliveries, newest first, filtered.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<Filters>,
) -> PortalResult<Response> {
    let params = ListParams {
        webhook: given(&f.webhook),
        event: given(&f.event),
        event_type: given(&f.event_type),
        status: given(&f.status),
        since: rfc3339(&f.since),
        until: rfc3339(&f.until),
        cursor: given(&f.cursor),
        ..ListParams::default()
    };
    let (deliveries, next, error) = match delivery_query(Some(session.account.clone()), &params) {
        Ok((query, page)) => {
            let found = state.store.list_deliveries(&query, &page).await?;
            let next = found.next_cursor.map(|c| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (k, v) in [
                    ("webhook", &params.webhook),
                    ("event", &params.event),
                    ("type", &params.event_type),
                    ("status", &params.status),
                    ("since", &params.since),
                    ("until", &params.until),
                ] {
                    if let Some(v) = v {
                        q.append_pair(k, v);
                    }
                }
                q.append_pair("cursor", &c);
                q.finish()
            });
            (found.items, next, None)
        }
        Err(e) => (Vec::new(), None, Some(e.message)),
    };
    let webhooks = state
        .store
        .list_webhooks(
            &session.account,
            &PageRequest {
                after: None,
                limit: 200,
            },
        )
        .await?
        .items
        .into_iter()
        .map(|w| (w.id.to_string(), w.url.as_str().to_owned()))
        .collect();
    let mut types = vec!["webhook.test".to_owned()];
    types.extend(state.catalog.types().iter().map(|t| t.name.clone()));
    Ok(render(&ListPage {
        chrome: Chrome::new(&state, &session.csrf, "deliveries", "Deliveries".into())
            .with_notice(f.done.as_deref()),
        error,
        deliveries: deliveries.iter().map(DeliveryRow::from).collect(),
        webhooks,
        types,
        statuses: ["pending", "succeeded", "failed", "cancelled"],
        chosen_webhook: params.webhook.clone().unwrap_or_default(),
        chosen_type: params.event_type.clone().unwrap_or_default(),
        chosen_status: params.status.clone().unwrap_or_default(),
        since: f.since.clone().unwrap_or_default(),
        until: f.until.clone().unwrap_or_default(),
        next,
    }))
}

/// One attempt as the page shows it.
struct AttemptRow {
    number: u32,
    started: String,
    duration_ms: u64,
    /// `HTTP 200`, or what went wrong before an answer.
    outcome: String,
    ok: bool,
    response_body: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/delivery.html")]
struct ShowPage {
    chrome: Chrome,
    delivery: DeliveryRow,
    event_id: String,
    /// The webhook's URL, if it still exists.
    url: Option<String>,
    attempts: Vec<AttemptRow>,
    /// The request as Herald sends it: its headers (credentials hidden) and body.
    request: Option<(Vec<(String, String)>, String)>,
}

/// Headers whose values are credentials or signatures: named, not shown.
const HIDDEN: [&str; 2] = ["webhook-signature", "authorization"];

/// The request of the delivery's latest attempt (or its first, before any), built by the
/// dispatcher's own [`MessageFormat`], with every credential's value hidden.
fn request_as_sent(
    state: &AppState,
    delivery: &Delivery,
    event: Event,
    webhook: Webhook,
    at: Timestamp,
) -> Option<(Vec<(String, String)>, String)> {
    let format = MessageFormat::new(&state.settings.delivery).ok()?;
    let custom = match &webhook.signing {
        crate::domain::SigningMode::Header { name, .. } => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    let claim = ClaimedDelivery {
        delivery_id: delivery.id.clone(),
        lease: String::new(),
        attempt_number: delivery.attempts_made.max(1),
        event,
        webhook,
    };
    let body = format.body(&claim);
    let headers = format
        .headers(&claim, &body, at)
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let hidden = HIDDEN.contains(&name.as_str()) || Some(&name) == custom.as_ref();
            let value = if hidden {
                "(hidden)".to_owned()
            } else {
                value.to_str().unwrap_or("").to_owned()
            };
            (name, value)
        })
        .collect();
    Some((headers, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET /portal/deliveries/{id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(f): Query<Filters>,
) -> PortalResult<Response> {
    let account = Some(&session.account);
    let (delivery, attempts) = delivery_with_attempts(&state, account, &id).await?;
    let event = state.store.get_event(account, &delivery.event_id).await?;
    let webhook = state
        .store
        .get_webhook(account, &delivery.webhook_id)
        .await?;
    let url = webhook.as_ref().map(|w| w.url.as_str().to_owned());
    let at = attempts
        .last()
        .map_or(delivery.created_at, |a| a.started_at);
    let request = match (event, webhook) {
        (Some(e), Some(w)) => request_as_sent(&state, &delivery, e, w, at),
        _ => None,
    };
    let attempts = attempts
        .iter()
        .map(|a| AttemptRow {
            number: a.number,
            started: a.started_at.to_rfc3339(),
            duration_ms: a.duration_ms,
            outcome: match (a.status_code, &a.error) {
                (Some(c), _) => format!("HTTP {c}"),
                (None, Some(e)) => e.clone(),
                (None, None) => a.error_kind.map_or("failed", |k| k.as_str()).to_owned(),
            },
            ok: a.status_code.is_some_and(|c| (200..300).contains(&c)),
            response_body: a.response_body.clone().filter(|b| !b.is_empty()),
        })
        .collect();
    Ok(render(&ShowPage {
        chrome: Chrome::new(&state, &session.csrf, "deliveries", "Delivery".into())
            .with_notice(f.done.as_deref()),
        event_id: delivery.event_id.to_string(),
        delivery: DeliveryRow::from(&delivery),
        url,
        attempts,
        request,
    }))
}

/// `POST /portal/deliveries/{id}/retry`: a new attempt now, whatever the delivery's state.
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let delivery = retry_delivery(&state, Some(&form.session.account), &id).await?;
    Ok(Redirect::to(&format!("/portal/deliveries/{}?done=retried", delivery.id)).into_response())
}
