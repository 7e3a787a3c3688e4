//! Events: the provider publishes (admin); accounts read their own.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery, parse_json};
use super::{AppState, ListBody, page_request};
use crate::domain::{AccountId, EventId, Timestamp};
use crate::store::{EventQuery, Idempotency, NewEvent, Published};
use crate::telemetry::StoreOp;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish).get(list))
        .route(
            "/v1/events/batch",
            post(publish_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/v1/events/{id}", get(show))
}

const MAX_IDEMPOTENCY_KEY: usize = 255;
/// A batch may be larger than a single request's body limit.
const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

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

fn check_idempotency_key(key: &str) -> ApiResult<String> {
    let key = key.trim();
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
    Ok(key.to_owned())
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => check_idempotency_key(value.to_str().unwrap_or_default()).map(Some),
    }
}

/// Checks one publish request and makes the event to store.
fn prepare(
    state: &AppState,
    account: AccountId,
    body: PublishBody,
    key: Option<String>,
) -> ApiResult<NewEvent> {
    let event_type = state
        .catalog
        .check_publishable(&body.event_type)
        .map_err(|e| ApiError::invalid("type", e))?;
    check_data(state, event_type.as_str(), &body.data)?;
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
    Ok(NewEvent {
        timestamp,
        idempotency,
        ..NewEvent::new(account, event_type.as_str().to_owned(), body.data)
    })
}

/// 422 when `data` does not match the schema of `event_type`, with `field` the path of what is
/// wrong (`data.voice.id`). A type without a schema takes any data, unread.
pub(super) fn check_data(state: &AppState, event_type: &str, data: &RawValue) -> ApiResult<()> {
    state.schemas.check(event_type, data).map_err(|v| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_violation",
            format!(
                "data does not match the schema of {event_type} (GET /v1/event-types): {}",
                v.message
            ),
        )
        .with_field(v.path)
    })
}

/// Counts what was published and wakes the dispatcher for it.
fn published(state: &AppState, p: &Published) {
    if !p.replayed {
        state.metrics.events_published.increment(1);
        state
            .metrics
            .deliveries_created
            .increment(u64::from(p.deliveries));
        if p.deliveries > p.handed_over {
            state.waker.wake();
        }
    }
}

fn answer(p: Published) -> PublishAnswer {
    PublishAnswer {
        id: p.event.id,
        event_type: p.event.event_type,
        timestamp: p.event.timestamp,
        deliveries: p.deliveries,
    }
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
    let new = prepare(&state, account, body, key)?;
    let p = state
        .metrics
        .time_store(StoreOp::Publish, state.store.publish_event(new))
        .await?;
    published(&state, &p);
    let replayed = p.replayed;
    let mut response = (StatusCode::ACCEPTED, Json(answer(p))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Most events in one batch.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<Box<RawValue>>,
}

/// One event of a batch: a publish body plus its own idempotency key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    account: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    timestamp: Option<String>,
    idempotency_key: Option<String>,
}

/// `POST /v1/events/batch`: up to 1,000 events in one transaction, with a result per event in
/// request order — `{id, type, timestamp, deliveries}` or `{error}` — under the same rules and
/// idempotency as single publishes. A refused event does not stop the others.
async fn publish_batch(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<Json<Value>> {
    actor.require_admin()?;
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "events",
            format!("events must hold 1 to {MAX_BATCH} events"),
        ));
    }
    // Accounts named in the batch, looked up once each.
    let mut accounts: std::collections::HashMap<String, Option<AccountId>> =
        std::collections::HashMap::new();
    let mut slots: Vec<Result<usize, ApiError>> = Vec::with_capacity(body.events.len());
    let mut ready = Vec::new();
    for (i, raw) in body.events.iter().enumerate() {
        let prepared = async {
            let item: BatchItem = parse_json(raw.get().as_bytes())?;
            let key = item
                .idempotency_key
                .as_deref()
                .map(check_idempotency_key)
                .transpose()?;
            let account = match accounts.get(&item.account) {
                Some(known) => known.clone(),
                None => {
                    let found = match actor.account(&state, Some(&item.account)).await {
                        Ok(a) => Some(a),
                        Err(e) if e.status == StatusCode::NOT_FOUND => None,
                        Err(e) => return Err(e),
                    };
                    accounts.insert(item.account.clone(), found.clone());
                    found
                }
            }
            .ok_or_else(|| ApiError::not_found("account"))?;
            let body = PublishBody {
                account: item.account,
                event_type: item.event_type,
                data: item.data,
                timestamp: item.timestamp,
            };
            prepare(&state, account, body, key)
        }
        .await
        .map_err(|e| {
            let f = e
                .field
                .clone()
                .map(|f| format!("events[{i}].{f}"))
                .unwrap_or_else(|| format!("events[{i}]"));
            e.with_field(f)
        });
        slots.push(prepared.map(|event| {
            ready.push(event);
            ready.len() - 1
        }));
    }
    let mut results = state
        .metrics
        .time_store(StoreOp::Publish, state.store.publish_events(ready))
        .await?
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
    let data: Vec<Value> = slots
        .into_iter()
        .map(|slot| {
            let outcome = slot.and_then(|n| {
                results[n]
                    .take()
                    .expect("one result per event")
                    .map_err(ApiError::from)
            });
            match outcome {
                Ok(p) => {
                    published(&state, &p);
                    let replayed = p.replayed;
                    let mut v = json!(answer(p));
                    if replayed {
                        v["replayed"] = json!(true);
                    }
                    v
                }
                Err(e) => e.to_json(),
            }
        })
        .collect();
    Ok(Json(json!({ "data": data })))
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
