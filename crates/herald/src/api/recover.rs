//! Re-queuing deliveries in bulk, as background tasks (`crate::tasks`): a webhook's recovery
//! (`POST /v1/webhooks/{id}/recover`: its failed deliveries in a span of time, for the account
//! or the operator) and the operator's bulk retry by filter (`POST /v1/deliveries/retry`). Each
//! re-queued delivery keeps its id, so receivers deduplicate; `dry_run` counts and writes
//! nothing. The answer is the task (202, `Location: /v1/tasks/{id}`), whose progress
//! `GET /v1/tasks/{id}` shows.
//!
//! Any kind of webhook may be recovered: a job's own webhook gets its terminal event again, a
//! `herald listen` webhook's deliveries go down its stream if one is open (else they fail again
//! by its policy). A disabled webhook is refused: enable it first, which is what makes its
//! deliveries go out at all.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson};
use super::tasks::TaskView;
use super::webhooks::find;
use crate::domain::{
    AccountId, DeliveryStatus, RequeueFilter, Task, TaskId, TaskKind, Timestamp, Webhook,
    WebhookId, WebhookStatus,
};
use crate::store::NewTask;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(recover))
        .routes(routes!(bulk_retry))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    /// RFC 3339: deliveries made from then on…
    #[schema(format = DateTime, example = "2025-01-31T00:00:00Z")]
    since: String,
    /// …and before then (RFC 3339); by default, now.
    #[schema(format = DateTime, example = "2025-01-31T08:00:00Z")]
    until: Option<String>,
    /// Count the deliveries that would be re-queued, and change nothing.
    #[serde(default)]
    dry_run: bool,
    /// With the admin token: the account the webhook belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    #[schema(value_type = Option<AccountId>)]
    account: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkRetryBody {
    /// Only this account's deliveries.
    #[schema(value_type = Option<AccountId>)]
    account: Option<String>,
    /// Only this webhook's deliveries.
    #[schema(value_type = Option<WebhookId>)]
    webhook: Option<String>,
    /// The deliveries' state: `failed`, `succeeded` (sent again) or `cancelled`.
    #[schema(example = "failed")]
    status: String,
    /// RFC 3339: deliveries made from then on…
    #[schema(format = DateTime, example = "2025-01-31T00:00:00Z")]
    since: String,
    /// …and before then (RFC 3339).
    #[schema(format = DateTime, example = "2025-01-31T08:00:00Z")]
    until: String,
    /// Count the deliveries that would be re-queued, and change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What a dry run found.
#[derive(Serialize, ToSchema)]
pub struct DryRun {
    /// Deliveries that would be re-queued now.
    count: u64,
    dry_run: bool,
}

/// Recover a webhook's failed deliveries
///
/// Re-queues the webhook's failed deliveries made in `[since, until)`, each with its own id
/// (the `webhook-id` its receiver saw), as a background task; `GET /v1/tasks/{id}` shows its
/// progress. Re-queued deliveries are paced so fresh ones are never starved.
#[utoipa::path(post, path = "/v1/webhooks/{id}/recover", tag = "webhooks",
    operation_id = "recover_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id")),
    request_body = RecoverBody,
    responses(
        (status = 200, description = "A dry run: how many would be re-queued", body = DryRun),
        (status = 202, description = "The task, queued", body = TaskView,
            headers(("location" = String, description = "The task: `/v1/tasks/{id}`"))),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 409, description = "The webhook is disabled: enable it first \
            (`webhook_disabled`)", body = ErrorBody),
        (status = 422, description = "`since` or `until` is not an RFC 3339 time, or `until` \
            is not after `since`", body = ErrorBody),
    ))]
