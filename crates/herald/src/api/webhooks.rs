//! Webhooks: the subscription resource of seed 000, `POST /v1/webhooks {url, events, secret?}`.
//! Their signing keys are in `webhook_secrets.rs`.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson, ApiQuery, OptionalJson, object_only};
use super::test_send::{TestSendAnswer, TestSendRequest};
use super::webhook_flow::{RateLimitDoc, nullable, parse_rate_limit};
use super::webhook_secrets::{fresh_secret, parse_grace, secret_for};
use super::webhook_view::WebhookView;
use super::{AppState, ListBody, page_request};
use crate::domain::{
    AccountId, EventFilter, PayloadFormat, RetryPolicy, RetryPolicyDoc, SigningMode, Timestamp,
    Webhook, WebhookId, WebhookKind, WebhookOrdering, WebhookStatus, WebhookUrl,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(enable))
        .routes(routes!(send_test))
}

const MAX_FILTERS: usize = 100;
const MAX_DESCRIPTION: usize = 1000;

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// With the admin token: the account it is for. With an API key: leave out (or the key's
    /// own account).
    pub(crate) account: Option<String>,
    /// `https://` (`http://` and private addresses only in development mode).
    #[schema(pattern = "^https?://", example = "https://example.com/webhooks")]
    pub(crate) url: String,
    /// 1 to 100 event types of the catalog (`tts.completed`), prefixes (`tts.*`) or `*`.
    #[schema(min_items = 1, max_items = 100, example = json!(["tts.*"]),
        value_type = Vec<super::openapi::EventPattern>)]
    pub(crate) events: Vec<String>,
    /// A signing secret of your own: `whsec_…` (HMAC), or `whsk_…` in `ed25519` mode. Made
    /// for you if left out.
    pub(crate) secret: Option<String>,
    /// Up to 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub(crate) description: String,
    /// The operator's default policy if left out.
    #[serde(default, deserialize_with = "object_only")]
    pub(crate) retry: Option<RetryPolicyDoc>,
    /// `standard` if left out.
    #[serde(default, deserialize_with = "object_only")]
    pub(crate) signing: Option<SigningMode>,
    /// `envelope` if left out.
    pub(crate) format: Option<PayloadFormat>,
    /// `none` if left out: deliveries go in parallel. `key`: one at a time per event
    /// `ordering_key`, in publish order (keys in parallel). `fifo`: one at a time, in publish
    /// order.
    pub(crate) ordering: Option<WebhookOrdering>,
    /// At most this many deliveries a second, across all nodes; none if left out.
    pub(crate) rate_limit: Option<RateLimitDoc>,
}

/// The fields to change; those left out stay as they are.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWebhook {
    #[schema(pattern = "^https?://")]
    pub(crate) url: Option<String>,
    #[schema(min_items = 1, max_items = 100, value_type = Option<Vec<super::openapi::EventPattern>>)]
    pub(crate) events: Option<Vec<String>>,
    #[schema(max_length = 1000)]
    pub(crate) description: Option<String>,
    #[serde(default, deserialize_with = "object_only")]
    pub(crate) retry: Option<RetryPolicyDoc>,
    pub(crate) status: Option<WebhookStatus>,
    #[serde(default, deserialize_with = "object_only")]
    pub(crate) signing: Option<SigningMode>,
    /// How long the old key keeps signing when `signing` moves between HMAC and ed25519
    /// (`0s` to `7d`, default `1d`).
    #[schema(example = "1d")]
    pub(crate) grace_period: Option<String>,
    pub(crate) format: Option<PayloadFormat>,
    /// A new rate limit, or `null` for none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitDoc>, nullable)]
    pub(crate) rate_limit: Option<Option<RateLimitDoc>>,
    /// Deliveries already waiting keep the order they were made with.
    pub(crate) ordering: Option<WebhookOrdering>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ScopeParams {
    /// With the admin token: the account whose webhooks to list (required).
    account: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AccountParam {
    /// With the admin token: the account the webhook belongs to (optional). With an API key:
    /// leave out, or the key's own account.
    pub(super) account: Option<String>,
}

fn parse_url(state: &AppState, url: &str) -> ApiResult<WebhookUrl> {
    WebhookUrl::parse_with(url, &state.settings.address_policy())
        .map_err(|e| ApiError::invalid("url", e))
}

pub(crate) fn parse_filters(state: &AppState, events: &[String]) -> ApiResult<Vec<EventFilter>> {
    if events.is_empty() || events.len() > MAX_FILTERS {
        return Err(ApiError::invalid(
            "events",
            format!("events must list 1 to {MAX_FILTERS} event types or patterns"),
        ));
    }
    let mut filters: Vec<EventFilter> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let f = state
            .catalog
            .check_filter(e)
            .map_err(|m| ApiError::invalid(format!("events[{i}]"), m))?;
        if !filters.contains(&f) {
            filters.push(f);
        }
    }
    Ok(filters)
}

