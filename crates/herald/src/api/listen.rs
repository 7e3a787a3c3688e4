//! `GET /v1/listen`: the stream of `herald listen --forward-to` (a WebSocket), under an account's
//! API key (or the admin token naming `?account=`).
//!
//! Opening a stream makes an ephemeral listener webhook of the account, subscribed to `?events=`
//! (comma-separated, default `*`) with a fresh signing secret, held by this node under a lease
//! (`listeners.lease`); `?resume=wh_…` takes up the one a broken stream left instead, with its
//! secret. Its deliveries come down the stream (see [`crate::dispatch::listeners`]); the server
//! never connects to the customer, so no `--dev` and no URL check are involved. Everything is
//! checked, and the webhook written, before the upgrade: a refused stream is a JSON error like
//! any other, and writes nothing.

mod stream;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery};
use super::webhooks::parse_filters;
use crate::domain::{
    EventFilter, SigningMode, SigningSecret, Timestamp, Webhook, WebhookId, WebhookKind,
    WebhookOrdering, WebhookStatus, WebhookUrl,
};
use crate::listen::protocol::Ready;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest message the CLI may send: a result carries at most 4 KiB of the local answer (a few
/// times that once escaped as JSON) and an error message.
const MAX_MESSAGE: usize = 256 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(listen))
}

/// The query of `GET /v1/listen`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListenParams {
    /// With the admin token: the account to listen for (required). With an API key: leave out,
    /// or the key's own account.
    pub account: Option<String>,
    /// Event types or patterns, comma-separated; `*` when left out. Not with `resume`.
    #[param(example = "tts.*,job.completed")]
    pub events: Option<String>,
    /// A listener webhook whose stream broke, to take up again (with its events and secret).
    #[param(value_type = Option<WebhookId>)]
    pub resume: Option<String>,
}

/// Listen for deliveries (WebSocket)
///
/// The stream of `herald listen --forward-to`: a WebSocket (send `Connection: Upgrade`,
/// `Upgrade: websocket`). Opening it makes an ephemeral listener webhook of the account,
/// subscribed to `events`, with a fresh signing secret (or, with `resume`, takes up the one a
/// broken stream left); the server's first message names both, and each of the webhook's
/// deliveries then comes down the stream for the CLI to forward and answer. A listener webhook
/// cannot be changed, only deleted, which ends its stream; it is deleted when the CLI closes the
/// stream. Everything is checked before the upgrade: a refused stream answers a JSON error and
/// writes nothing.
#[utoipa::path(get, path = "/v1/listen", tag = "webhooks", operation_id = "listen",
    security(("admin_token" = []), ("api_key" = [])),
    params(ListenParams),
    responses(
        (status = 101, description = "Switching to the WebSocket stream"),
        (status = 404, description = "The `resume` webhook is no listener of the account, or the \
            named account does not exist (or is not the key's)", body = ErrorBody),
        (status = 409, description = "This node cannot hold the stream: the account holds \
            `listeners.max_per_account` streams on it already (`too_many_listeners`), or it sends \
            no deliveries (`delivery.enabled = false`: `delivery_disabled`)", body = ErrorBody),
        (status = 422, description = "An event type is not in the catalog, `events` came with \
            `resume`, or the admin token named no account", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request (`upgrade_required`)",
            body = ErrorBody),
    ))]
async fn listen(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(params): ApiQuery<ListenParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    // The query first, so a bad one is a 422 (or a 404) whatever else is wrong.
    let resume = match &params.resume {
        Some(id) => {
            if params.events.is_some() {
                return Err(ApiError::invalid(
                    "events",
                    "a resumed listener keeps its events; leave events out with resume",
                ));
            }
            Some(WebhookId::parse(id).ok_or_else(|| ApiError::not_found("listener"))?)
        }
        None => None,
    };
    let events = match resume {
        Some(_) => Vec::new(),
        None => parse_events(&state, params.events.as_deref())?,
    };
    // A stream's deliveries are claimed only by the node holding it: on a node that sends none
    // they would wait until the lease ran out. A 409 as for `too_many_listeners`: this node
    // cannot hold the stream, another may.
    if !state.settings.delivery.enabled {
        return Err(ApiError::conflict(
            "delivery_disabled",
            "this node sends no deliveries (delivery.enabled = false); open the stream on one that does",
        ));
    }
    let upgrade = upgrade.map_err(|_| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /v1/listen is a WebSocket stream; open it with `herald listen --forward-to`",
        )
    })?;
    let settings = &state.settings.listeners;
    if state.listeners.streams_of(&account) >= settings.max_per_account {
        return Err(ApiError::conflict(
            "too_many_listeners",
            format!(
                "this account holds {} `herald listen` streams on this node already, the most it may",
                settings.max_per_account
            ),
        ));
    }
    let node = state.listeners.node().to_owned();
    let now = Timestamp::now();
    let until = now.plus(settings.lease.0);
    let (webhook, resumed) = match resume {
        Some(id) => {
            let webhook = state
                .store
                .resume_listener(&account, &id, &node, until, now)
                .await?
                .ok_or_else(|| ApiError::not_found("listener"))?;
            // What waited for a listener is due now.
            state.waker.wake();
            (webhook, true)
        }
        None => {
            let webhook = listener_webhook(&state, account.clone(), events)?;
            state.store.open_listener(&webhook, &node, until).await?;
            (webhook, false)
        }
    };
    tracing::info!(webhook_id = %webhook.id, account_id = %account, resumed, "listener stream opening");
    let ready = Ready {
        webhook_id: webhook.id.to_string(),
        secret: webhook.secret.expose().to_owned(),
        events: webhook.events.iter().map(EventFilter::to_pattern).collect(),
        resumed,
        lease_seconds: settings.lease.0.as_secs(),
    };
    let handle = state
        .listeners
        .register(account.clone(), webhook.id.clone());
    let store = state.store.clone();
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| stream::serve(socket, handle, ready, store, account)))
}

/// `?events=a,b.*`: each checked against the catalog, as a webhook's `events` are.
fn parse_events(state: &AppState, events: Option<&str>) -> ApiResult<Vec<EventFilter>> {
    let list: Vec<String> = events
        .unwrap_or("*")
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    parse_filters(state, &list)
}

/// A new listener webhook of `account`. Its body format and retry policy are those of the
/// subscription model, so a delivery looks as it would to a subscription; it signs the Standard
/// Webhooks way, with a fresh HMAC secret (the one the CLI prints). Its URL is no address: the
/// dispatcher sends its deliveries down the stream, by its kind.
fn listener_webhook(
    state: &AppState,
    account: crate::domain::AccountId,
    events: Vec<EventFilter>,
) -> ApiResult<Webhook> {
    let model = &state.settings.registration.subscription;
    let retry = state
        .settings
        .model_retry(model)
        .map_err(|e| ApiError::invalid("retry", e))?;
    let id = WebhookId::generate();
    let now = Timestamp::now();
    Ok(Webhook {
        url: WebhookUrl::from_trusted(format!("listen:{id}")),
        id,
        account_id: account,
        events,
        secret: SigningSecret::generate(),
        description: "herald listen --forward-to".to_owned(),
        retry,
        status: WebhookStatus::Active,
        created_at: now,
        updated_at: now,
        kind: WebhookKind::Listener,
        job_id: None,
        signing: SigningMode::Standard,
        format: model.format,
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        rate_limit: None,
        ordering: WebhookOrdering::None,
        held: false,
    })
}