async fn recover(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> ApiResult<Response> {
    let now = Timestamp::now();
    let (since, until) = span(&body.since, body.until.as_deref(), now)?;
    let webhook = find(&state, &actor, &id, body.account.as_deref()).await?;
    Ok(
        recover_webhook(&state, webhook, since, until, body.dry_run, now)
            .await?
            .into_response(),
    )
}

/// What a re-queue request made: a dry run's count, or the task it queued.
pub(crate) enum Started {
    DryRun(u64),
    Queued(Task),
}

impl IntoResponse for Started {
    fn into_response(self) -> Response {
        match self {
            Self::DryRun(count) => Json(DryRun {
                count,
                dry_run: true,
            })
            .into_response(),
            Self::Queued(task) => {
                let location = format!("/v1/tasks/{}", task.id);
                (
                    StatusCode::ACCEPTED,
                    [(header::LOCATION, location)],
                    Json(TaskView::from(task)),
                )
                    .into_response()
            }
        }
    }
}

/// Recovers `webhook` (found in the caller's scope): its failed deliveries made in
/// `[since, until)`, counted (`dry_run`) or re-queued by a task. The API's and the portal's one
/// path; a disabled webhook is refused.
pub(crate) async fn recover_webhook(
    state: &AppState,
    webhook: Webhook,
    since: Timestamp,
    until: Timestamp,
    dry_run: bool,
    now: Timestamp,
) -> ApiResult<Started> {
    if webhook.status == WebhookStatus::Disabled {
        return Err(ApiError::conflict(
            "webhook_disabled",
            "the webhook is disabled, so nothing would be sent: enable it \
             (POST /v1/webhooks/{id}/enable), then recover",
        ));
    }
    let filter = RequeueFilter {
        account: Some(webhook.account_id.clone()),
        webhook: Some(webhook.id.clone()),
        status: DeliveryStatus::Failed,
        since,
        until,
    };
    start(
        state,
        TaskKind::Recover,
        Some(webhook.account_id),
        filter,
        dry_run,
        now,
    )
    .await
}

/// Retry deliveries in bulk
///
/// The operator's bulk retry: re-queues every delivery in `status` made in `[since, until)`,
/// of one account or webhook if named, each with its own id, as a background task;
/// `GET /v1/tasks/{id}` shows its progress. Deliveries of deleted webhooks are skipped; those
/// of disabled ones wait for their enabling.
#[utoipa::path(post, path = "/v1/deliveries/retry", tag = "deliveries",
    operation_id = "bulk_retry_deliveries",
    security(("admin_token" = [])),
    request_body = BulkRetryBody,
    responses(
        (status = 200, description = "A dry run: how many would be re-queued", body = DryRun),
        (status = 202, description = "The task, queued", body = TaskView,
            headers(("location" = String, description = "The task: `/v1/tasks/{id}`"))),
        (status = 404, description = "The named account or webhook does not exist",
            body = ErrorBody),
        (status = 422, description = "A bad status, time or id; `until` not after `since`",
            body = ErrorBody),
    ))]
async fn bulk_retry(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<BulkRetryBody>,
) -> ApiResult<Response> {
    actor.require_admin()?;
    let now = Timestamp::now();
    let status = match DeliveryStatus::parse(&body.status) {
        Some(DeliveryStatus::Pending) => {
            return Err(ApiError::invalid(
                "status",
                "pending deliveries are queued already; status must be failed, succeeded or \
                 cancelled",
            ));
        }
        Some(s) => s,
        None => {
            return Err(ApiError::invalid(
                "status",
                "status must be failed, succeeded or cancelled",
            ));
        }
    };
    let (since, until) = span(&body.since, Some(&body.until), now)?;
    let account = match &body.account {
        Some(a) => Some(actor.account(&state, Some(a.as_str())).await?),
        None => None,
    };
    let webhook = match &body.webhook {
        Some(w) => {
            let id = WebhookId::parse(w)
                .ok_or_else(|| ApiError::invalid("webhook", "webhook is not a valid id"))?;
            let found = state.store.get_webhook(account.as_ref(), &id).await?;
            Some(found.ok_or_else(|| ApiError::not_found("webhook"))?.id)
        }
        None => None,
    };
    let filter = RequeueFilter {
        account,
        webhook,
        status,
        since,
        until,
    };
    Ok(
        start(&state, TaskKind::Retry, None, filter, body.dry_run, now)
            .await?
            .into_response(),
    )
}

/// `[since, until)` from the request; `until` is `now` if left out.
pub(crate) fn span(
    since: &str,
    until: Option<&str>,
    now: Timestamp,
) -> ApiResult<(Timestamp, Timestamp)> {
    let since = Timestamp::parse_rfc3339(since)
        .ok_or_else(|| ApiError::invalid("since", "since must be an RFC 3339 time"))?;
    let until = match until {
        Some(u) => Timestamp::parse_rfc3339(u)
            .ok_or_else(|| ApiError::invalid("until", "until must be an RFC 3339 time"))?,
        None => now,
    };
    if until <= since {
        return Err(ApiError::invalid("until", "until must be after since"));
    }
    Ok((since, until))
}

/// Counts a dry run's deliveries, or stores the task and wakes this node's runner.
async fn start(
    state: &AppState,
    kind: TaskKind,
    account: Option<AccountId>,
    filter: RequeueFilter,
    dry_run: bool,
    now: Timestamp,
) -> ApiResult<Started> {
    let count = state.store.count_requeueable(&filter).await?;
    if dry_run {
        return Ok(Started::DryRun(count));
    }
    let task = state
        .store
        .create_task(&NewTask {
            id: TaskId::generate(),
            account,
            kind,
            filter,
            counted: count,
            now,
        })
        .await?;
    state.tasks.wake();
    tracing::info!(task_id = %task.id, kind = kind.as_str(), counted = count, "task queued");
    Ok(Started::Queued(task))
}
