//! Endpoint health: `GET /v1/webhooks/{id}/stats?window=24h`, a webhook's attempts over a
//! window ending now, from the per-minute figures the recorder keeps (`store::stats`).

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiQuery};
use super::webhooks::find;
use crate::domain::duration::{format_duration, parse_duration};
use crate::domain::{Timestamp, WebhookId, WebhookStatus};
use crate::store::stats::{AttemptStats, FailureClasses, KEPT, window_start};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/{id}/stats", get(stats))
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(86_400);
const MIN_WINDOW: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct StatsParams {
    /// How far back from now: `1h`, `24h`, `7d` (1 minute to 7 days; 24 h if unset).
    window: Option<String>,
    account: Option<String>,
}

/// A webhook's attempts over a window. The window starts at the beginning of its first minute.
#[derive(Serialize)]
pub struct StatsView {
    webhook_id: WebhookId,
    status: WebhookStatus,
    window: String,
    since: Timestamp,
    attempts: u64,
    successes: u64,
    failures: u64,
    failures_by_class: ClassesView,
    /// Successes over attempts; null without attempts.
    success_rate: Option<f64>,
    latency_ms: LatencyView,
    last_error: Option<LastError>,
    /// When the webhook's current run of failures began; null while it is healthy.
    failing_since: Option<Timestamp>,
}

#[derive(Serialize)]
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
#[derive(Serialize)]
struct LatencyView {
    p50: Option<u64>,
    p99: Option<u64>,
}

#[derive(Serialize)]
struct LastError {
    at: Timestamp,
    /// `HTTP 500`, or what went wrong before an answer (timeout, connection refused…).
    message: String,
}

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
        success_rate: (s.attempts > 0).then(|| s.successes as f64 / s.attempts as f64),
        latency_ms: LatencyView {
            p50: s.latency_quantile_ms(0.5),
            p99: s.latency_quantile_ms(0.99),
        },
        last_error: s.last_error.map(|(at, message)| LastError { at, message }),
        failing_since: webhook.failing_since,
    }))
}
