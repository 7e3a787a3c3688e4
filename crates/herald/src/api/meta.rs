//! Health, Prometheus metrics and the event type catalog.

use super::{AppState, ListBody};
use crate::domain::EventTypeInfo;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
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

/// The event type catalog
///
/// Every type that may be published and subscribed to. Public: it is the provider's
/// documentation, not account data. One page holds the whole catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "meta", operation_id = "list_event_types",
    responses((status = 200, description = "The catalog", body = ListBody<EventTypeInfo>)))]
async fn event_types(State(state): State<AppState>) -> Json<ListBody<EventTypeInfo>> {
    Json(ListBody {
        data: state.catalog.types().to_vec(),
        next_cursor: None,
    })
}
