//! The account's API keys: the list (never the keys themselves: a label, the first characters,
//! when made, last used and revoked), making one (shown once, on the answer to the form, never
//! in a URL), and revoking one. Through the API's own functions (`api::keys`), so the portal
//! refuses what `POST /v1/me/keys` refuses.

use super::session::{Form, Session};
use super::webhooks::PageQuery;
use super::{Chrome, PortalResult, render};
use crate::api::keys::{create_key, revoke};
use crate::api::{AppState, page_request};
use crate::domain::ApiKeyId;
use crate::store::ApiKeyInfo;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

/// A key as a row shows it.
struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    revoked: String,
}

impl From<&ApiKeyInfo> for KeyRow {
    fn from(k: &ApiKeyInfo) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created: k.created_at.to_rfc3339(),
            last_used: k.last_used_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            revoked: k.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "portal/keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    next: Option<String>,
    error: Option<String>,
    /// What was typed, on a refused form.
    name: String,
    /// A key just made: shown this once.
    created: Option<String>,
}

async fn page(
    state: &AppState,
    session: &Session,
    cursor: Option<&str>,
    done: Option<&str>,
) -> PortalResult<KeysPage> {
    let page = page_request(cursor, None, |c| ApiKeyId::parse(c).is_some())?;
    let found = state.store.list_api_keys(&session.account, &page).await?;
    Ok(KeysPage {
        chrome: Chrome::new(state, &session.csrf, "keys", "API keys".into()).with_notice(done),
        keys: found.items.iter().map(KeyRow::from).collect(),
        next: found.next_cursor,
        error: None,
        name: String::new(),
        created: None,
    })
}

/// `GET /portal/keys`.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> PortalResult<Response> {
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    Ok(render(
        &page(&state, &session, cursor, q.done.as_deref()).await?,
    ))
}

/// `POST /portal/keys` with `name`: makes a key and shows it, once, on this answer.
pub(super) async fn create(State(state): State<AppState>, form: Form) -> PortalResult<Response> {
    let name = form.get("name").unwrap_or("").to_owned();
    let made = create_key(&state, form.session.account.clone(), name.clone()).await;
    match made {
        Ok((key, _)) => {
            tracing::info!(account_id = %form.session.account, "API key made in the portal");
            let mut shown = page(&state, &form.session, None, None).await?;
            shown.created = Some(key);
            Ok((StatusCode::CREATED, render(&shown)).into_response())
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let mut refused = page(&state, &form.session, None, None).await?;
            refused.error = Some(e.message);
            refused.name = name;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&refused)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/keys/{id}/revoke`: another account's key is 404.
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> PortalResult<Response> {
    revoke(&state, &form.session.account, &id).await?;
    Ok(Redirect::to("/portal/keys?done=revoked").into_response())
}
