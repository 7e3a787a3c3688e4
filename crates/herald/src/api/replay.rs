//! `POST /v1/webhooks/{id}/replay-missing {since, dry_run?}`: deliveries for the account's
//! retained events from `since` on that the webhook would get now and never got (published while
//! it was disabled, say), each once however often this is called.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson};
use super::webhooks::find;
use crate::domain::{Timestamp, WebhookId, WebhookKind};
use crate::store::ReplayMissing;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/{id}/replay-missing", post(replay_missing))
}

/// Events looked at per transaction: short enough not to hold up publishes.
const PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// RFC 3339: events published from then on.
    since: String,
    #[serde(default)]
    dry_run: bool,
    account: Option<String>,
}

#[derive(Serialize)]
pub struct Replayed {
    webhook_id: WebhookId,
    since: Timestamp,
    dry_run: bool,
    /// Deliveries made (in a dry run: that would be made).
    deliveries: u64,
}

async fn replay_missing(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> ApiResult<Json<Replayed>> {
    let since = Timestamp::parse_rfc3339(&body.since)
        .ok_or_else(|| ApiError::invalid("since", "since must be an RFC 3339 time"))?;
    let webhook = find(&state, &actor, &id, body.account.as_deref()).await?;
    if webhook.kind == WebhookKind::Job {
        return Err(ApiError::invalid(
            "id",
            "a job's own webhook gets its job's final event only; there is nothing to replay",
        ));
    }
    let mut request = ReplayMissing {
        webhook,
        since,
        after: None,
        limit: PAGE,
        dry_run: body.dry_run,
        now: Timestamp::now(),
    };
    let mut deliveries = 0;
    loop {
        let page = state.store.replay_missing(&request).await?;
        deliveries += page.missing;
        if !body.dry_run {
            state.deliveries_created(page.missing as u32);
        }
        match page.next {
            Some(next) => request.after = Some(next),
            None => break,
        }
    }
    if !body.dry_run && deliveries > 0 {
        tracing::info!(webhook_id = %request.webhook.id, deliveries, "missed events replayed");
    }
    Ok(Json(Replayed {
        webhook_id: request.webhook.id,
        since,
        dry_run: body.dry_run,
        deliveries,
    }))
}
