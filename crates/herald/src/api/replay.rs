//! `POST /v1/webhooks/{id}/replay-missing {since, dry_run?}`: deliveries for the account's
//! retained events from `since` on that the webhook would get now and never got (published while
//! it was disabled, say), each once however often this is called.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson};
use super::webhooks::find;
use crate::domain::{AccountId, Timestamp, WebhookId, WebhookKind};
use crate::store::ReplayMissing;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(replay_missing))
}

/// Events looked at per transaction: short enough not to hold up publishes.
const PAGE: usize = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// RFC 3339: events published from then on.
    #[schema(format = DateTime, example = "2025-01-31T12:00:00Z")]
    since: String,
    /// Count the deliveries that would be made, and make none.
    #[serde(default)]
    dry_run: bool,
    /// With the admin token: the account the webhook belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    #[schema(value_type = Option<AccountId>)]
    account: Option<String>,
}

/// What a replay made.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    webhook_id: WebhookId,
    since: Timestamp,
    dry_run: bool,
    /// Deliveries made (in a dry run: that would be made).
    deliveries: u64,
}

/// Replay missed events
///
/// Makes a delivery to this webhook of each of the account's retained events published from
/// `since` on that the webhook would get now and never got (published while it was disabled,
/// say), each once however often this is called.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay-missing", tag = "webhooks",
    operation_id = "replay_missing",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id")),
    request_body = ReplayBody,
    responses(
        (status = 200, description = "The deliveries made (or, in a dry run, that would be)",
            body = Replayed),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 422, description = "`since` is not an RFC 3339 time, or the webhook is a \
            job's own (nothing to replay)", body = ErrorBody),
    ))]
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
