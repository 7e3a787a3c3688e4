//! Request extractors whose rejections are the API's JSON errors: a JSON body, query
//! parameters, and the caller's credentials.

use super::AppState;
use super::error::ApiError;
use super::rate_limit::{Credential, Verdict};
use crate::domain::{AccountId, ApiKeyId, Timestamp};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A JSON body: 415 when not declared `application/json`, 400 when it is not JSON, 413 when
/// too large, 408 when it is not all sent within `api.body_timeout`, 422 naming the field when
/// a value has the wrong type or a required field is missing.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// 415 unless the request declares a JSON body (`application/json`, any parameters).
fn require_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if declared {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON, declared with \"Content-Type: application/json\"",
        ))
    }
}

/// The whole body, within the body limit and the body timeout.
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.settings.body_limit;
    let timeout = state.settings.api.body_timeout.0;
    let read = tokio::time::timeout(timeout, Bytes::from_request(req, state)).await;
    let Ok(read) = read else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body was not received within {}s",
                timeout.as_secs_f64()
            ),
        ));
    };
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::malformed(format!("could not read the request body: {rejection}"))
        }
    })
}

/// A JSON body that may be left out entirely (an empty body, or JSON `null`, reads as
/// `T::default()`); one that is there follows the rules of [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        let declared = require_json_content_type(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        declared?;
        // The OpenAPI document describes an optional body as "the object or null".
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Deepest nesting of arrays and objects a request body may have, the body itself counting
/// as one. Free-form values (`data`, a job's `input`) are kept as raw JSON, which serde_json
/// reads without its recursion limit; receivers and the store parse them again, so the limit
/// is enforced here, on the whole text, before anything reads it.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `bytes` nests arrays and objects deeper than `limit` (brackets inside strings do not
/// count). One pass, no allocation; malformed text is left for the parser to report.
fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a JSON object, classifying errors as the API reports them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::malformed(
            "request body is empty; expected a JSON object",
        ));
    };
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::malformed(format!(
            "request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
        )));
    }
    // serde would read an array as the struct's fields in order; only an object is a request.
    if *first != b'{' {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value",
                    "request body must be a JSON object",
                ),
                Err(e) => ApiError::malformed(format!("request body is not valid JSON: {e}")),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de);
    if value.is_ok() {
        de.end()
            .map_err(|e| ApiError::malformed(format!("request body is not valid JSON: {e}")))?;
    }
    value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                // The path already ends at an unknown field; a missing one is named only in
                // the message ("missing field `url`").
                let field = missing_field(&message)
                    .map(|f| join_path(&path, &f))
                    .unwrap_or(path);
                let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message);
                if field == "." {
                    err
                } else {
                    err.with_field(field)
                }
            }
            _ => ApiError::malformed(format!("request body is not valid JSON: {inner}")),
        }
    })
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_owned)
}

fn join_path(parent: &str, field: &str) -> String {
    if parent == "." {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A value that may only be written as a JSON object. serde's derived structs (and internally
/// tagged enums) also take an array of their fields in order, which the API does not promise
/// and its OpenAPI document calls invalid; nested request types (`retry`, `signing`) are read
/// through this, so an array is a 422 naming the field. Reads the object's entries straight
/// from the parser, so a bad field inside is still named by its whole path (`retry.retry_on`).
pub fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct ObjectOnly<T>(T);

    impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Entries<T>(std::marker::PhantomData<T>);

            impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
                type Value = T;

                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }

                fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                    T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                }
            }

            d.deserialize_map(Entries(std::marker::PhantomData))
                .map(ObjectOnly)
        }
    }

    let value: Option<ObjectOnly<T>> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.map(|v| v.0))
}

/// Query parameters, 422 on a bad one.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = format!("bad query parameter {field}: {}", e.into_inner());
                let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message);
                if field == "." {
                    err
                } else {
                    err.with_field(field)
                }
            })
    }
}

