//! Portal links and sessions. A link (`hpl_…`) is made for one account by the admin API, lives
//! `portal.link_lifetime`, and opens once: its page's button (a POST, so a chat app or mail
//! scanner that fetches the link to preview it does not use it up) stores a session (`hps_…`,
//! the cookie's value, `portal.session_lifetime`) and redirects to the portal's home. Both are stored as
//! their SHA-256 only, as API keys are. Every form carries a CSRF token derived from the session
//! token (so it is per session and needs no storage), checked before a form is read further.

use super::page::{Chrome, PortalError, PortalResult, message};
use super::render;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::extract::hash_key;
use crate::config::{PortalSettings, Settings};
use crate::domain::{AccountId, Timestamp};
use crate::store::{LinkRedeemed, NewPortalLink, NewPortalSession};
use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "herald_portal";
const LINK_PREFIX: &str = "hpl_";
const SESSION_PREFIX: &str = "hps_";
/// Longest token accepted (a real one is its prefix and 43 characters).
const MAX_TOKEN: usize = 100;
/// Largest form body read.
const MAX_FORM: usize = 64 * 1024;

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new link for `account`: its token (shown once, in the URL) and what the store keeps.
pub fn new_link(
    account: &AccountId,
    portal: &PortalSettings,
    now: Timestamp,
) -> (String, NewPortalLink) {
    let token = random_token(LINK_PREFIX);
    let link = NewPortalLink {
        hash: hash_key(&token),
        account: account.clone(),
        created_at: now,
        expires_at: now.plus(portal.link_lifetime.0),
    };
    (token, link)
}

/// Where links point: `portal.public_url`, or the scheme and `Host` of the request asking
/// (`https` outside dev mode).
pub fn public_base(settings: &Settings, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &settings.portal.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .ok_or_else(|| {
            ApiError::malformed(
                "the request has no usable Host header to make the link from; set portal.public_url",
            )
        })?;
    let scheme = if settings.dev { "http" } else { "https" };
    Ok(format!("{scheme}://{host}"))
}

/// The CSRF token of the session whose token is `session_token`.
fn csrf_of(session_token: &str) -> String {
    hash_key(&format!("portal-csrf:{session_token}"))
}

/// The session a request's cookie names; a page that needs one answers "session ended"
/// without it.
pub(crate) struct Session {
    pub account: AccountId,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
    hash: String,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> PortalResult<Self> {
        let token = cookie(&parts.headers, COOKIE)
            .filter(|t| t.starts_with(SESSION_PREFIX) && t.len() <= MAX_TOKEN)
            .ok_or(PortalError::NoSession)?;
        let hash = hash_key(token);
        let found = state
            .store
            .find_portal_session(&hash, Timestamp::now())
            .await?
            .ok_or(PortalError::NoSession)?;
        Ok(Self {
            account: found.account,
            csrf: csrf_of(token),
            hash,
        })
    }
}

/// A posted form of a session, read only once its CSRF token matched: its fields in order
/// (a repeated name, such as the event types' checkboxes, comes several times).
pub(crate) struct Form {
    pub session: Session,
    fields: Vec<(String, String)>,
}

impl Form {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = PortalError;

    async fn from_request(req: Request, state: &AppState) -> PortalResult<Self> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| PortalError::Page {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                title: "Not accepted",
                text: format!("The form is larger than {MAX_FORM} bytes."),
            })?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())) {
            tracing::info!(account_id = %session.account, "portal form refused: no valid CSRF token");
            return Err(PortalError::Forged);
        }
        Ok(Self { session, fields })
    }
}

