//! Endpoint health: `GET /v1/webhooks/{id}/stats?window=24h`, a webhook's attempts over a
//! window ending now, from the per-minute figures the recorder keeps (`store::stats`).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery};
use super::webhooks::find;
use crate::domain::duration::{format_duration, parse_duration};
use crate::domain::{Timestamp, WebhookId, WebhookStatus};
use crate::store::stats::{AttemptStats, FailureClasses, KEPT, window_start};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(86_400);
const MIN_WINDOW: Duration = Duration::from_secs(60);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsParams {
    /// How far back from now: `1h`, `24h`, `7d` (1 minute to 7 days; 24 h if unset).
    #[param(example = "24h")]
    window: Option<String>,
    /// With the admin token: the account the webhook belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    account: Option<String>,
}

/// A webhook's attempts over a window. The window starts at the beginning of its first minute.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    webhook_id: WebhookId,
    status: WebhookStatus,
    /// The window, as a duration (`24h`).
    #[schema(example = "24h")]
    window: String,
    /// The start of the window's first minute.
    since: Timestamp,
    attempts: u64,
    successes: u64,
    failures: u64,
    failures_by_class: ClassesView,
    /// Successes over attempts; null without attempts.
    #[schema(minimum = 0, maximum = 1)]
    success_rate: Option<f64>,
    latency_ms: LatencyView,
    last_error: Option<LastError>,
    /// When the webhook's current run of failures began; null while it is healthy.
    failing_since: Option<Timestamp>,
}

/// Failed attempts by what went wrong: an HTTP status (4xx, 5xx, any other non-2xx), a timeout,
/// a connection that failed (DNS, connect, TLS), or an address the egress policy blocks.
#[derive(Serialize, ToSchema)]
struct ClassesView {
    status_4xx: u64,
    status_5xx: u64,
    status_other: u64,
    timeout: u64,
    connection: u64,
    blocked: u64,
}

impl From<FailureClasses> for ClassesView {
    fn from(f: FailureClasses) -> Self {
        Self {
            status_4xx: f.status_4xx,
            status_5xx: f.status_5xx,
            status_other: f.status_other,
            timeout: f.timeout,
            connection: f.connection,
            blocked: f.blocked,
        }
    }
}

/// Latency quantiles, each the upper bound of the histogram bucket it falls in (10, 25, 50,
/// 100, 250, 500, 1000, 2500, 5000, 10000, 30000 ms); null without attempts or above 30 s.
#[derive(Serialize, ToSchema)]
struct LatencyView {
    p50: Option<u64>,
    p99: Option<u64>,
}

/// The window's last failed attempt.
#[derive(Serialize, ToSchema)]
struct LastError {
    at: Timestamp,
    /// `HTTP 500`, or what went wrong before an answer (timeout, connection refused…).
    message: String,
}

/// A webhook's health
///
/// Its attempts over a window ending now: counts, failures by class, success rate, latency
/// quantiles, the last error, and since when it has been failing.
#[utoipa::path(get, path = "/v1/webhooks/{id}/stats", tag = "webhooks",
    operation_id = "get_webhook_stats",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), StatsParams),
    responses(
        (status = 200, description = "The webhook's attempts over the window", body = StatsView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 422, description = "The window is not a duration from 1m to 7d",
            body = ErrorBody),
    ))]
async fn stats(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatsParams>,
) -> ApiResult<Json<StatsView>> {
    let window = match q.window.as_deref() {
        None => DEFAULT_WINDOW,
        Some(w) => parse_duration(w)
            .ok()
            .filter(|d| (MIN_WINDOW..=KEPT).contains(d))
            .ok_or_else(|| {
                ApiError::invalid(
                    "window",
                    "window must be a duration from 1m to 7d, such as 1h or 24h",
                )
            })?,
    };
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    let since = window_start(Timestamp::now(), window);
    let s: AttemptStats = state.store.webhook_stats(&webhook.id, since).await?;
    Ok(Json(StatsView {
        webhook_id: webhook.id,
        status: webhook.status,
        window: format_duration(window),
        since,
        attempts: s.attempts,
        successes: s.successes,
        failures: s.failed(),
        failures_by_class: s.failures.into(),
        success_rate: s.success_rate(),
        latency_ms: LatencyView {
            p50: s.latency_quantile_ms(0.5),
            p99: s.latency_quantile_ms(0.99),
        },
        last_error: s.last_error.map(|(at, message)| LastError { at, message }),
        failing_since: webhook.failing_since,
    }))
}
