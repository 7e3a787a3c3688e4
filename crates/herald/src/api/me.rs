//! The account's own settings: its single callback URL (seed 003) and its signing secret.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use super::webhooks::parse_grace;
use crate::domain::{
    EventFilter, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind,
    WebhookStatus, WebhookUrl,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/me/callback-url",
            get(show_callback).put(set_callback).delete(remove_callback),
        )
        .route("/v1/me/signing-secret", get(signing_secret))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCallback {
    callback_url: String,
    account: Option<String>,
    /// How deliveries authenticate; the operator's `registration.callback.signing` if unset.
    signing: Option<SigningMode>,
    /// How long the old key keeps signing when the signing mode moves between HMAC and ed25519.
    grace_period: Option<String>,
}

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

fn callback_view(w: Option<&Webhook>) -> Value {
    match w {
        Some(w) => json!({ "callback_url": w.url, "webhook_id": w.id, "status": w.status }),
        None => json!({ "callback_url": null }),
    }
}

/// Sets (or replaces) the account's callback URL: a webhook subscribed to every event.
async fn set_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<SetCallback>,
) -> ApiResult<Json<Value>> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    let url = WebhookUrl::parse_with(&body.callback_url, &state.settings.address_policy())
        .map_err(|e| ApiError::invalid("callback_url", e))?;
    let model = &state.settings.registration.callback;
    let signing = body.signing.unwrap_or_else(|| model.signing.clone());
    signing
        .validate()
        .map_err(|e| ApiError::invalid("signing", e))?;
    let grace = parse_grace(body.grace_period.as_deref())?;
    let retry = state
        .settings
        .model_retry(model)
        .map_err(|e| ApiError::invalid("callback_url", e))?;
    // A callback signs with the account's secret, or in `ed25519` mode with a key of its own.
    let fresh = match &signing {
        SigningMode::Ed25519 => SigningSecret::generate_ed25519(),
        _ => state.store.account_signing_secret(&account).await?,
    };
    let now = Timestamp::now();
    let webhook = match state.store.callback_webhook(&account).await? {
        // The URL moves, the key stays unless the new mode needs the other kind.
        Some(mut existing) => {
            existing.url = url;
            existing.format = model.format;
            existing.updated_at = now;
            existing.change_signing(signing, || fresh, now, grace);
            existing
        }
        None => Webhook {
            id: WebhookId::generate(),
            account_id: account,
            url,
            events: vec![EventFilter::All],
            secret: fresh,
            description: "the account's callback URL".to_owned(),
            retry,
            status: WebhookStatus::Active,
            created_at: now,
            updated_at: now,
            kind: WebhookKind::Callback,
            job_id: None,
            signing,
            format: model.format,
            previous_secret: None,
            disabled_reason: None,
            failing_since: None,
        },
    };
    let saved = state.store.set_callback_webhook(&webhook).await?;
    Ok(Json(callback_view(Some(&saved))))
}

async fn show_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<Value>> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    Ok(Json(callback_view(
        state.store.callback_webhook(&account).await?.as_ref(),
    )))
}

async fn remove_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    let Some(webhook) = state.store.callback_webhook(&account).await? else {
        return Err(ApiError::not_found("callback URL"));
    };
    state
        .store
        .delete_webhook(Some(&account), &webhook.id, Timestamp::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The secret that signs the callback URL's and jobs' own deliveries in `standard` mode (always
/// an HMAC secret, shown as receivers verify with it).
async fn signing_secret(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<Value>> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    let secret = state.store.account_signing_secret(&account).await?;
    Ok(Json(json!(secret.receiver_key())))
}
