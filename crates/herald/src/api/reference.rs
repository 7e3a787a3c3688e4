//! The API's reference, needing no credentials: the OpenAPI document at `/openapi.json`
//! (built once at start, `api/openapi/`) and swagger-ui at `/docs`, whose files are built into
//! the binary (utoipa-swagger-ui's `vendored` feature), so the page loads nothing from
//! elsewhere: it works offline and behind any firewall (`tests/it/openapi.rs` checks it in a
//! browser with the network off).

use super::AppState;
use axum::Router;
use serde_json::Value;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

pub fn routes(document: Value) -> Router<AppState> {
    // swagger-ui would send the document to validator.swagger.io for a badge: not from here.
    let config = Config::new([DOCUMENT_PATH]).validator_url("none");
    SwaggerUi::new("/docs")
        .external_url_unchecked(DOCUMENT_PATH, document)
        .config(config)
        .into()
}
