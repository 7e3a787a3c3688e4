//! Webhooks: the subscription resource of seed 000, `POST /v1/webhooks {url, events, secret?}`.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use super::{AppState, ListBody, page_request};
use crate::domain::{
    AccountId, EventFilter, RetryPolicy, RetryPolicyDoc, SigningSecret, Timestamp, Webhook,
    WebhookId, WebhookStatus, WebhookUrl,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(list).post(create))
        .route("/v1/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/v1/webhooks/{id}/secret", get(secret))
}

const MAX_FILTERS: usize = 100;
const MAX_DESCRIPTION: usize = 1000;

/// A webhook as the API shows it: never its secret.
#[derive(Serialize)]
pub struct WebhookView {
    id: WebhookId,
    url: String,
    events: Vec<String>,
    status: WebhookStatus,
    created_at: Timestamp,
    account: AccountId,
    description: String,
    retry: RetryPolicyDoc,
    updated_at: Timestamp,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.as_str().to_owned(),
            events: w.events.iter().map(EventFilter::to_pattern).collect(),
            status: w.status,
            created_at: w.created_at,
            account: w.account_id,
            description: w.description,
            retry: w.retry.to_doc(),
            updated_at: w.updated_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    account: Option<String>,
    url: String,
    events: Vec<String>,
    secret: Option<String>,
    #[serde(default)]
    description: String,
    retry: Option<RetryPolicyDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    retry: Option<RetryPolicyDoc>,
    status: Option<WebhookStatus>,
}

#[derive(Deserialize)]
struct ScopeParams {
    account: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

fn parse_url(state: &AppState, url: &str) -> ApiResult<WebhookUrl> {
    WebhookUrl::parse(url, state.settings.dev).map_err(|e| ApiError::invalid("url", e))
}

fn parse_filters(state: &AppState, events: &[String]) -> ApiResult<Vec<EventFilter>> {
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
    Ok(d.to_owned())
}

fn parse_retry(state: &AppState, doc: &RetryPolicyDoc) -> ApiResult<RetryPolicy> {
    RetryPolicy::from_doc(doc, &state.default_retry).map_err(|e| ApiError::invalid("retry", e))
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    let url = parse_url(&state, &body.url)?;
    let events = parse_filters(&state, &body.events)?;
    let secret = match &body.secret {
        Some(s) => SigningSecret::parse(s).map_err(|e| ApiError::invalid("secret", e))?,
        None => SigningSecret::generate(),
    };
    let description = parse_description(&body.description)?;
    let retry = match &body.retry {
        Some(doc) => parse_retry(&state, doc)?,
        None => (*state.default_retry).clone(),
    };
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
    };
    state.store.insert_webhook(&webhook).await?;
    Ok((StatusCode::CREATED, Json(webhook.into())))
}

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
async fn find(
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

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(
        find(&state, &actor, &id, q.account.as_deref())
            .await?
            .into(),
    ))
}

async fn secret(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<Value>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    Ok(Json(json!({ "secret": webhook.secret.expose() })))
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    let mut webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    // Validate everything before changing anything: a rejected PATCH writes nothing.
    if let Some(url) = &body.url {
        webhook.url = parse_url(&state, url)?;
    }
    if let Some(events) = &body.events {
        webhook.events = parse_filters(&state, events)?;
    }
    if let Some(d) = &body.description {
        webhook.description = parse_description(d)?;
    }
    if let Some(doc) = &body.retry {
        webhook.retry = parse_retry(&state, doc)?;
    }
    if let Some(status) = body.status {
        webhook.status = status;
    }
    webhook.updated_at = Timestamp::now();
    if !state.store.update_webhook(&webhook).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(webhook.into()))
}

async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    if !state
        .store
        .delete_webhook(Some(&webhook.account_id), &webhook.id, Timestamp::now())
        .await?
    {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(StatusCode::NO_CONTENT)
}
