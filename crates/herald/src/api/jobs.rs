//! Jobs: the provider's asynchronous work. Each status change publishes `<kind>.<status>` with
//! the job itself as `data`; a job's own `webhook_url` gets its terminal event (seed 002).

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use crate::domain::event_type::{EventFilter, EventType};
use crate::domain::job::valid_job_id;
use crate::domain::shown::shown;
use crate::domain::{
    Job, JobPatch, JobStatus, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId,
    WebhookKind, WebhookStatus, WebhookUrl,
};
use crate::store::{JobCreated, JobUpdate};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create))
        .route("/v1/jobs/{id}", get(show).patch(update))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    account: String,
    kind: String,
    input: Option<Box<RawValue>>,
    webhook_url: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateJob {
    status: Option<JobStatus>,
    progress: Option<f64>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

/// The job's own webhook: its terminal event only, signed with the account's signing secret.
async fn job_webhook(state: &AppState, job: &Job, url: WebhookUrl) -> ApiResult<Webhook> {
    let model = &state.settings.registration.job;
    let secret = match &model.signing {
        SigningMode::Ed25519 => SigningSecret::generate_ed25519(),
        _ => state.store.account_signing_secret(&job.account).await?,
    };
    let terminal = [JobStatus::Completed, JobStatus::Failed]
        .map(|s| EventType::parse(&format!("{}.{}", job.kind, s.as_str())).map(EventFilter::Exact));
    let events = terminal
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("kind", e))?;
    let retry = state
        .settings
        .model_retry(model)
        .map_err(|e| ApiError::invalid("webhook_url", e))?;
    Ok(Webhook {
        id: WebhookId::generate(),
        account_id: job.account.clone(),
        url,
        events,
        secret,
        description: format!("webhook_url of job {}", job.id),
        retry,
        status: WebhookStatus::Active,
        created_at: job.created_at,
        updated_at: job.created_at,
        kind: WebhookKind::Job,
        job_id: Some(job.id.clone()),
        signing: model.signing.clone(),
        format: model.format,
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
    })
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    actor.require_admin()?;
    let account = actor.account(&state, Some(&body.account)).await?;
    if !state.settings.job_kinds.contains(&body.kind) {
        let known = state.settings.job_kinds.join(", ");
        return Err(ApiError::invalid(
            "kind",
            format!(
                "unknown job kind {}; known kinds: {known}",
                shown(&body.kind)
            ),
        ));
    }
    let id = match body.id {
        Some(id) if valid_job_id(&id) => id,
        Some(_) => {
            return Err(ApiError::invalid(
                "id",
                "a job id is 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.', ':'",
            ));
        }
        None => format!("job_{}", uuid::Uuid::now_v7().simple()),
    };
    let url = body
        .webhook_url
        .as_deref()
        .map(|u| {
            WebhookUrl::parse_with(u, &state.settings.address_policy())
                .map_err(|e| ApiError::invalid("webhook_url", e))
        })
        .transpose()?;
    let now = Timestamp::now();
    let job = Job {
        id,
        account,
        kind: body.kind,
        status: JobStatus::Queued,
        progress: 0.0,
        input: body.input,
        result: None,
        error: None,
        webhook_url: url.as_ref().map(|u| u.as_str().to_owned()),
        created_at: now,
        updated_at: now,
        completed_at: None,
    };
    let webhook = match url {
        Some(url) => Some(job_webhook(&state, &job, url).await?),
        None => None,
    };
    match state.store.create_job(&job, webhook.as_ref()).await? {
        JobCreated::Exists => Err(ApiError::conflict(
            "job_exists",
            format!("a job with id {:?} exists already", job.id),
        )),
        JobCreated::Created { deliveries } => {
            state.deliveries_created(deliveries);
            Ok((StatusCode::CREATED, Json(job)))
        }
    }
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<Job>> {
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    if !valid_job_id(&id) {
        return Err(ApiError::not_found("job"));
    }
    state
        .store
        .get_job(scope.as_ref(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("job"))
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    ApiJson(body): ApiJson<UpdateJob>,
) -> ApiResult<Json<Job>> {
    actor.require_admin()?;
    let scope = actor.read_scope(&state, q.account.as_deref()).await?;
    if let Some(p) = body.progress
        && !(0.0..=1.0).contains(&p)
    {
        return Err(ApiError::invalid(
            "progress",
            "progress is a number from 0 to 1",
        ));
    }
    if !valid_job_id(&id) {
        return Err(ApiError::not_found("job"));
    }
    let patch = JobPatch {
        status: body.status,
        progress: body.progress,
        result: body.result,
        error: body.error,
    };
    match state
        .store
        .update_job(scope.as_ref(), &id, &patch, Timestamp::now())
        .await?
    {
        JobUpdate::NotFound => Err(ApiError::not_found("job")),
        JobUpdate::Refused(conflict) => {
            Err(ApiError::conflict("job_conflict", conflict.to_string()))
        }
        JobUpdate::Updated {
            job, deliveries, ..
        } => {
            state.deliveries_created(deliveries);
            Ok(Json(job))
        }
    }
}
