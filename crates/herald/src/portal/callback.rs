//! The account's callback URL (one URL that gets every event, signed with the account's
//! signing secret), through the API's own functions (`api::me`).

use super::session::{Form, Session};
use super::webhooks::PageQuery;
use super::{Chrome, PortalResult, render};
use crate::api::AppState;
use crate::api::me::{SetCallback, remove_callback_url, set_callback_url};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Template)]
#[template(path = "portal/callback.html")]
struct CallbackPage {
    chrome: Chrome,
    error: Option<String>,
    /// The URL in the form: the one in force, or what was just refused.
    url: String,
    /// The callback webhook in force: its id and status.
    current: Option<(String, &'static str)>,
}

async fn page(
    state: &AppState,
    session: &Session,
    error: Option<String>,
    typed: Option<String>,
    done: Option<&str>,
) -> PortalResult<CallbackPage> {
    let current = state.store.callback_webhook(&session.account).await?;
    Ok(CallbackPage {
        chrome: Chrome::new(state, &session.csrf, "callback", "Callback URL".into())
            .with_notice(done),
        error,
        url: typed
            .or_else(|| current.as_ref().map(|w| w.url.as_str().to_owned()))
            .unwrap_or_default(),
        current: current.map(|w| (w.id.to_string(), w.status.as_str())),
    })
}

/// `GET /portal/callback`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> PortalResult<Response> {
    Ok(render(
        &page(&state, &session, None, None, q.done.as_deref()).await?,
    ))
}

/// `POST /portal/callback` with `callback_url`.
pub(super) async fn set(State(state): State<AppState>, form: Form) -> PortalResult<Response> {
    let body = SetCallback {
        callback_url: form.get("callback_url").unwrap_or("").trim().to_owned(),
        ..SetCallback::default()
    };
    match set_callback_url(&state, form.session.account.clone(), &body).await {
        Ok(_) => Ok(Redirect::to("/portal/callback?done=callback_saved").into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let shown = page(
                &state,
                &form.session,
                Some(e.message),
                Some(body.callback_url),
                None,
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&shown)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/callback/remove`.
pub(super) async fn remove(State(state): State<AppState>, form: Form) -> PortalResult<Response> {
    remove_callback_url(&state, &form.session.account).await?;
    Ok(Redirect::to("/portal/callback?done=callback_removed").into_response())
}
