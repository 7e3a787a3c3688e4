//! Health, Prometheus metrics and the event type catalog.

use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/event-types", get(event_types))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text format. Like `/healthz` it needs no token: it holds counts, never ids or data.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The catalog is public: it is the provider's documentation, not account data.
async fn event_types(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "data": state.catalog.types(), "next_cursor": null }))
}
