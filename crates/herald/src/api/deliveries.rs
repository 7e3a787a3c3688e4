//! Deliveries and their attempts: the delivery log, and manual retries.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::events::time_param;
use super::extract::{Actor, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{
    AccountId, Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, EventType, Timestamp,
    WebhookId,
};
use crate::store::{DeliveryQuery, PageRequest, RetryRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(retry))
}

/// A delivery with every attempt made so far, oldest first.
#[derive(Serialize, ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    attempts: Vec<Attempt>,
}

#[derive(Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// With the admin token: one account's deliveries (all accounts' if left out). With an API
    /// key: leave out, or the key's own account.
    pub(crate) account: Option<String>,
    /// Only deliveries to this webhook.
    #[param(value_type = Option<WebhookId>)]
    pub(crate) webhook: Option<String>,
    /// Only deliveries of this event.
    #[param(value_type = Option<EventId>)]
    pub(crate) event: Option<String>,
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    pub(crate) status: Option<String>,
    /// Only deliveries of events of this type.
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    /// Only deliveries made at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) since: Option<String>,
    /// Only deliveries made before this time (RFC 3339).
    #[param(format = DateTime)]
    pub(crate) until: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    pub(crate) cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub(crate) limit: Option<u32>,
}

fn id_param<T>(
    field: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> ApiResult<Option<T>> {
    value
        .as_deref()
        .map(|v| {
            parse(v).ok_or_else(|| ApiError::invalid(field, format!("{field} is not a valid id")))
        })
        .transpose()
}

/// The store query and page a delivery list's parameters ask for, each checked (the API's list
/// and the portal's filter form); `scope` is the account the caller may see.
pub(crate) fn delivery_query(
    scope: Option<AccountId>,
    p: &ListParams,
) -> ApiResult<(DeliveryQuery, PageRequest)> {
    let status = p
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "status must be pending, succeeded, failed or cancelled",
                )
            })
        })
        .transpose()?;
    // Checked like a published type, so what reaches the store is a plain name.
    let event_type = p
        .event_type
        .as_deref()
        .map(|t| EventType::parse(t).map_err(|e| ApiError::invalid("type", e)))
        .transpose()?;
    let query = DeliveryQuery {
        account: scope,
        webhook: id_param("webhook", &p.webhook, WebhookId::parse)?,
        event: id_param("event", &p.event, EventId::parse)?,
        status,
        event_type: event_type.map(|t| t.as_str().to_owned()),
        since: time_param("since", &p.since)?,
        until: time_param("until", &p.until)?,
    };
    let page = page_request(p.cursor.as_deref(), p.limit, |c| {
        DeliveryId::parse(c).is_some()
    })?;
    Ok((query, page))
}

/// List deliveries
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", operation_id = "list_deliveries",
    security(("admin_token" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of deliveries, newest first",
            body = ListBody<Delivery>),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "A bad filter, cursor or limit; the field says which",
            body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<Delivery>>> {
    let scope = actor.read_scope(&state, p.account.as_deref()).await?;
    let (query, page) = delivery_query(scope, &p)?;
    Ok(Json(ListBody::from_page(
        state.store.list_deliveries(&query, &page).await?,
        |d| d,
    )))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account the delivery belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    account: Option<String>,
}

/// Get a delivery and its attempts
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries",
    operation_id = "get_delivery",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = DeliveryId, Path, description = "The delivery's id (its `webhook-id`)"),
        AccountParam),
    responses(
        (status = 200, description = "The delivery with its attempts", body = DeliveryDetail),
        (status = 404, description = "No such delivery in the account", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<DeliveryDetail>> {
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    let (delivery, attempts) = delivery_with_attempts(&state, scope.as_ref(), &id).await?;
    Ok(Json(DeliveryDetail { delivery, attempts }))
}

/// A delivery the caller may see (`scope`), with its attempts, oldest first; anything else is
/// 404.
pub(crate) async fn delivery_with_attempts(
    state: &AppState,
    scope: Option<&AccountId>,
    id: &str,
) -> ApiResult<(Delivery, Vec<Attempt>)> {
    let id = DeliveryId::parse(id).ok_or_else(|| ApiError::not_found("delivery"))?;
    let delivery = state
        .store
        .get_delivery(scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let attempts = state.store.list_attempts(&id).await?;
    Ok((delivery, attempts))
}

/// Retry a delivery
///
/// Makes a new attempt now, also after the delivery failed or succeeded (a replay).
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    operation_id = "retry_delivery",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = DeliveryId, Path, description = "The delivery's id (its `webhook-id`)"),
        AccountParam),
    responses(
        (status = 202, description = "Due now", body = Delivery),
        (status = 404, description = "No such delivery in the account", body = ErrorBody),
        (status = 409, description = "It cannot be retried: its webhook was deleted \
            (`not_retryable`)", body = ErrorBody),
    ))]
async fn retry(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    let delivery = retry_delivery(&state, scope.as_ref(), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// Makes a delivery the caller may see due now, and wakes the dispatcher.
pub(crate) async fn retry_delivery(
    state: &AppState,
    scope: Option<&AccountId>,
    id: &str,
) -> ApiResult<Delivery> {
    let id = DeliveryId::parse(id).ok_or_else(|| ApiError::not_found("delivery"))?;
    match state
        .store
        .retry_delivery(scope, &id, Timestamp::now())
        .await?
    {
        RetryRequest::NotFound => Err(ApiError::not_found("delivery")),
        RetryRequest::Refused(why) => Err(ApiError::conflict("not_retryable", why)),
        RetryRequest::Scheduled(d) => {
            state.waker.wake();
            Ok(d)
        }
    }
}
