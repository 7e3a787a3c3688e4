//! Deliveries and their attempts: the delivery log, and manual retries.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, Timestamp, WebhookId};
use crate::store::{DeliveryQuery, RetryRequest};
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// With the admin token: one account's deliveries (all accounts' if left out). With an API
    /// key: leave out, or the key's own account.
    account: Option<String>,
    /// Only deliveries to this webhook.
    #[param(value_type = Option<WebhookId>)]
    webhook: Option<String>,
    /// Only deliveries of this event.
    #[param(value_type = Option<EventId>)]
    event: Option<String>,
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
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
    let query = DeliveryQuery {
        account: actor.read_scope(&state, p.account.as_deref()).await?,
        webhook: id_param("webhook", &p.webhook, WebhookId::parse)?,
        event: id_param("event", &p.event, EventId::parse)?,
        status,
    };
    let page = page_request(p.cursor.as_deref(), p.limit, |c| {
        DeliveryId::parse(c).is_some()
    })?;
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
    let id = DeliveryId::parse(&id).ok_or_else(|| ApiError::not_found("delivery"))?;
    let delivery = state
        .store
        .get_delivery(scope.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let attempts = state.store.list_attempts(&id).await?;
    Ok(Json(DeliveryDetail { delivery, attempts }))
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
    let id = DeliveryId::parse(&id).ok_or_else(|| ApiError::not_found("delivery"))?;
    match state
        .store
        .retry_delivery(scope.as_ref(), &id, Timestamp::now())
        .await?
    {
        RetryRequest::NotFound => Err(ApiError::not_found("delivery")),
        RetryRequest::Refused(why) => Err(ApiError::conflict("not_retryable", why)),
        RetryRequest::Scheduled(d) => {
            state.waker.wake();
            Ok((StatusCode::ACCEPTED, Json(d)))
        }
    }
}
