//! Health and the event type catalog.

use super::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/event-types", get(event_types))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The catalog is public: it is the provider's documentation, not account data.
async fn event_types(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "data": state.catalog.types(), "next_cursor": null }))
}