/// Who is calling: the operator (admin token) or one account (its API key).
#[derive(Clone, Debug)]
pub enum Actor {
    Admin,
    Account(AccountId),
}

/// The hex SHA-256 under which an API key is stored.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(ApiError::unauthorized)?;
        if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            admit(state, &Credential::Admin)?;
            return Ok(Actor::Admin);
        }
        let hash = hash_key(token);
        match state.store.find_api_key(&hash).await? {
            Some(key) if bool::from(key.hash.as_bytes().ct_eq(hash.as_bytes())) => {
                admit(state, &Credential::Key(hash.into())).inspect_err(|_| {
                    tracing::debug!(account_id = %key.account_id, "request rate limited");
                })?;
                note_use(state, &key.id);
                Ok(Actor::Account(key.account_id))
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// Writes down that a key was used, at most once a minute per node, beside the request.
fn note_use(state: &AppState, key: &ApiKeyId) {
    if !state.key_use.due(key, std::time::Instant::now()) {
        return;
    }
    let (store, key) = (state.store.clone(), key.clone());
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(&key, Timestamp::now()).await {
            tracing::warn!(key_id = %key, error = %e, "could not note an API key's use");
        }
    });
}

/// Takes a token from an authenticated caller's bucket, or refuses with 429. Runs before the
/// handler reads the body, so a refused request writes nothing.
fn admit(state: &AppState, who: &Credential) -> Result<(), ApiError> {
    match state.limiter.check(who) {
        Verdict::Allowed => Ok(()),
        Verdict::Limited { retry_after } => {
            state.metrics.requests_rate_limited.increment(1);
            Err(ApiError::rate_limited(retry_after))
        }
    }
}

impl Actor {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Actor::Admin => Ok(()),
            Actor::Account(_) => Err(ApiError::forbidden("this call needs the admin token")),
        }
    }

    /// The account a call acts for. An account key implies its own; the admin names one.
    pub async fn account(
        &self,
        state: &AppState,
        named: Option<&str>,
    ) -> Result<AccountId, ApiError> {
        match (self, named) {
            (Actor::Account(own), None) => Ok(own.clone()),
            (Actor::Account(own), Some(n)) if n == own.as_str() => Ok(own.clone()),
            (Actor::Account(_), Some(_)) => Err(ApiError::not_found("account")),
            (Actor::Admin, None) => Err(ApiError::invalid(
                "account",
                "with the admin token, name the account (\"account\" in the body, ?account= on reads)",
            )),
            (Actor::Admin, Some(n)) => {
                let id = AccountId::parse(n).ok_or_else(|| ApiError::not_found("account"))?;
                if state.erasures.contains(&id) {
                    return Err(ApiError::not_found("account"));
                }
                if state.known_accounts.contains(&id) {
                    return Ok(id);
                }
                let id = state
                    .store
                    .get_account(&id)
                    .await?
                    .map(|a| a.id)
                    .ok_or_else(|| ApiError::not_found("account"))?;
                state.known_accounts.insert(id.clone());
                Ok(id)
            }
        }
    }

    /// The account a read is limited to: the caller's own, the one the admin named, or none
    /// (the admin's view of every account).
    pub async fn read_scope(
        &self,
        state: &AppState,
        named: Option<&str>,
    ) -> Result<Option<AccountId>, ApiError> {
        match (self, named) {
            (Actor::Admin, None) => Ok(None),
            _ => self.account(state, named).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(deep(64).as_bytes(), 64));
        assert!(nests_deeper_than(deep(65).as_bytes(), 64));
        assert!(nests_deeper_than(
            format!("{{\"a\": {}}}", deep(64)).as_bytes(),
            64
        ));
        let quoted = format!(r#"{{"s": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(quoted.as_bytes(), 2));
        assert!(!nests_deeper_than(br#"{"s": "\\"}"#, 1));
    }
}
