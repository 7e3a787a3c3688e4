//! Webhook pages: the list (the portal's home), creating one with an event-type picker that
//! shows each catalog type's description and example, a webhook's page (its details, the edit
//! form with delivery order and rate limit, enable and disable, a test send, delete). Every
//! change goes through the API's own functions (`api::webhooks`, `api::test_send`), so the
//! portal accepts exactly what the API accepts.

use super::session::{Form, Session};
use super::{Chrome, PortalError, PortalResult, render};
use crate::api::error::ApiError;
use crate::api::test_send::{TestSendRequest, send_test as send_test_event};
use crate::api::webhook_flow::RateLimitDoc;
use crate::api::webhooks::{
    CreateWebhook, UpdateWebhook, create_webhook, delete_webhook, enable_webhook, find,
    update_webhook,
};
use crate::api::{AppState, extract::Actor, page_request};
use crate::domain::{EventFilter, Webhook, WebhookId, WebhookOrdering, WebhookStatus};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// `?done=` (what the last action did) and `?cursor=` (a list's page).
#[derive(Default, Deserialize)]
pub(super) struct PageQuery {
    pub done: Option<String>,
    pub cursor: Option<String>,
}

/// A webhook as a list row or a page shows it.
pub(super) struct WebhookRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub status: &'static str,
    pub active: bool,
    pub kind: &'static str,
    pub description: String,
    pub created: String,
    pub disabled_reason: String,
}

/// The delivery order and the rate limit as the forms show them.
#[derive(Clone)]
pub(super) struct FlowFields {
    /// `none`, `key` or `fifo`.
    pub ordering: String,
    /// Deliveries a second and the burst (empty: no rate limit).
    pub rate_per_second: String,
    pub rate_burst: String,
}

/// What [`FlowFields::parse`] gives for the API: the order, if the form has one, and the rate
/// limit, if the form has its field (`Some(None)`: none).
type Flow = (Option<WebhookOrdering>, Option<Option<RateLimitDoc>>);

impl FlowFields {
    /// A new webhook's: in parallel, no rate limit.
    fn of_new() -> Self {
        Self {
            ordering: WebhookOrdering::None.as_str().to_owned(),
            rate_per_second: String::new(),
            rate_burst: String::new(),
        }
    }

    fn of(w: &Webhook) -> Self {
        Self {
            ordering: w.ordering.as_str().to_owned(),
            rate_per_second: w
                .rate_limit
                .map(|r| r.per_second().to_string())
                .unwrap_or_default(),
            rate_burst: w
                .rate_limit
                .map(|r| r.burst().to_string())
                .unwrap_or_default(),
        }
    }

    /// As entered, to show a refused form again.
    fn entered(form: &Form) -> Self {
        let field = |name| form.get(name).unwrap_or("").trim().to_owned();
        Self {
            ordering: form.get("ordering").unwrap_or("none").to_owned(),
            rate_per_second: field("rate_per_second"),
            rate_burst: field("rate_burst"),
        }
    }

    /// The form's order and rate limit as the API takes them; a rate that is not a number, or
    /// an unknown order, is refused.
    fn parse(form: &Form) -> Result<Flow, ApiError> {
        let ordering = form
            .get("ordering")
            .map(|o| {
                WebhookOrdering::parse(o)
                    .ok_or_else(|| ApiError::invalid("ordering", "must be none, key or fifo"))
            })
            .transpose()?;
        let burst_given = form.get("rate_burst").is_some_and(|b| !b.trim().is_empty());
        let rate_limit = match form.get("rate_per_second").map(str::trim) {
            None | Some("") if burst_given => {
                return Err(ApiError::invalid(
                    "rate_limit",
                    "a burst needs its deliveries per second",
                ));
            }
            None => None,
            Some("") => Some(None),
            Some(rate) => {
                let per_second = rate.parse::<f64>().map_err(|_| {
                    ApiError::invalid("rate_limit", "deliveries per second must be a number")
                })?;
                let burst = match form.get("rate_burst").map(str::trim) {
                    None | Some("") => None,
                    Some(b) => Some(b.parse::<u32>().map_err(|_| {
                        ApiError::invalid("rate_limit", "the burst must be a whole number")
                    })?),
                };
                Some(Some(RateLimitDoc::new(per_second, burst)))
            }
        };
        Ok((ordering, rate_limit))
    }
}

