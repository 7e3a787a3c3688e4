//! The error answers every route shares, added to each operation from what it has (credentials,
//! a JSON body, query parameters), so a route's own annotation lists only what is particular to
//! it and none of these can be forgotten on a new one.
//!
//! Where they come from: the `Actor` extractor (401; 429 from the rate limiter; 503 when the
//! store cannot be reached to check an API key), `Actor::require_admin` (403), `ApiJson` (400,
//! 408, 413, 415, 422) and `ApiQuery` (422), all in `api/extract.rs`.

use serde_json::{Map, Value, json};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Adds the shared answers to every operation of `doc` (a serialized OpenAPI document) that
/// does not list them already.
pub fn add_shared_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        for method in METHODS {
            if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                add_to_operation(op);
            }
        }
    }
}

fn add_to_operation(op: &mut Map<String, Value>) {
    let schemes = security_schemes(op);
    let authenticated = !schemes.is_empty();
    let admin_only = authenticated && schemes.iter().all(|s| s == "admin_token");
    let has_body = op.contains_key("requestBody");
    let has_query = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let mut shared: Vec<(&str, Value)> = Vec::new();
    if has_body {
        shared.push((
            "400",
            error("The body is not valid JSON (`malformed_request`)"),
        ));
        shared.push((
            "408",
            error("The body was not all sent within the body timeout (`request_timeout`)"),
        ));
        shared.push((
            "413",
            error("The body is larger than the limit (`payload_too_large`)"),
        ));
        shared.push((
            "415",
            error("The body is not declared `application/json` (`unsupported_media_type`)"),
        ));
    }
    if has_body || has_query {
        shared.push((
            "422",
            error("A value is missing, of the wrong type or not accepted; `field` names it (`invalid_value`)"),
        ));
    }
    if authenticated {
        shared.push((
            "401",
            error("No credentials, or not valid ones (`unauthorized`)"),
        ));
        shared.push((
            "429",
            with_retry_after(error(
                "This credential is over its request rate (`rate_limited`); retry after `Retry-After` seconds",
            )),
        ));
        shared.push((
            "503",
            with_retry_after(error(
                "The database is unavailable (`store_unavailable`); nothing was written, retry shortly",
            )),
        ));
    }
    if admin_only {
        shared.push((
            "403",
            error("An API key called a route for the admin token (`forbidden`)"),
        ));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    for (status, answer) in shared {
        responses.entry(status).or_insert(answer);
    }
}

/// The names of the security schemes an operation accepts (any one of them will do).
fn security_schemes(op: &Map<String, Value>) -> Vec<String> {
    op.get("security")
        .and_then(Value::as_array)
        .map(|reqs| {
            reqs.iter()
                .filter_map(Value::as_object)
                .flat_map(|req| req.keys().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// An answer with the API's error body.
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } }
        }
    })
}

fn with_retry_after(mut answer: Value) -> Value {
    answer["headers"] = json!({
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": { "type": "integer", "minimum": 1 }
        }
    });
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_what_an_operation_has_and_its_own_stay() {
        let mut doc = json!({ "paths": {
            "/admin": { "post": {
                "security": [{ "admin_token": [] }],
                "requestBody": {},
                "responses": { "422": { "description": "own" } }
            }},
            "/both": { "get": {
                "security": [{ "admin_token": [] }, { "api_key": [] }],
                "parameters": [{ "in": "path", "name": "id" }],
                "responses": {}
            }},
            "/public": { "get": { "responses": { "200": { "description": "ok" } } } }
        }});
        add_shared_errors(&mut doc);
        let codes = |path: &str, method: &str| -> Vec<String> {
            let mut codes: Vec<String> = doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            codes.sort();
            codes
        };
        assert_eq!(
            codes("/admin", "post"),
            [
                "400", "401", "403", "408", "413", "415", "422", "429", "503"
            ]
        );
        assert_eq!(
            doc["paths"]["/admin"]["post"]["responses"]["422"]["description"],
            "own"
        );
        assert_eq!(codes("/both", "get"), ["401", "429", "503"]);
        assert_eq!(codes("/public", "get"), ["200"]);
        assert!(
            doc["paths"]["/both"]["get"]["responses"]["429"]["headers"]["Retry-After"].is_object()
        );
    }
}
