//! Deliveries and their attempts: the delivery log, and manual retries.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, Timestamp, WebhookId};
use crate::store::{DeliveryQuery, RetryRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/{id}", get(show))
        .route("/v1/deliveries/{id}/retry", post(retry))
}

#[derive(Serialize)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    attempts: Vec<Attempt>,
}

#[derive(Deserialize)]
struct ListParams {
    account: Option<String>,
    webhook: Option<String>,
    event: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
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

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

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

/// Makes a new attempt now, also after the delivery failed or succeeded (a replay).
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