impl From<&Webhook> for WebhookRow {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            url: w.url.as_str().to_owned(),
            events: w
                .events
                .iter()
                .map(EventFilter::to_pattern)
                .collect::<Vec<_>>()
                .join(", "),
            status: w.status.as_str(),
            active: w.status == WebhookStatus::Active,
            kind: w.kind.as_str(),
            description: w.description.clone(),
            created: w.created_at.to_rfc3339(),
            disabled_reason: w.disabled_reason.clone().unwrap_or_default(),
        }
    }
}

/// One catalog type in the picker.
pub(super) struct PickerRow {
    pub name: String,
    pub description: String,
    /// The type's example data, pretty-printed.
    pub example: Option<String>,
    pub checked: bool,
}

/// The catalog as checkboxes, those in `chosen` checked (`*` is the "every event" box).
fn picker(state: &AppState, chosen: &[String]) -> Vec<PickerRow> {
    state
        .catalog
        .types()
        .iter()
        .map(|t| PickerRow {
            name: t.name.clone(),
            description: t.description.clone(),
            example: t
                .example
                .as_ref()
                .and_then(|e| serde_json::to_string_pretty(e).ok()),
            checked: chosen.contains(&t.name),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "portal/webhooks.html")]
struct ListPage {
    chrome: Chrome,
    webhooks: Vec<WebhookRow>,
    next: Option<String>,
}

/// `GET /portal`: the account's webhooks, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> PortalResult<Response> {
    let page = page_request(q.cursor.as_deref(), None, |c| WebhookId::parse(c).is_some())?;
    let found = state.store.list_webhooks(&session.account, &page).await?;
    Ok(render(&ListPage {
        chrome: Chrome::new(&state, &session.csrf, "webhooks", "Webhooks".into())
            .with_notice(q.done.as_deref()),
        webhooks: found.items.iter().map(WebhookRow::from).collect(),
        next: found.next_cursor,
    }))
}

#[derive(Template)]
#[template(path = "portal/webhook_new.html")]
struct NewPage {
    chrome: Chrome,
    error: Option<String>,
    url: String,
    description: String,
    all_events: bool,
    picker: Vec<PickerRow>,
    flow: FlowFields,
}

/// `GET /portal/webhooks/new`.
pub(super) async fn new(State(state): State<AppState>, session: Session) -> Response {
    render(&NewPage {
        chrome: Chrome::new(&state, &session.csrf, "webhooks", "New webhook".into()),
        error: None,
        url: String::new(),
        description: String::new(),
        all_events: false,
        picker: picker(&state, &[]),
        flow: FlowFields::of_new(),
    })
}

/// What an API refusal says on a form: the message, and the field it names.
fn form_error(e: &ApiError) -> String {
    match &e.field {
        Some(field) => format!("{} ({field})", e.message),
        None => e.message.clone(),
    }
}

