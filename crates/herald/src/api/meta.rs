//! Liveness and readiness, Prometheus metrics and the event type catalog.

use super::AppState;
use super::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/event-types", get(event_types))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve: the store answers within a moment, its schema is current and (SQLite) its
/// writer commits. Like `/healthz`, it needs no token, and it says what is wrong without detail
/// (the cause is logged).
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
    let not_ready = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why);
    match tokio::time::timeout(WITHIN, state.store.check_ready()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(why)) => Err(not_ready(why)),
        Err(_) => Err(not_ready(
            "the database did not answer within 2s".to_owned(),
        )),
    }
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
