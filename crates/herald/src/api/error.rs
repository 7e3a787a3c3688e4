//! The one error type of the API, rendered as `{"error": {"code", "message", "field"?}}`.

use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Whole seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials: send \"Authorization: Bearer <admin token or API key>\"",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 422: the request is well-formed but `field` holds a value Herald does not accept.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message).with_field(field)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 429: the caller's credential is over its request rate; a request fits again after
    /// `retry_after` (rounded up to whole seconds, at least one).
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests with this credential; retry after the time in Retry-After",
        );
        e.retry_after = Some(seconds.max(1));
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the server log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict => {
                Self::conflict("idempotency_conflict", e.to_string())
            }
            StoreError::UnknownAccount => Self::not_found("account"),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "store unavailable");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable; nothing was acknowledged, retry shortly",
                );
                e.retry_after = Some(1);
                e
            }
            other => {
                // Logged once, here at the boundary; the cause never reaches the client.
                tracing::error!(error = %other, "store operation failed");
                Self::internal()
            }
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `malformed_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `invalid_value`, `payload_too_large`, `unsupported_media_type`,
    /// `request_timeout`, `rate_limited`, `schema_violation` (published data that does not match
    /// its type's schema), a conflict's own code, `store_unavailable`, `not_ready`…
    #[schema(example = "invalid_value")]
    pub code: String,
    /// For people: what was wrong and how to put it right.
    #[schema(example = "events must list 1 to 100 event types or patterns")]
    pub message: String,
    /// The request field at fault, as a path (`events[2]`, `retry.schedule`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "events")]
    pub field: Option<String>,
}

impl ApiError {
    /// The body this error answers with: `{"error": {"code", "message", "field"?}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Gives the API's error shape to an error answer made outside [`ApiError`]: the rejections of
/// axum's own extractors (a path segment that is not UTF-8, say) and of the layers around the
/// routes. Their text, if any, becomes the message.
pub async fn json_error_answers(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
        t => t.chars().take(200).collect(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "malformed_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_value",
        s if s.is_server_error() => "internal_error",
        _ => "request_refused",
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    for name in [axum::http::header::RETRY_AFTER, axum::http::header::ALLOW] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn plain_error_answers_get_the_json_shape_and_others_pass() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: Invalid UTF-8 in id").into_response();
        let answer = json_error_answers(plain).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "malformed_request");
        assert_eq!(json["error"]["message"], "Invalid URL: Invalid UTF-8 in id");

        let empty = StatusCode::METHOD_NOT_ALLOWED.into_response();
        let body = axum::body::to_bytes(json_error_answers(empty).await.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "method_not_allowed");

        let ok = (StatusCode::OK, "fine").into_response();
        let body = axum::body::to_bytes(json_error_answers(ok).await.into_body(), 4096)
            .await
            .unwrap();
        assert_eq!(&body[..], b"fine");
    }

    fn retry_after(e: ApiError) -> Option<String> {
        let response = e.into_response();
        response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_only_where_it_helps() {
        let limited = ApiError::rate_limited(Duration::from_millis(1200));
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.body().error.code, "rate_limited");
        assert_eq!(retry_after(limited).as_deref(), Some("2"));
        let soon = ApiError::rate_limited(Duration::from_millis(3));
        assert_eq!(retry_after(soon).as_deref(), Some("1"));
        let down = ApiError::from(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after(down).as_deref(), Some("1"));
        assert_eq!(retry_after(ApiError::not_found("webhook")), None);
    }
}
