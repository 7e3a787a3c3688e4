//! Webhooks: the subscription resource of seed 000, `POST /v1/webhooks {url, events, secret?}`.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery, OptionalJson};
use super::test_send::{TestSendAnswer, TestSendRequest, test_event};
use super::{AppState, ListBody, page_request};
use crate::domain::duration::parse_duration;
use crate::domain::{
    AccountId, EventFilter, PayloadFormat, ReceiverKey, RetryPolicy, RetryPolicyDoc, SigningMode,
    SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind, WebhookStatus, WebhookUrl,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(list).post(create))
        .route("/v1/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/v1/webhooks/{id}/secret", get(secret))
        .route("/v1/webhooks/{id}/secret/rotate", post(rotate))
        .route("/v1/webhooks/{id}/enable", post(enable))
        .route("/v1/webhooks/{id}/test", post(send_test))
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
    kind: WebhookKind,
    signing: Value,
    format: PayloadFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
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
            kind: w.kind,
            signing: w.signing.redacted(),
            format: w.format,
            disabled_reason: w.disabled_reason,
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
    signing: Option<SigningMode>,
    format: Option<PayloadFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    retry: Option<RetryPolicyDoc>,
    status: Option<WebhookStatus>,
    signing: Option<SigningMode>,
    /// How long the old key keeps signing when `signing` moves between HMAC and ed25519.
    grace_period: Option<String>,
    format: Option<PayloadFormat>,
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
    WebhookUrl::parse_with(url, &state.settings.address_policy())
        .map_err(|e| ApiError::invalid("url", e))
}

pub(super) fn parse_filters(state: &AppState, events: &[String]) -> ApiResult<Vec<EventFilter>> {
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
        Some(doc) => parse_retry(&state, doc)?,
        None => state
            .settings
            .model_retry(defaults)
            .map_err(|e| ApiError::invalid("retry", e))?,
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
        kind: WebhookKind::Subscription,
        job_id: None,
        signing,
        format: body.format.unwrap_or(defaults.format),
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
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
pub(super) async fn find(
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

/// What `GET /v1/webhooks/{id}/secret` answers: what receivers verify with, never a private key.
#[derive(Serialize)]
struct SecretView {
    #[serde(flatten)]
    key: ReceiverKey,
    signing: SigningMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret: Option<PreviousKeyView>,
}

/// The key a rotation or a change of signing mode replaced, still signing until `expires_at`.
#[derive(Serialize)]
struct PreviousKeyView {
    #[serde(flatten)]
    key: ReceiverKey,
    expires_at: Timestamp,
}

async fn secret(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<SecretView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    let now = Timestamp::now();
    let previous_secret = webhook
        .previous_secret
        .as_ref()
        .filter(|(_, until)| *until > now)
        .map(|(previous, until)| PreviousKeyView {
            key: previous.receiver_key(),
            expires_at: *until,
        });
    Ok(Json(SecretView {
        key: webhook.secret.receiver_key(),
        signing: webhook.signing,
        previous_secret,
    }))
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    let mut webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    editable(&webhook)?;
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
        webhook.disabled_reason = (status == WebhookStatus::Disabled).then(|| "manual".to_owned());
    }
    if let Some(format) = body.format {
        webhook.format = format;
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

/// A listener webhook is what its `herald listen` stream made it: its secret is the one the CLI
/// printed, its URL no address. It can be deleted (which ends the stream), not changed.
fn editable(webhook: &Webhook) -> ApiResult<()> {
    if webhook.kind == WebhookKind::Listener {
        return Err(ApiError::conflict(
            "listener_webhook",
            "this webhook belongs to a `herald listen` stream and lives as long as it; it cannot be changed (delete it to end the stream)",
        ));
    }
    Ok(())
}

/// A new secret of the kind a signing mode signs with.
fn fresh_secret(signing: &SigningMode) -> SigningSecret {
    match signing {
        SigningMode::Ed25519 => SigningSecret::generate_ed25519(),
        _ => SigningSecret::generate(),
    }
}

/// The secret a webhook signs with: the one given, or a new one of the mode's kind.
fn secret_for(signing: &SigningMode, given: Option<&str>) -> ApiResult<SigningSecret> {
    let ed25519 = matches!(signing, SigningMode::Ed25519);
    match given {
        None => Ok(fresh_secret(signing)),
        Some(text) => {
            let secret = SigningSecret::parse(text).map_err(|e| ApiError::invalid("secret", e))?;
            if secret.is_ed25519() != ed25519 {
                let want = if ed25519 {
                    "an ed25519 secret (whsk_…)"
                } else {
                    "an HMAC secret (whsec_…)"
                };
                return Err(ApiError::invalid(
                    "secret",
                    format!("this signing mode needs {want}"),
                ));
            }
            Ok(secret)
        }
    }
}

/// Longest grace period a replaced secret may keep signing.
const MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// How long a replaced secret keeps signing: `grace_period` (`0s` for not at all) or a day.
pub(super) fn parse_grace(given: Option<&str>) -> ApiResult<Duration> {
    let grace = match given {
        Some(g) => parse_duration(g).map_err(|e| ApiError::invalid("grace_period", e))?,
        None => DEFAULT_GRACE,
    };
    if grace > MAX_GRACE {
        return Err(ApiError::invalid(
            "grace_period",
            "grace_period is at most 7d",
        ));
    }
    Ok(grace)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    secret: Option<String>,
    grace_period: Option<String>,
}

/// What a rotation answers: the new key as receivers verify with it (an ed25519 private key,
/// generated or given, is not shown).
#[derive(Serialize)]
struct RotatedView {
    #[serde(flatten)]
    key: ReceiverKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<Timestamp>,
}

/// Replaces the secret; during the grace period deliveries carry both signatures.
async fn rotate(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> ApiResult<Json<RotatedView>> {
    let mut webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    editable(&webhook)?;
    let grace = parse_grace(body.grace_period.as_deref())?;
    let new_secret = secret_for(&webhook.signing, body.secret.as_deref())?;
    let now = Timestamp::now();
    webhook.replace_secret(new_secret, now, grace);
    webhook.updated_at = now;
    if !state.store.update_webhook(&webhook).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(RotatedView {
        key: webhook.secret.receiver_key(),
        previous_secret_expires_at: webhook.previous_secret.map(|(_, until)| until),
    }))
}

/// Re-enables a webhook (after an automatic disable); its waiting deliveries go out again.
async fn enable(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<WebhookView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
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
    Ok(Json(enabled.into()))
}

/// Sends a test event to this webhook only: `webhook.test`, or the type and data the optional
/// body names (`api/test_send.rs`).
async fn send_test(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    OptionalJson(body): OptionalJson<TestSendRequest>,
) -> ApiResult<(StatusCode, Json<TestSendAnswer>)> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    if webhook.status != WebhookStatus::Active {
        return Err(ApiError::conflict(
            "webhook_disabled",
            "the webhook is disabled; enable it first",
        ));
    }
    let event = test_event(&state, &webhook, body)?;
    let published = state.store.publish_event(event).await?;
    state.deliveries_created(published.deliveries);
    let delivery = state
        .store
        .list_deliveries(
            &crate::store::DeliveryQuery {
                event: Some(published.event.id.clone()),
                ..Default::default()
            },
            &crate::store::PageRequest {
                after: None,
                limit: 1,
            },
        )
        .await?
        .items
        .into_iter()
        .next();
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSendAnswer {
            event_id: published.event.id,
            event_type: published.event.event_type,
            delivery_id: delivery.map(|d| d.id),
        }),
    ))
}
