//! The customer portal (`/portal`): server-rendered pages where one account manages its
//! webhooks, reads its deliveries, jobs and endpoint health, for a provider to link to or embed
//! in its own dashboard (docs/architecture.md §13).
//!
//! A provider asks for a one-time link (`POST /v1/accounts/{id}/portal-sessions`, in
//! `api/portal_sessions.rs`); opening it starts a session ([`session`]) whose cookie scopes every
//! page to that account: another account's ids are 404, as in the API. Pages call the API's own
//! functions (validation, store calls), never a copy of them. HTML comes only from askama
//! templates (`templates/portal/`, escaping on); forms carry a per-session CSRF token; every
//! answer carries a Content-Security-Policy without inline script, and `frame-ancestors` from
//! `[portal]`. The one stylesheet is built into the binary ([`assets`]); no page needs script.
//!
//! A file per page family: [`webhooks`] (list, create, edit, enable and disable, test sends),
//! [`secrets`], [`callback`], [`deliveries`], [`health`] (the chart, drawn here), [`jobs`],
//! [`recover`] (failed deliveries sent again, and the task's progress), [`keys`] (API keys).

mod assets;
mod callback;
mod deliveries;
mod health;
mod jobs;
mod keys;
mod page;
mod recover;
mod secrets;
pub mod session;
mod webhooks;

use crate::api::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
pub(crate) use page::{Chrome, PortalError, PortalResult, render};

/// Every portal route, its answers given the portal's security headers (and its error pages).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/portal", get(webhooks::list))
        .route(
            "/portal/open/{token}",
            get(session::open_page).post(session::open),
        )
        .route("/portal/logout", post(session::logout))
        .route("/portal/assets/portal.css", get(assets::stylesheet))
        .route("/portal/webhooks", post(webhooks::create))
        .route("/portal/webhooks/new", get(webhooks::new))
        .route(
            "/portal/webhooks/{id}",
            get(webhooks::show).post(webhooks::update),
        )
        .route("/portal/webhooks/{id}/status", post(webhooks::set_status))
        .route("/portal/webhooks/{id}/delete", post(webhooks::delete))
        .route("/portal/webhooks/{id}/test", post(webhooks::send_test))
        .route("/portal/webhooks/{id}/secret", get(secrets::show))
        .route("/portal/webhooks/{id}/secret/rotate", post(secrets::rotate))
        .route("/portal/webhooks/{id}/health", get(health::show))
        .route("/portal/callback", get(callback::show).post(callback::set))
        .route("/portal/callback/remove", post(callback::remove))
        .route("/portal/deliveries", get(deliveries::list))
        .route("/portal/deliveries/{id}", get(deliveries::show))
        .route("/portal/deliveries/{id}/retry", post(deliveries::retry))
        .route("/portal/jobs", get(jobs::list))
        .route("/portal/jobs/{id}", get(jobs::show))
        .route(
            "/portal/webhooks/{id}/recover",
            get(recover::show).post(recover::start),
        )
        .route("/portal/tasks/{id}", get(recover::task))
        .route("/portal/keys", get(keys::list).post(keys::create))
        .route("/portal/keys/{id}/revoke", post(keys::revoke_key))
        .route("/portal/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            finish,
        ))
        .with_state(state)
}

async fn not_found() -> PortalError {
    PortalError::NotFound("page")
}

/// Renders an error answer's page, and gives every answer the portal's headers.
async fn finish(State(state): State<AppState>, response: Response) -> Response {
    let mut response = page::error_page(&state, response);
    let headers = response.headers_mut();
    let policy = content_security_policy(&state.settings.portal);
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, policy.as_str()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // A link's token is in its path: never send it on to another site.
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    if state.settings.portal.frame_ancestors.is_empty() {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    // Pages hold an account's data: never kept by a cache. The stylesheet says otherwise.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// No script at all, styles and images from Herald itself (and the configured logo's origin),
/// forms posted back only here, framed only by the configured origins.
pub fn content_security_policy(portal: &crate::config::PortalSettings) -> String {
    let images = match portal.logo_origin() {
        Some(origin) => format!("'self' data: {origin}"),
        None => "'self' data:".to_owned(),
    };
    let ancestors = if portal.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        portal
            .frame_ancestors
            .iter()
            .map(|o| o.trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "default-src 'none'; style-src 'self'; img-src {images}; form-action 'self'; \
         base-uri 'none'; frame-ancestors {ancestors}"
    )
}
