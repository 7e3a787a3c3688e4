//! A webhook's signing secret: shown as receivers verify with it (an HMAC secret whole, an
//! ed25519 key by its public half, as `GET /v1/webhooks/{id}/secret` shows it), and rotated with
//! a grace period during which deliveries carry both signatures.

use super::session::{Form, Session};
use super::webhooks::PageQuery;
use super::{Chrome, PortalResult, render};
use crate::api::AppState;
use crate::api::extract::Actor;
use crate::api::webhook_secrets::{RotateSecret, rotate_secret, secret_view};
use crate::api::webhooks::find;
use crate::domain::Timestamp;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Template)]
#[template(path = "portal/secret.html")]
struct SecretPage {
    chrome: Chrome,
    webhook_id: String,
    url: String,
    /// `whsec_…` for HMAC signing.
    secret: Option<String>,
    /// The ed25519 public key.
    public_key: Option<String>,
    /// The replaced key, and until when it still signs.
    previous: Option<(String, String)>,
    signing: String,
}

/// `GET /portal/webhooks/{id}/secret`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> PortalResult<Response> {
    let webhook = find(&state, &Actor::Account(session.account.clone()), &id, None).await?;
    let (webhook_id, url) = (webhook.id.to_string(), webhook.url.as_str().to_owned());
    let view = secret_view(webhook, Timestamp::now());
    let signing = serde_json::to_value(&view.signing)
        .ok()
        .and_then(|v| v["mode"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(render(&SecretPage {
        chrome: Chrome::new(&state, &session.csrf, "webhooks", "Signing secret".into())
            .with_notice(q.done.as_deref()),
        webhook_id,
        url,
        secret: view.key.secret,
        public_key: view.key.public_key,
        previous: view.previous_secret.map(|p| {
            let key = p.key.secret.or(p.key.public_key).unwrap_or_default();
            (key, p.expires_at.to_rfc3339())
        }),
        signing,
    }))
}

/// `POST /portal/webhooks/{id}/secret/rotate` with `grace_period` (`0s` to `7d`).
pub(super) async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    let actor = Actor::Account(form.session.account.clone());
    let webhook = find(&state, &actor, &id, None).await?;
    let body = RotateSecret {
        secret: None,
        grace_period: form
            .get("grace_period")
            .filter(|g| !g.is_empty())
            .map(str::to_owned),
    };
    let webhook = rotate_secret(&state, webhook, &body).await?;
    Ok(Redirect::to(&format!(
        "/portal/webhooks/{}/secret?done=rotated",
        webhook.id
    ))
    .into_response())
}
