//! Events: the provider publishes (admin); accounts read their own.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{EventId, Timestamp};
use crate::store::{EventQuery, Idempotency, NewEvent};
use crate::telemetry::StoreOp;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish).get(list))
        .route("/v1/events/{id}", get(show))
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    account: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    /// When it happened, if not now (RFC 3339).
    timestamp: Option<String>,
}

#[derive(Serialize)]
struct PublishAnswer {
    id: EventId,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: Timestamp,
    /// How many deliveries were created: one per matching active webhook.
    deliveries: u32,
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        ));
    }
    Ok(Some(key.to_owned()))
}

async fn publish(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PublishBody>,
) -> ApiResult<Response> {
    actor.require_admin()?;
    let key = idempotency_key(&headers)?;
    let account = actor.account(&state, Some(&body.account)).await?;
    let event_type = state
        .catalog
        .check_publishable(&body.event_type)
        .map_err(|e| ApiError::invalid("type", e))?;
    let timestamp = match &body.timestamp {
        Some(t) => Timestamp::parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid(
                "timestamp",
                "timestamp must be RFC 3339, like 2026-01-29T11:35:00Z",
            )
        })?,
        None => Timestamp::now(),
    };
    let idempotency = key.map(|key| {
        let mut h = Sha256::new();
        for part in [
            event_type.as_str(),
            body.data.get(),
            body.timestamp.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        Idempotency {
            key,
            fingerprint: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            valid_since: Timestamp::now().minus(state.settings.idempotency_window.0),
        }
    });
    let new = NewEvent {
        timestamp,
        idempotency,
        ..NewEvent::new(account, event_type.as_str().to_owned(), body.data)
    };
    let published = state
        .metrics
        .time_store(StoreOp::Publish, state.store.publish_event(new))
        .await?;
    if !published.replayed {
        state.metrics.events_published.increment(1);
        state
            .metrics
            .deliveries_created
            .increment(u64::from(published.deliveries));
        if published.deliveries > 0 {
            state.waker.wake();
        }
    }
    let answer = PublishAnswer {
        id: published.event.id,
        event_type: published.event.event_type,
        timestamp: published.event.timestamp,
        deliveries: published.deliveries,
    };
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if published.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Deserialize)]
struct ListParams {
    account: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn time_param(field: &str, value: &Option<String>) -> ApiResult<Option<Timestamp>> {
    value
        .as_deref()
        .map(|v| {
            Timestamp::parse_rfc3339(v)
                .ok_or_else(|| ApiError::invalid(field, format!("{field} must be RFC 3339")))
        })
        .transpose()
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<crate::domain::Event>>> {
    let query = EventQuery {
        account: actor.read_scope(&state, p.account.as_deref()).await?,
        event_type: p.event_type.clone(),
        since: time_param("since", &p.since)?,
        until: time_param("until", &p.until)?,
    };
    let page = page_request(p.cursor.as_deref(), p.limit, |c| {
        EventId::parse(c).is_some()
    })?;
    Ok(Json(ListBody::from_page(
        state.store.list_events(&query, &page).await?,
        |e| e,
    )))
}

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<crate::domain::Event>> {
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    let id = EventId::parse(&id).ok_or_else(|| ApiError::not_found("event"))?;
    state
        .store
        .get_event(scope.as_ref(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("event"))
}
