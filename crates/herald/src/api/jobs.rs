//! Jobs: the provider's asynchronous work. Each status change publishes `<kind>.<status>` with
//! the job itself as `data`; a job's own `webhook_url` gets its terminal event (seed 002).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson, ApiQuery};
use crate::domain::event_type::{EventFilter, EventType};
use crate::domain::job::valid_job_id;
use crate::domain::shown::shown;
use crate::domain::{
    Job, JobPatch, JobStatus, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId,
    WebhookKind, WebhookOrdering, WebhookStatus, WebhookUrl,
};
use crate::store::{JobCreated, JobUpdate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show, update))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    /// The account the job is for.
    account: String,
    /// One of the configured job kinds (`tts`, `stt`, `voice`, `transcription` by default).
    #[schema(example = "tts")]
    kind: String,
    /// Any JSON value, kept with the job.
    #[schema(value_type = Option<serde_json::Value>)]
    input: Option<Box<RawValue>>,
    /// A URL that gets this job's terminal event (`<kind>.completed` or `<kind>.failed`) only.
    #[schema(pattern = "^https?://")]
    webhook_url: Option<String>,
    /// Your own id for the job (1 to 128 of `A-Z a-z 0-9 _ - . :`); `job_…` if left out.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    id: Option<String>,
}

/// The fields to change; a status change publishes `<kind>.<status>` with the job as `data`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateJob {
    /// queued → processing → completed | failed; a finished job does not change.
    status: Option<JobStatus>,
    /// From 0 to 1; it only rises.
    #[schema(minimum = 0.0, maximum = 1.0)]
    progress: Option<f64>,
    /// Any JSON value.
    #[schema(value_type = Option<serde_json::Value>)]
    result: Option<Box<RawValue>>,
    /// Any JSON value.
    #[schema(value_type = Option<serde_json::Value>)]
    error: Option<Box<RawValue>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account the job belongs to (optional). With an API key: leave
    /// out, or the key's own account.
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
        rate_limit: None,
        ordering: WebhookOrdering::None,
        held: false,
    })
}

/// Create a job
///
/// The job starts `queued` and publishes `<kind>.queued`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", operation_id = "create_job",
    security(("admin_token" = [])),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Created, queued", body = Job),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "A job with this id exists (`job_exists`)", body = ErrorBody),
        (status = 422, description = "An unknown kind, a bad id or webhook_url; the field says \
            which", body = ErrorBody),
    ))]
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

/// Get a job
///
/// The same shape the job's events carry as `data`.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "get_job",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The job's id"), AccountParam),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job in the account", body = ErrorBody),
    ))]
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

/// Update a job
///
/// A status change publishes `<kind>.<status>` with the job as `data`; each job gets exactly one
/// terminal event however updates race.
#[utoipa::path(patch, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "update_job",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The job's id"), AccountParam),
    request_body = UpdateJob,
    responses(
        (status = 200, description = "The job as changed", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The change is not allowed: the job is finished, the status \
            would go back, or progress would fall (`job_conflict`)", body = ErrorBody),
        (status = 422, description = "Progress outside 0 to 1, or a value of the wrong type",
            body = ErrorBody),
    ))]
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
