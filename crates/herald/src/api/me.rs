//! The account's own settings: its single callback URL (seed 003) and its signing secret.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiJson, ApiQuery, object_only};
use super::webhook_secrets::{KeyView, parse_grace};
use crate::domain::{
    AccountId, EventFilter, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind,
    WebhookOrdering, WebhookStatus, WebhookUrl,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_callback, set_callback, remove_callback))
        .routes(routes!(signing_secret))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetCallback {
    /// Gets every event of the account.
    #[schema(pattern = "^https?://", example = "https://example.com/callback")]
    pub(crate) callback_url: String,
    /// With the admin token: the account (required). With an API key: leave out (or the key's
    /// own account).
    pub(crate) account: Option<String>,
    /// How deliveries authenticate; the operator's `registration.callback.signing` if unset.
    #[serde(default, deserialize_with = "object_only")]
    pub(crate) signing: Option<SigningMode>,
    /// How long the old key keeps signing when the signing mode moves between HMAC and ed25519
    /// (`0s` to `7d`, default `1d`).
    #[schema(example = "1d")]
    pub(crate) grace_period: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account (required). With an API key: leave out, or the key's
    /// own account.
    account: Option<String>,
}

/// The account's callback URL: `{"callback_url": null}` when it has none.
#[derive(Serialize, ToSchema)]
#[schema(as = CallbackUrl)]
struct CallbackView {
    callback_url: Option<String>,
    /// The webhook that delivers to it (a webhook of kind `callback`, subscribed to `*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_id: Option<WebhookId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WebhookStatus>,
}

fn callback_view(w: Option<&Webhook>) -> CallbackView {
    CallbackView {
        callback_url: w.map(|w| w.url.as_str().to_owned()),
        webhook_id: w.map(|w| w.id.clone()),
        status: w.map(|w| w.status),
    }
}

/// Set the callback URL
///
/// Sets (or replaces) the account's callback URL: a webhook subscribed to every event, signed
/// with the account's signing secret (`GET /v1/me/signing-secret`).
#[utoipa::path(put, path = "/v1/me/callback-url", tag = "me", operation_id = "set_callback_url",
    security(("admin_token" = []), ("api_key" = [])),
    request_body = SetCallback,
    responses(
        (status = 200, description = "The callback URL in force", body = CallbackView),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "A value is not accepted (the field says which), or the \
            admin token named no account", body = ErrorBody),
    ))]
async fn set_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<SetCallback>,
) -> ApiResult<Json<CallbackView>> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    let saved = set_callback_url(&state, account, &body).await?;
    Ok(Json(callback_view(Some(&saved))))
}

/// Sets (or replaces) an account's callback URL (the API's PUT and the portal's form).
pub(crate) async fn set_callback_url(
    state: &AppState,
    account: AccountId,
    body: &SetCallback,
) -> ApiResult<Webhook> {
    let url = WebhookUrl::parse_with(&body.callback_url, &state.settings.address_policy())
        .map_err(|e| ApiError::invalid("callback_url", e))?;
    let model = &state.settings.registration.callback;
    let signing = body
        .signing
        .clone()
        .unwrap_or_else(|| model.signing.clone());
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
            rate_limit: None,
            ordering: WebhookOrdering::None,
            held: false,
        },
    };
    Ok(state.store.set_callback_webhook(&webhook).await?)
}

/// Get the callback URL
#[utoipa::path(get, path = "/v1/me/callback-url", tag = "me", operation_id = "get_callback_url",
    security(("admin_token" = []), ("api_key" = [])),
    params(AccountParam),
    responses(
        (status = 200, description = "The callback URL, or null", body = CallbackView),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "The admin token named no account", body = ErrorBody),
    ))]
async fn show_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<CallbackView>> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    Ok(Json(callback_view(
        state.store.callback_webhook(&account).await?.as_ref(),
    )))
}

/// Remove the callback URL
#[utoipa::path(delete, path = "/v1/me/callback-url", tag = "me",
    operation_id = "delete_callback_url",
    security(("admin_token" = []), ("api_key" = [])),
    params(AccountParam),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "The account has no callback URL, or the named account does \
            not exist (or is not the key's)", body = ErrorBody),
        (status = 422, description = "The admin token named no account", body = ErrorBody),
    ))]
async fn remove_callback(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    remove_callback_url(&state, &account).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an account's callback URL; 404 when it has none.
pub(crate) async fn remove_callback_url(state: &AppState, account: &AccountId) -> ApiResult<()> {
    let Some(webhook) = state.store.callback_webhook(account).await? else {
        return Err(ApiError::not_found("callback URL"));
    };
    state
        .store
        .delete_webhook(Some(account), &webhook.id, Timestamp::now())
        .await?;
    Ok(())
}

/// Get the account's signing secret
///
/// The secret that signs the callback URL's and jobs' own deliveries in `standard` mode (always
/// an HMAC secret, shown as receivers verify with it).
#[utoipa::path(get, path = "/v1/me/signing-secret", tag = "me",
    operation_id = "get_signing_secret",
    security(("admin_token" = []), ("api_key" = [])),
    params(AccountParam),
    responses(
        (status = 200, description = "The secret", body = KeyView),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "The admin token named no account", body = ErrorBody),
    ))]
async fn signing_secret(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<KeyView>> {
    let account = actor.account(&state, q.account.as_deref()).await?;
    let secret = state.store.account_signing_secret(&account).await?;
    Ok(Json(secret.receiver_key().into()))
}
