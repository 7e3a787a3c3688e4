//! A webhook's signing key: reading it as receivers verify with it, and rotating it with a
//! grace period during which deliveries carry both signatures.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery, OptionalJson};
use super::webhooks::{AccountParam, find};
use crate::domain::duration::parse_duration;
use crate::domain::{ReceiverKey, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(secret))
        .routes(routes!(rotate))
}

/// What receivers verify deliveries with: an HMAC secret whole (`secret`, shared with the
/// receiver by design), an ed25519 key by its public half (`public_key`). One of the two.
#[derive(Serialize, ToSchema)]
#[schema(as = ReceiverKey)]
pub(crate) struct KeyView {
    /// The HMAC secret, for `standard` signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub(crate) secret: Option<String>,
    /// The ed25519 public key, for `ed25519` signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) public_key: Option<String>,
}

impl From<ReceiverKey> for KeyView {
    fn from(k: ReceiverKey) -> Self {
        match k {
            ReceiverKey::Secret(s) => Self {
                secret: Some(s),
                public_key: None,
            },
            ReceiverKey::PublicKey(k) => Self {
                secret: None,
                public_key: Some(k),
            },
        }
    }
}

/// What `GET /v1/webhooks/{id}/secret` answers: what receivers verify with, never a private key.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookSecret)]
pub(crate) struct SecretView {
    #[serde(flatten)]
    pub(crate) key: KeyView,
    /// The signing mode, with its credential (a bearer token, a header's value) if it has one.
    pub(crate) signing: SigningMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) previous_secret: Option<PreviousKeyView>,
}

/// The key a rotation or a change of signing mode replaced, still signing until `expires_at`.
#[derive(Serialize, ToSchema)]
#[schema(as = PreviousKey)]
pub(crate) struct PreviousKeyView {
    #[serde(flatten)]
    pub(crate) key: KeyView,
    pub(crate) expires_at: Timestamp,
}

/// Get a webhook's signing secret
///
/// What receivers verify deliveries with: the `whsec_…` secret, or the ed25519 public key; and
/// the previous one while it is still signing after a rotation.
#[utoipa::path(get, path = "/v1/webhooks/{id}/secret", tag = "webhooks",
    operation_id = "get_webhook_secret",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    responses(
        (status = 200, description = "The key receivers verify with", body = SecretView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
    ))]
async fn secret(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
) -> ApiResult<Json<SecretView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    Ok(Json(secret_view(webhook, Timestamp::now())))
}

/// What receivers verify a webhook's deliveries with at `now` (the API's answer and the
/// portal's page).
pub(crate) fn secret_view(webhook: Webhook, now: Timestamp) -> SecretView {
    let previous_secret = webhook
        .previous_secret
        .as_ref()
        .filter(|(_, until)| *until > now)
        .map(|(previous, until)| PreviousKeyView {
            key: previous.receiver_key().into(),
            expires_at: *until,
        });
    SecretView {
        key: webhook.secret.receiver_key().into(),
        signing: webhook.signing,
        previous_secret,
    }
}

/// A new secret of the kind a signing mode signs with.
pub(super) fn fresh_secret(signing: &SigningMode) -> SigningSecret {
    match signing {
        SigningMode::Ed25519 => SigningSecret::generate_ed25519(),
        _ => SigningSecret::generate(),
    }
}

/// The secret a webhook signs with: the one given, or a new one of the mode's kind.
pub(super) fn secret_for(signing: &SigningMode, given: Option<&str>) -> ApiResult<SigningSecret> {
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

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSecret {
    /// The new secret (`whsec_…`, or `whsk_…` in `ed25519` mode); a fresh one if left out.
    pub(crate) secret: Option<String>,
    /// How long the old secret keeps signing beside the new one (`0s` to `7d`, default `1d`).
    #[schema(example = "1d")]
    pub(crate) grace_period: Option<String>,
}

/// What a rotation answers: the new key as receivers verify with it (an ed25519 private key,
/// generated or given, is not shown).
#[derive(Serialize, ToSchema)]
#[schema(as = RotatedSecret)]
struct RotatedView {
    #[serde(flatten)]
    key: KeyView,
    /// Until when the old secret signs too (none if the grace period is `0s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<Timestamp>,
}

/// Rotate a webhook's signing secret
///
/// Replaces the secret; during the grace period deliveries carry both signatures. The body may
/// be left out.
#[utoipa::path(post, path = "/v1/webhooks/{id}/secret/rotate", tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = WebhookId, Path, description = "The webhook's id"), AccountParam),
    request_body(content = Option<RotateSecret>, description = "Optional"),
    responses(
        (status = 200, description = "The new key", body = RotatedView),
        (status = 404, description = "No such webhook in the account", body = ErrorBody),
        (status = 409, description = "A `herald listen` stream's webhook, which cannot be changed \
            (`listener_webhook`)", body = ErrorBody),
        (status = 422, description = "A value is not accepted; the field says which",
            body = ErrorBody),
    ))]
async fn rotate(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AccountParam>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> ApiResult<Json<RotatedView>> {
    let webhook = find(&state, &actor, &id, q.account.as_deref()).await?;
    let webhook = rotate_secret(&state, webhook, &body).await?;
    Ok(Json(RotatedView {
        key: webhook.secret.receiver_key().into(),
        previous_secret_expires_at: webhook.previous_secret.map(|(_, until)| until),
    }))
}

/// Replaces a webhook's secret, the old one signing beside it for the grace period (the API's
/// rotation and the portal's form).
pub(crate) async fn rotate_secret(
    state: &AppState,
    mut webhook: Webhook,
    body: &RotateSecret,
) -> ApiResult<Webhook> {
    super::webhooks::editable(&webhook)?;
    let grace = parse_grace(body.grace_period.as_deref())?;
    let new_secret = secret_for(&webhook.signing, body.secret.as_deref())?;
    let now = Timestamp::now();
    webhook.replace_secret(new_secret, now, grace);
    webhook.updated_at = now;
    if !state.store.update_webhook(&webhook).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(webhook)
}