/// `POST /portal/webhooks`: creates a webhook, or shows the form again with what was wrong.
pub(super) async fn create(State(state): State<AppState>, form: Form) -> PortalResult<Response> {
    let created = async {
        let (ordering, rate_limit) = FlowFields::parse(&form)?;
        let body = CreateWebhook {
            url: form.get("url").unwrap_or("").trim().to_owned(),
            events: form.all("events"),
            description: form.get("description").unwrap_or("").to_owned(),
            ordering,
            rate_limit: rate_limit.flatten(),
            ..CreateWebhook::default()
        };
        create_webhook(&state, form.session.account.clone(), &body).await
    };
    match created.await {
        Ok(webhook) => Ok(
            Redirect::to(&format!("/portal/webhooks/{}?done=created", webhook.id)).into_response(),
        ),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let events = form.all("events");
            let page = NewPage {
                chrome: Chrome::new(&state, &form.session.csrf, "webhooks", "New webhook".into()),
                error: Some(form_error(&e)),
                all_events: events.iter().any(|e| e == "*"),
                picker: picker(&state, &events),
                url: form.get("url").unwrap_or("").trim().to_owned(),
                description: form.get("description").unwrap_or("").to_owned(),
                flow: FlowFields::entered(&form),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "portal/webhook.html")]
struct ShowPage {
    chrome: Chrome,
    error: Option<String>,
    webhook: WebhookRow,
    flow: FlowFields,
    all_events: bool,
    picker: Vec<PickerRow>,
    /// The types a test send may use: `webhook.test`, then the catalog's.
    test_types: Vec<String>,
}

fn show_page(
    state: &AppState,
    session: &Session,
    webhook: &Webhook,
    error: Option<String>,
    done: Option<&str>,
) -> ShowPage {
    let patterns: Vec<String> = webhook.events.iter().map(EventFilter::to_pattern).collect();
    let mut test_types = vec!["webhook.test".to_owned()];
    test_types.extend(state.catalog.types().iter().map(|t| t.name.clone()));
    ShowPage {
        chrome: Chrome::new(state, &session.csrf, "webhooks", "Webhook".into()).with_notice(done),
        error,
        webhook: WebhookRow::from(webhook),
        flow: FlowFields::of(webhook),
        all_events: patterns.iter().any(|p| p == "*"),
        picker: picker(state, &patterns),
        test_types,
    }
}

/// The session's webhook `id`; any other is 404.
async fn own(state: &AppState, session: &Session, id: &str) -> PortalResult<Webhook> {
    Ok(find(state, &Actor::Account(session.account.clone()), id, None).await?)
}

/// `GET /portal/webhooks/{id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> PortalResult<Response> {
    let webhook = own(&state, &session, &id).await?;
    Ok(render(&show_page(
        &state,
        &session,
        &webhook,
        None,
        q.done.as_deref(),
    )))
}

/// `POST /portal/webhooks/{id}`: saves the edit form (URL, description, event types, delivery
/// order, rate limit).
pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let webhook = own(&state, &form.session, &id).await?;
    let edited = async { update_webhook(&state, webhook.clone(), &edit_body(&form)?).await };
    match edited.await {
        Ok(w) => Ok(Redirect::to(&format!("/portal/webhooks/{}?done=saved", w.id)).into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let page = show_page(&state, &form.session, &webhook, Some(form_error(&e)), None);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The edit form as the API's update: URL, description, event types, and, when the form has
/// them, the delivery order and the rate limit (an empty rate: none).
fn edit_body(form: &Form) -> Result<UpdateWebhook, ApiError> {
    let (ordering, rate_limit) = FlowFields::parse(form)?;
    Ok(UpdateWebhook {
        url: form.get("url").map(|u| u.trim().to_owned()),
        events: Some(form.all("events")),
        description: form.get("description").map(str::to_owned),
        ordering,
        rate_limit,
        ..UpdateWebhook::default()
    })
}

/// `POST /portal/webhooks/{id}/status` with `status=active|disabled`.
pub(super) async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let webhook = own(&state, &form.session, &id).await?;
    let done = match form.get("status") {
        Some("active") => {
            enable_webhook(&state, &webhook).await?;
            "enabled"
        }
        Some("disabled") => {
            let body = UpdateWebhook {
                status: Some(WebhookStatus::Disabled),
                ..UpdateWebhook::default()
            };
            update_webhook(&state, webhook.clone(), &body).await?;
            "disabled"
        }
        _ => {
            return Err(PortalError::Page {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                title: "Not accepted",
                text: "The status must be active or disabled.".to_owned(),
            });
        }
    };
    Ok(Redirect::to(&format!("/portal/webhooks/{}?done={done}", webhook.id)).into_response())
}

/// `POST /portal/webhooks/{id}/delete`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let webhook = own(&state, &form.session, &id).await?;
    delete_webhook(&state, &webhook).await?;
    Ok(Redirect::to("/portal?done=deleted").into_response())
}

/// `POST /portal/webhooks/{id}/test` with `type`: a test event of that type (its catalog
/// example as data), then the delivery's page.
pub(super) async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let webhook = own(&state, &form.session, &id).await?;
    let body = TestSendRequest {
        event_type: form
            .get("type")
            .filter(|t| *t != "webhook.test")
            .map(str::to_owned),
        data: None,
    };
    let sent = send_test_event(&state, &webhook, body).await?;
    let to = match sent.delivery_id {
        Some(d) => format!("/portal/deliveries/{d}?done=tested"),
        None => format!("/portal/webhooks/{}?done=tested", webhook.id),
    };
    Ok(Redirect::to(&to).into_response())
}