fn parse_description(d: &str) -> ApiResult<String> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(
            "description",
            format!("description is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    // PostgreSQL's text cannot hold NUL, and no other control character belongs in a label.
    if d.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            "description",
            "description may hold line breaks and tabs, but no other control characters",
        ));
    }
    Ok(d.to_owned())
}

fn parse_retry(state: &AppState, doc: &RetryPolicyDoc) -> ApiResult<RetryPolicy> {
    RetryPolicy::from_doc(doc, &state.default_retry).map_err(|e| ApiError::invalid("retry", e))
}

/// Create a webhook
///
/// Subscribes a URL to event types. The signing secret is read with `GET …/secret`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "create_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created", body = WebhookView),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "A value is not accepted (the field says which), or the \
            admin token named no account", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    let webhook = create_webhook(&state, account, &body).await?;
    Ok((StatusCode::CREATED, Json(webhook.into())))
}

/// Checks a new subscription and stores it for `account` (the API's `POST /v1/webhooks` and
/// the portal's form).
pub(crate) async fn create_webhook(
    state: &AppState,
    account: AccountId,
    body: &CreateWebhook,
) -> ApiResult<Webhook> {
    let url = parse_url(state, &body.url)?;
    let events = parse_filters(state, &body.events)?;
    let defaults = &state.settings.registration.subscription;
    let signing = body
        .signing
        .clone()
        .unwrap_or_else(|| defaults.signing.clone());
    signing
        .validate()
        .map_err(|e| ApiError::invalid("signing", e))?;
    let secret = secret_for(&signing, body.secret.as_deref())?;
    let description = parse_description(&body.description)?;
    let retry = match &body.retry {
        Some(doc) => parse_retry(state, doc)?,
        None => state
            .settings
            .model_retry(defaults)
            .map_err(|e| ApiError::invalid("retry", e))?,
    };
    let rate_limit = parse_rate_limit(body.rate_limit)?;
    let now = Timestamp::now();
    let webhook = Webhook {
        id: WebhookId::generate(),
        account_id: account,
        url,
        events,
        secret,
        description,
        retry,
        status: WebhookStatus::Active,
        created_at: now,
        updated_at: now,
        kind: WebhookKind::Subscription,
        job_id: None,
        signing,
        format: body.format.unwrap_or(defaults.format),
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        rate_limit,
        ordering: body.ordering.unwrap_or_default(),
        held: false,
    };
    state.store.insert_webhook(&webhook).await?;
    Ok(webhook)
}

/// List webhooks
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    security(("admin_token" = []), ("api_key" = [])),
    params(ScopeParams),
    responses(
        (status = 200, description = "A page of the account's webhooks, newest first",
            body = ListBody<WebhookView>),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "A bad cursor or limit, or the admin token named no account",
            body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> ApiResult<Json<ListBody<WebhookView>>> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    let page = page_request(params.cursor.as_deref(), params.limit, |c| {
        WebhookId::parse(c).is_some()
    })?;
    Ok(Json(ListBody::from_page(
        state.store.list_webhooks(&account, &page).await?,
        WebhookView::from,
    )))
}

