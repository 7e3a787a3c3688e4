//! Liveness and readiness, Prometheus metrics and the event type catalog.

use super::error::{ApiError, ErrorBody};
use super::{AppState, ListBody};
use crate::domain::EventTypeInfo;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(event_types))
}

#[derive(Serialize, ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// Answers as long as the process serves HTTP. Needs no credentials.
#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "health",
    responses((status = 200, description = "The server is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
}

/// Readiness
///
/// Ready to serve: the store answers within a moment, its schema is current and (SQLite) its
/// writer commits. Like `/healthz`, it needs no token, and it says what is wrong without detail
/// (the cause is logged).
#[utoipa::path(get, path = "/readyz", tag = "meta", operation_id = "ready",
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "Not ready (`not_ready`); the message says why",
            body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
    let not_ready = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why);
    match tokio::time::timeout(WITHIN, state.store.check_ready()).await {
        Ok(Ok(())) => Ok(Json(Ready { status: "ready" })),
        Ok(Err(why)) => Err(not_ready(why)),
        Err(_) => Err(not_ready(
            "the database did not answer within 2s".to_owned(),
        )),
    }
}

/// Prometheus metrics
///
/// Prometheus text format. Like `/healthz` it needs no token: it holds counts, never ids or data.
#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format (version 0.0.4)",
        content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// One entry of `GET /v1/event-types`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventTypeView {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the events' `data`; published data must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// An example of `data` (what `herald trigger` sends unless told otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

impl From<&EventTypeInfo> for EventTypeView {
    fn from(t: &EventTypeInfo) -> Self {
        Self {
            name: t.name.clone(),
            description: t.description.clone(),
            schema: t.schema.clone(),
            example: t.example.clone(),
        }
    }
}

/// The event type catalog
///
/// Every type that may be published and subscribed to, with the JSON Schema its data must match
/// and an example. Public: it is the provider's documentation, not account data. One page holds
/// the whole catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "meta", operation_id = "list_event_types",
    responses((status = 200, description = "The catalog", body = ListBody<EventTypeView>)))]
async fn event_types(State(state): State<AppState>) -> Json<ListBody<EventTypeView>> {
    Json(ListBody {
        data: state
            .catalog
            .types()
            .iter()
            .map(EventTypeView::from)
            .collect(),
        next_cursor: None,
    })
}