fn session_cookie(settings: &Settings, token: &str, max_age: u64) -> HeaderValue {
    let secure = if settings.dev { "" } else { "; Secure" };
    let value = format!(
        "{COOKIE}={token}; Path=/portal; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&value).expect("a token is a valid cookie value")
}

fn is_link(token: &str) -> bool {
    token.starts_with(LINK_PREFIX) && token.len() <= MAX_TOKEN
}

const ASK_AGAIN: &str = "Ask for a new link from your provider's dashboard.";

fn not_a_link(state: &AppState) -> Response {
    message(
        state,
        StatusCode::NOT_FOUND,
        "This link is not valid",
        format!("It may have been copied incompletely. {ASK_AGAIN}"),
    )
}

#[derive(Template)]
#[template(path = "portal/open.html")]
struct OpenPage {
    chrome: Chrome,
}

/// The page of a link that opens nothing, saying why; `None` for one that opens.
fn refusal(state: &AppState, outcome: &LinkRedeemed) -> Option<Response> {
    Some(match outcome {
        LinkRedeemed::Opened(_) => return None,
        LinkRedeemed::Used(at) => message(
            state,
            StatusCode::GONE,
            "This link was already used",
            format!(
                "A portal link opens once, and this one was opened at {}. {ASK_AGAIN}",
                at.to_rfc3339()
            ),
        ),
        LinkRedeemed::Expired(at) => message(
            state,
            StatusCode::GONE,
            "This link has expired",
            format!(
                "A portal link must be opened soon after it is made; this one expired at {}. \
                 {ASK_AGAIN}",
                at.to_rfc3339()
            ),
        ),
        LinkRedeemed::Unknown => not_a_link(state),
    })
}

/// `GET /portal/open/{token}`: a page whose button opens the link, or why it would not. Reading
/// it uses nothing up: link previews and mail scanners fetch links, and a GET that opened the
/// session would burn the link before its owner clicked it.
pub(crate) async fn open_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    if !is_link(&token) {
        return not_a_link(&state);
    }
    let outcome = state
        .store
        .peek_portal_link(&hash_key(&token), Timestamp::now())
        .await;
    match outcome {
        Ok(outcome) => refusal(&state, &outcome).unwrap_or_else(|| {
            render(&OpenPage {
                chrome: Chrome::outside_session(&state, "Open the portal".to_owned()),
            })
        }),
        Err(e) => PortalError::from(e).into_response(),
    }
}

/// `POST /portal/open/{token}`: opens a link once, starting a session, or says why it cannot.
/// The link's token is the only credential; a POST another site's page makes (a browser says
/// so in `Sec-Fetch-Site`) is refused, so no page can sign a visitor into someone else's
/// session.
pub(crate) async fn open(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let portal = &state.settings.portal;
    let from = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(from, "same-origin" | "none") {
        return message(
            &state,
            StatusCode::FORBIDDEN,
            "This link must be opened from its own page",
            format!("Open the link itself in your browser, then press its button. {ASK_AGAIN}"),
        );
    }
    if !is_link(&token) {
        return not_a_link(&state);
    }
    let session_token = random_token(SESSION_PREFIX);
    let now = Timestamp::now();
    let session = NewPortalSession {
        hash: hash_key(&session_token),
        created_at: now,
        expires_at: now.plus(portal.session_lifetime.0),
    };
    let outcome = state
        .store
        .redeem_portal_link(&hash_key(&token), &session)
        .await;
    match outcome {
        Ok(LinkRedeemed::Opened(account)) => {
            tracing::info!(account_id = %account, "portal session opened");
            let mut response = Redirect::to("/portal").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(
                    &state.settings,
                    &session_token,
                    portal.session_lifetime.0.as_secs(),
                ),
            );
            response
        }
        Ok(refused) => refusal(&state, &refused).unwrap_or_else(|| not_a_link(&state)),
        Err(e) => PortalError::from(e).into_response(),
    }
}

/// `POST /portal/logout`: ends the session and clears its cookie.
pub(crate) async fn logout(State(state): State<AppState>, form: Form) -> PortalResult<Response> {
    state.store.end_portal_session(&form.session.hash).await?;
    let mut response = message(
        &state,
        StatusCode::OK,
        "Signed out",
        "Your portal session has ended.".to_owned(),
    );
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state.settings, "", 0));
    Ok(response)
}