/// Finds a webhook the caller may see; anything else is 404.
pub(crate) async fn find(
    state: &AppState,
    actor: &Actor,
    id: &str,
    named: Option<&str>,
) -> ApiResult<Webhook> {
    let scope = actor.read_scope(state, named).await?;
    let id = WebhookId::parse(id).ok_or_else(|| ApiError::not_found("webhook"))?;
    state
        .store
        .get_webhook(scope.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// Get a webhook
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "get_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    responses(
        (status = 200, description = "The webhook, with its flow control", body = WebhookView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<WebhookView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    let flow = state
        .store
        .webhook_flow(&webhook.id, Timestamp::now())
        .await?;
    Ok(Json(WebhookView::from(webhook).with_flow(flow)))
}

/// Change a webhook
///
/// Everything is checked before anything changes: a refused change writes nothing.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "update_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The webhook as changed", body = WebhookView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 409, description = "A `herald listen` stream's webhook, which cannot be changed \
            (`listener_webhook`)", body = ErrorBody),
        (status = 422, description = "A value is not accepted; the field says which",
            body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    Ok(Json(update_webhook(&state, webhook, &body).await?.into()))
}

/// Applies a change to a webhook, every value checked before anything is written (the API's
/// PATCH and the portal's forms).
pub(crate) async fn update_webhook(
    state: &AppState,
    mut webhook: Webhook,
    body: &UpdateWebhook,
) -> ApiResult<Webhook> {
    editable(&webhook)?;
    // Validate everything before changing anything: a rejected PATCH writes nothing.
    if let Some(url) = &body.url {
        webhook.url = parse_url(state, url)?;
    }
    if let Some(events) = &body.events {
        webhook.events = parse_filters(state, events)?;
    }
    if let Some(d) = &body.description {
        webhook.description = parse_description(d)?;
    }
    if let Some(doc) = &body.retry {
        webhook.retry = parse_retry(state, doc)?;
    }
    if let Some(status) = body.status {
        webhook.status = status;
        webhook.disabled_reason = (status == WebhookStatus::Disabled).then(|| "manual".to_owned());
    }
    if let Some(format) = body.format {
        webhook.format = format;
    }
    if let Some(doc) = body.rate_limit {
        webhook.rate_limit = parse_rate_limit(doc)?;
    }
    if let Some(ordering) = body.ordering {
        webhook.ordering = ordering;
    }
    let now = Timestamp::now();
    match (&body.signing, &body.grace_period) {
        (Some(signing), grace) => {
            signing
                .validate()
                .map_err(|e| ApiError::invalid("signing", e))?;
            let grace = parse_grace(grace.as_deref())?;
            webhook.change_signing(signing.clone(), || fresh_secret(signing), now, grace);
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "grace_period",
                "grace_period applies to a change of signing; rotate the secret for a new one",
            ));
        }
        (None, None) => {}
    }
    webhook.updated_at = now;
    if !state.store.update_webhook(&webhook).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(webhook)
}

/// Delete a webhook
///
/// Its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    delete_webhook(&state, &webhook).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a webhook, cancelling its pending deliveries.
pub(crate) async fn delete_webhook(state: &AppState, webhook: &Webhook) -> ApiResult<()> {
    if !state
        .store
        .delete_webhook(Some(&webhook.account_id), &webhook.id, Timestamp::now())
        .await?
    {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(())
}

/// A listener webhook is what its `herald listen` stream made it: its secret is the one the CLI
/// printed, its URL no address. It can be deleted (which ends the stream), not changed.
pub(crate) fn editable(webhook: &Webhook) -> ApiResult<()> {
    if webhook.kind == WebhookKind::Listener {
        return Err(ApiError::conflict(
            "listener_webhook",
            "this webhook belongs to a `herald listen` stream and lives as long as it; it cannot be changed (delete it to end the stream)",
        ));
    }
    Ok(())
}

/// Enable a webhook
///
/// Re-enables a webhook (after an automatic disable); its waiting deliveries go out again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    operation_id = "enable_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    responses(
        (status = 200, description = "The webhook, active", body = WebhookView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
    ))]
async fn enable(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<WebhookView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    Ok(Json(enable_webhook(&state, &webhook).await?.into()))
}

/// Enables a webhook (clearing its failure record) and wakes the dispatcher for its waiting
/// deliveries.
pub(crate) async fn enable_webhook(state: &AppState, webhook: &Webhook) -> ApiResult<Webhook> {
    let enabled = state
        .store
        .set_webhook_status(
            Some(&webhook.account_id),
            &webhook.id,
            WebhookStatus::Active,
            None,
            Timestamp::now(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    state.waker.wake();
    Ok(enabled)
}

/// Send a test event
///
/// Publishes an event to this webhook only: a `webhook.test` event, or the catalog type the
/// body names, with the data given or the type's example (checked against its schema).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    operation_id = "test_webhook",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    request_body(content = Option<TestSendRequest>, description = "Optional"),
    responses(
        (status = 202, description = "The test event is on its way", body = TestSendAnswer),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 409, description = "The webhook is disabled (`webhook_disabled`)",
            body = ErrorBody),
        (status = 422, description = "The type is not in the catalog, it has no example and no \
            data was given, or the data does not match its schema (`schema_violation`; `field` \
            is the JSON path of what is wrong)", body = ErrorBody),
    ))]
async fn send_test(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    OptionalJson(body): OptionalJson<TestSendRequest>,
) -> ApiResult<(StatusCode, Json<TestSendAnswer>)> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    let answer = super::test_send::send_test(&state, &webhook, body).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}
