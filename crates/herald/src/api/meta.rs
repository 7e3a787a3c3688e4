//! Liveness and readiness, Prometheus metrics and the event type catalog.

use super::error::ApiError;
use super::{AppState, ListBody};
use crate::domain::EventTypeInfo;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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

/// One entry of `GET /v1/event-types`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The catalog is public: it is the provider's documentation, not account data. One page: it
/// is configuration, not a growing list.
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
