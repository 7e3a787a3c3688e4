//! The portal's one stylesheet, built into the binary (no CDN, nothing fetched), with the
//! provider's colours from `[portal.colors]` (checked at start to be `#rgb`/`#rrggbb`) put in
//! front as CSS variables, so no page needs an inline style.

use crate::api::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

const STYLESHEET: &str = include_str!("portal.css");

/// `GET /portal/assets/portal.css`.
pub(super) async fn stylesheet(State(state): State<AppState>) -> impl IntoResponse {
    let colors = &state.settings.portal.colors;
    let css = format!(
        ":root{{--primary:{};--header:{}}}\n{STYLESHEET}",
        colors.primary, colors.header
    );
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        css,
    )
}
