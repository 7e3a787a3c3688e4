//! Portal links (admin): `POST /v1/accounts/{id}/portal-sessions` makes a short-lived, one-time
//! link into the customer portal (`portal/`) for one account, for the provider to hand to its
//! customer (a redirect, a link in its dashboard, or a frame). Opening it starts the session.

use super::AppState;
use super::error::{ApiResult, ErrorBody};
use super::extract::Actor;
use crate::domain::{AccountId, Timestamp};
use crate::portal::session::{new_link, public_base};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

/// A link into the portal: it opens once, before `expires_at`.
#[derive(Serialize, ToSchema)]
#[schema(as = PortalLink)]
struct LinkView {
    /// Opened, it starts a session for the account (a cookie) and shows the portal. Treat it as
    /// a credential until it is used.
    #[schema(
        example = "https://hooks.example.com/portal/open/hpl_kq2V9rX0aZbC4dEfGhIjKlMnOpQrStUvWxYz0123456"
    )]
    url: String,
    expires_at: Timestamp,
}

/// Make a customer portal link
///
/// A one-time link into the customer portal for this account, valid for `portal.link_lifetime`
/// (5 minutes by default). Made from `portal.public_url`, or else from this request's `Host`.
#[utoipa::path(post, path = "/v1/accounts/{id}/portal-sessions", tag = "accounts",
    operation_id = "create_portal_session",
    security(("admin_token" = [])),
    params(("id" = AccountId, Path, description = "The account's id")),
    responses(
        (status = 201, description = "The link", body = LinkView),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<LinkView>)> {
    actor.require_admin()?;
    let account = actor.account(&state, Some(&id)).await?;
    let base = public_base(&state.settings, &headers)?;
    let (token, link) = new_link(&account, &state.settings.portal, Timestamp::now());
    state.store.create_portal_link(&link).await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkView {
            url: format!("{base}/portal/open/{token}"),
            expires_at: link.expires_at,
        }),
    ))
}
