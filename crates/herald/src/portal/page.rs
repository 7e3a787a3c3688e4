//! What every page shares: the frame around it ([`Chrome`]: the provider's name and logo, the
//! navigation, the session's CSRF token), rendering, and error pages.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::store::StoreError;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The frame of a page: header, navigation, notice.
pub(crate) struct Chrome {
    pub provider: String,
    pub logo: Option<String>,
    pub title: String,
    /// The navigation entry to mark current (`webhooks`, `deliveries`, `jobs`, `callback`,
    /// `keys`).
    pub active: &'static str,
    /// The session's CSRF token, for its forms and the sign-out button; `None` outside a
    /// session (error pages), which then show no navigation.
    pub csrf: Option<String>,
    /// What the last action did (after a redirect, `?done=`).
    pub notice: Option<&'static str>,
}

impl Chrome {
    pub fn new(state: &AppState, csrf: &str, active: &'static str, title: String) -> Self {
        let portal = &state.settings.portal;
        Self {
            provider: portal.provider_name.clone(),
            logo: portal.logo_url.clone(),
            title,
            active,
            csrf: Some(csrf.to_owned()),
            notice: None,
        }
    }

    /// The notice a redirect's `?done=` names (only these fixed texts, never the query's own).
    pub fn with_notice(mut self, done: Option<&str>) -> Self {
        self.notice = done.and_then(|d| {
            Some(match d {
                "created" => "Webhook created.",
                "saved" => "Changes saved.",
                "enabled" => "Webhook enabled.",
                "disabled" => "Webhook disabled.",
                "rotated" => "Secret rotated. Update your receiver with the new secret.",
                "tested" => "Test event sent.",
                "retried" => "Retry scheduled.",
                "deleted" => "Webhook deleted.",
                "callback_saved" => "Callback URL saved.",
                "callback_removed" => "Callback URL removed.",
                "revoked" => "Key revoked. Requests with it are refused from now on.",
                _ => return None,
            })
        });
        self
    }

    /// The CSRF token for a form (empty outside a session, where no page has forms).
    pub fn token(&self) -> &str {
        self.csrf.as_deref().unwrap_or("")
    }

    pub(super) fn outside_session(state: &AppState, title: String) -> Self {
        let portal = &state.settings.portal;
        Self {
            provider: portal.provider_name.clone(),
            logo: portal.logo_url.clone(),
            title,
            active: "",
            csrf: None,
            notice: None,
        }
    }
}

/// A page's HTML, or a plain 500 if the template fails (which the page's tests would show).
pub(crate) fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a portal page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Why a page cannot be shown; answered as a page of its own (see [`error_page`]).
#[derive(Debug)]
pub(crate) enum PortalError {
    /// No session, or it expired.
    NoSession,
    /// A form without this session's CSRF token.
    Forged,
    NotFound(&'static str),
    /// Any other answer, with its status.
    Page {
        status: StatusCode,
        title: &'static str,
        text: String,
    },
}

pub(crate) type PortalResult<T> = Result<T, PortalError>;

impl From<ApiError> for PortalError {
    fn from(e: ApiError) -> Self {
        if e.status == StatusCode::NOT_FOUND {
            return Self::NotFound("page");
        }
        let title = match e.status {
            StatusCode::CONFLICT => "Not possible now",
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "Not accepted",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Something went wrong",
        };
        Self::Page {
            status: e.status,
            title,
            text: e.message,
        }
    }
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// An error's page, before its frame is known: [`error_page`] renders it on the way out.
#[derive(Clone, Debug)]
struct ErrorNote {
    title: &'static str,
    text: String,
    /// Whether a link back to the portal's home makes sense.
    in_session: bool,
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let (status, note) = match self {
            Self::NoSession => (
                StatusCode::UNAUTHORIZED,
                ErrorNote {
                    title: "Your session has ended",
                    text: "Portal sessions last a limited time. Open the portal again from \
                           your provider's dashboard."
                        .to_owned(),
                    in_session: false,
                },
            ),
            Self::Forged => (
                StatusCode::FORBIDDEN,
                ErrorNote {
                    title: "This form cannot be accepted",
                    text: "It was not sent from this portal session (its security token is \
                           missing or wrong), so nothing was changed. Go back, reload the \
                           page and try again."
                        .to_owned(),
                    in_session: true,
                },
            ),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                ErrorNote {
                    title: "Not found",
                    text: format!("There is no such {what} in this account."),
                    in_session: true,
                },
            ),
            Self::Page {
                status,
                title,
                text,
            } => (
                status,
                ErrorNote {
                    title,
                    text,
                    in_session: true,
                },
            ),
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(note);
        response
    }
}

#[derive(Template)]
#[template(path = "portal/message.html")]
pub(crate) struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub text: String,
    pub home_link: bool,
}

/// Renders the page of an answer that carries an [`ErrorNote`]; other answers pass.
pub(super) fn error_page(state: &AppState, response: Response) -> Response {
    let Some(note) = response.extensions().get::<ErrorNote>().cloned() else {
        return response;
    };
    let status = response.status();
    let page = MessagePage {
        chrome: Chrome::outside_session(state, note.title.to_owned()),
        heading: note.title.to_owned(),
        text: note.text,
        home_link: note.in_session,
    };
    let (mut parts, _) = response.into_parts();
    let rendered = render(&page);
    let (rendered_parts, body) = rendered.into_parts();
    parts.headers.extend(rendered_parts.headers);
    parts.status = status;
    Response::from_parts(parts, body)
}

/// A page outside a session (an opened link that cannot open, say), with its status.
pub(crate) fn message(
    state: &AppState,
    status: StatusCode,
    heading: &str,
    text: String,
) -> Response {
    let page = MessagePage {
        chrome: Chrome::outside_session(state, heading.to_owned()),
        heading: heading.to_owned(),
        text,
        home_link: false,
    };
    (status, render(&page)).into_response()
}
