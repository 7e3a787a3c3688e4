//! Events: the provider publishes (admin); accounts read their own.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson, ApiQuery, parse_json};
use super::{AppState, ListBody, page_request};
use crate::domain::{AccountId, EventId, EventType, OrderingKey, Timestamp};
use crate::store::{EventQuery, Idempotency, NewEvent, Published};
use crate::telemetry::StoreOp;
use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    let batch = OpenApiRouter::new()
        .routes(routes!(publish_batch))
        .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT));
    OpenApiRouter::new()
        .routes(routes!(publish, list))
        .merge(batch)
        .routes(routes!(show))
}

const MAX_IDEMPOTENCY_KEY: usize = 255;
/// A batch may be larger than a single request's body limit.
const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// The account whose webhooks get the event.
    account: String,
    /// A type of the catalog (`GET /v1/event-types`).
    #[serde(rename = "type")]
    #[schema(example = "tts.completed")]
    event_type: String,
    /// Any JSON value; it is delivered exactly as sent.
    #[schema(value_type = serde_json::Value, example = json!({"id": "tts-123", "duration": 2.5}))]
    data: Box<RawValue>,
    /// When it happened, if not now (RFC 3339).
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    /// 1 to 200 characters. Webhooks with `ordering: "key"` get the events of one key one at a
    /// time, in publish order (a job's status events use the job's id).
    #[schema(min_length = 1, max_length = 200, example = "tts-123")]
    ordering_key: Option<String>,
}

/// A published event.
#[derive(Serialize, ToSchema)]
#[schema(as = Published)]
struct PublishAnswer {
    id: EventId,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: Timestamp,
    /// How many deliveries were created: one per matching active webhook.
    deliveries: u32,
    /// In a batch's results only: `true` when an earlier publish with the same idempotency key
    /// made this event (a single publish says so with the `idempotent-replayed` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<bool>,
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
    let ordering_key = body
        .ordering_key
        .as_deref()
        .map(|k| OrderingKey::parse(k).map_err(|e| ApiError::invalid("ordering_key", e)))
        .transpose()?;
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
        // Only when given, so fingerprints of requests without one stay as they were.
        if let Some(k) = &ordering_key {
            h.update(b"ordering_key\0");
            h.update(k.as_str().as_bytes());
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
        ordering_key,
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
        if p.waiting_for_a_claim() > 0 {
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
        replayed: None,
    }
}

/// Publish an event
///
/// Stores the event and one delivery per matching active webhook of the account, in one
/// transaction, and answers once they are committed. With an `Idempotency-Key`, a repeat of the
/// same request within the idempotency window answers the first result and makes nothing new.
#[utoipa::path(post, path = "/v1/events", tag = "events", operation_id = "publish_event",
    security(("admin_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1 to 255 printable ASCII characters; makes retrying the publish safe")),
    request_body = PublishBody,
    responses(
        (status = 202, description = "Stored with its deliveries", body = PublishAnswer,
            headers(("idempotent-replayed" = String,
                description = "`true` when an earlier request with this key made the event"))),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request \
            (`idempotency_conflict`)", body = ErrorBody),
        (status = 422, description = "An unknown event type, a bad timestamp or key; the field \
            says which (`invalid_value`). Or the data does not match its type's schema \
            (`schema_violation`; `field` is the JSON path of what is wrong, such as \
            `data.voice.id`); nothing is stored", body = ErrorBody),
    ))]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// 1 to 1000 events, each a `BatchItem`. An item that is not one is not a refusal of the
    /// whole batch: its result says what is wrong with it.
    #[schema(value_type = Vec<serde_json::Value>, min_items = 1, max_items = 1000)]
    events: Vec<Box<RawValue>>,
}

/// One event of a batch: a publish body plus its own idempotency key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    account: String,
    #[serde(rename = "type")]
    event_type: String,
    #[schema(value_type = serde_json::Value)]
    data: Box<RawValue>,
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    idempotency_key: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    ordering_key: Option<String>,
}

/// The results of a batch, one per event in request order.
#[derive(Serialize, ToSchema)]
struct BatchAnswer {
    data: Vec<BatchResult>,
}

/// A published event, or why this one was refused.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum BatchResult {
    Published(PublishAnswer),
    Refused(ErrorBody),
}

/// Publish a batch of events
///
/// Up to 1,000 events in one transaction, with a result per event in request order —
/// `{id, type, timestamp, deliveries}` or `{error}` — under the same rules and idempotency as
/// single publishes. A refused event (data that does not match its type's schema answers
/// `schema_violation`, `field` such as `events[3].data.voice.id`) does not stop the others. The
/// body may be up to 16 MiB.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events", operation_id = "publish_events",
    security(("admin_token" = [])),
    request_body = BatchBody,
    responses(
        (status = 200, description = "One result per event", body = BatchAnswer),
        (status = 422, description = "No events, or more than 1000", body = ErrorBody),
    ))]
async fn publish_batch(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<Json<BatchAnswer>> {
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
                ordering_key: item.ordering_key,
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
    let data = slots
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
                    BatchResult::Published(PublishAnswer {
                        replayed: replayed.then_some(true),
                        ..answer(p)
                    })
                }
                Err(e) => BatchResult::Refused(e.body()),
            }
        })
        .collect();
    Ok(Json(BatchAnswer { data }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// With the admin token: one account's events (all accounts' if left out). With an API
    /// key: leave out, or the key's own account.
    account: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

pub(crate) fn time_param(field: &str, value: &Option<String>) -> ApiResult<Option<Timestamp>> {
    value
        .as_deref()
        .map(|v| {
            Timestamp::parse_rfc3339(v)
                .ok_or_else(|| ApiError::invalid(field, format!("{field} must be RFC 3339")))
        })
        .transpose()
}

/// List events
#[utoipa::path(get, path = "/v1/events", tag = "events", operation_id = "list_events",
    security(("admin_token" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of events, newest first",
            body = ListBody<crate::domain::Event>),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "A bad filter, cursor or limit; the field says which",
            body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<crate::domain::Event>>> {
    // Checked like a published type, so that what reaches the store is a plain name (PostgreSQL
    // refuses a NUL in a query parameter).
    let event_type = p
        .event_type
        .as_deref()
        .map(|t| EventType::parse(t).map_err(|e| ApiError::invalid("type", e)))
        .transpose()?;
    let query = EventQuery {
        account: actor.read_scope(&state, p.account.as_deref()).await?,
        event_type: event_type.map(|t| t.as_str().to_owned()),
        since: time_param("since", &p.since)?,
        until: time_param("until", &p.until)?,
        job: None,
    };
    let page = page_request(p.cursor.as_deref(), p.limit, |c| {
        EventId::parse(c).is_some()
    })?;
    Ok(Json(ListBody::from_page(
        state.store.list_events(&query, &page).await?,
        |e| e,
    )))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account the event belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    account: Option<String>,
}

/// Get an event
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", operation_id = "get_event",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = EventId, Path, description = "The event's id"), AccountParam),
    responses(
        (status = 200, description = "The event", body = crate::domain::Event),
        (status = 404, description = "No such event in the account", body = ErrorBody),
    ))]
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
