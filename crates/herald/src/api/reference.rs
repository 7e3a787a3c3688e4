//! The API's reference, needing no credentials: the OpenAPI document at `/openapi.json`
//! (built once at start, `api/openapi/`) and swagger-ui at `/docs`, whose files are built into
//! the binary (utoipa-swagger-ui's `vendored` feature), so the page loads nothing from
//! elsewhere: it works offline and behind any firewall (`tests/it/openapi.rs` checks it in a
//! browser with the network off).

use super::AppState;
use axum::Router;
use serde_json::{Map, Value, json};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where swagger-ui is served (`/docs` redirects here).
const UI_PATH: &str = "/docs/";

/// Describes these two routes in the document's `paths`: swagger-ui's router serves them, not
/// `routes!`, so no handler annotation can.
pub fn describe(paths: &mut Map<String, Value>) {
    paths.insert(
        DOCUMENT_PATH.to_owned(),
        json!({ "get": {
            "tags": ["meta"],
            "operationId": "get_openapi_document",
            "summary": "This document",
            "description": "The OpenAPI 3.1 document of the API, built at start from the code \
                and the configuration (the event catalog, the delivery settings).",
            "responses": { "200": {
                "description": "The document",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }}
        }}),
    );
    paths.insert(
        UI_PATH.to_owned(),
        json!({ "get": {
            "tags": ["meta"],
            "operationId": "get_api_reference",
            "summary": "Interactive reference",
            "description": "swagger-ui over this document, served from the binary.",
            "responses": { "200": {
                "description": "An HTML page",
                "content": { "text/html": { "schema": { "type": "string" } } }
            }}
        }}),
    );
}

pub fn routes(document: Value) -> Router<AppState> {
    // swagger-ui would send the document to validator.swagger.io for a badge: not from here.
    let config = Config::new([DOCUMENT_PATH]).validator_url("none");
    SwaggerUi::new("/docs")
        .external_url_unchecked(DOCUMENT_PATH, document)
        .config(config)
        .into()
}
