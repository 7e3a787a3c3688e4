//! The HTTP API: one file per resource, one error type, JSON everywhere. The customer portal's
//! pages (`crate::portal`) are served beside it and call its functions.

mod accounts;
pub(crate) mod deliveries;
pub mod error;
pub(crate) mod events;
pub mod extract;
mod jobs;
pub mod keys;
mod listen;
pub(crate) mod me;
pub(crate) mod meta;
pub mod openapi;
mod portal_sessions;
pub mod rate_limit;
pub(crate) mod recover;
mod reference;
mod replay;
pub(crate) mod stats;
mod tasks;
pub mod test_send;
pub(crate) mod webhook_flow;
pub(crate) mod webhook_secrets;
mod webhook_view;
pub(crate) mod webhooks;

use crate::config::Settings;
use crate::dispatch::Waker;
use crate::domain::{Catalog, RetryPolicy};
use crate::erasure::Erasures;
use crate::store::{ApiStore, Page, PageRequest};
use crate::telemetry::Metrics;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use error::ApiError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ApiStore>,
    pub settings: Arc<Settings>,
    pub catalog: Arc<Catalog>,
    /// The catalog's schemas, compiled once at start.
    pub schemas: Arc<crate::schemas::EventSchemas>,
    pub default_retry: Arc<RetryPolicy>,
    pub admin_token: Arc<str>,
    pub waker: Waker,
    /// Wakes this node's task runner for a task made here.
    pub tasks: crate::tasks::TaskWaker,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<rate_limit::RateLimiter>,
    /// The `herald listen` streams this node holds.
    pub listeners: Arc<crate::dispatch::listeners::ListenerHub>,
    /// Accounts known to exist, so publishing under the admin token need not read the account
    /// on every request; an account marked for erasure is forgotten ([`Erasures::mark`]).
    pub known_accounts: Arc<KnownAccounts>,
    /// The accounts this node knows to be erased or being erased.
    pub erasures: Arc<Erasures>,
    /// When this node last wrote down each key's use.
    pub key_use: Arc<keys::KeyUse>,
}

impl AppState {
    /// Counts `n` deliveries made outside publishing (jobs, test sends) and wakes the dispatcher
    /// for them. Publishing counts its own, as some of its deliveries skip the wake.
    fn deliveries_created(&self, n: u32) {
        if n > 0 {
            self.metrics.deliveries_created.increment(u64::from(n));
            self.waker.wake();
        }
    }
}

/// A bounded set of account ids seen to exist.
#[derive(Default)]
pub struct KnownAccounts(std::sync::Mutex<std::collections::HashSet<crate::domain::AccountId>>);

impl KnownAccounts {
    /// Most ids remembered; past that the set starts again (misses only cost a read).
    const MAX: usize = 100_000;

    pub fn contains(&self, id: &crate::domain::AccountId) -> bool {
        self.0.lock().expect("known accounts lock").contains(id)
    }

    pub fn forget(&self, id: &crate::domain::AccountId) {
        self.0.lock().expect("known accounts lock").remove(id);
    }

    pub fn insert(&self, id: crate::domain::AccountId) {
        let mut set = self.0.lock().expect("known accounts lock");
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert(id);
    }
}

/// Every API route with its OpenAPI description: each resource file registers its handlers
/// with `routes!`, which takes the path and the documentation from the handler's
/// `#[utoipa::path]`, so a route cannot be served without being described (see
/// [`openapi`] for how to document a new one).
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(meta::routes())
        .merge(accounts::routes())
        .merge(webhooks::routes())
        .merge(webhook_secrets::routes())
        .merge(events::routes())
        .merge(deliveries::routes())
        .merge(jobs::routes())
        .merge(me::routes())
        .merge(keys::routes())
        .merge(portal_sessions::routes())
        .merge(stats::routes())
        .merge(replay::routes())
        .merge(recover::routes())
        .merge(tasks::routes())
        .merge(listen::routes())
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit;
    let (routes, paths) = documented_routes().split_for_parts();
    // Built once, at start: the catalog and the delivery contract come from the settings.
    let document = openapi::complete(paths, &state.settings, &state.catalog);
    routes
        .merge(reference::routes(document))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(error::json_error_answers))
        .with_state(state.clone())
        // Its HTML pages keep their own answers (the layer above would make them JSON).
        .merge(crate::portal::router(state))
}

/// `?cursor=&limit=` on every list. (Lists with more parameters repeat these two rather than
/// flatten this: serde_urlencoded cannot read numbers through `#[serde(flatten)]`.)
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

impl PageParams {
    pub fn to_request(&self, valid: impl Fn(&str) -> bool) -> Result<PageRequest, ApiError> {
        page_request(self.cursor.as_deref(), self.limit, valid)
    }
}

/// Checks the cursor is an id of the listed kind (`valid`) and the limit is in range.
pub fn page_request(
    cursor: Option<&str>,
    limit: Option<u32>,
    valid: impl Fn(&str) -> bool,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if let Some(c) = cursor
        && !valid(c)
    {
        return Err(ApiError::invalid(
            "cursor",
            "cursor is not one this list returned",
        ));
    }
    Ok(PageRequest {
        after: cursor.map(str::to_owned),
        limit,
    })
}

/// Every list answers `{"data": [...], "next_cursor": "…" | null}`, newest first.
#[derive(Serialize, ToSchema)]
pub struct ListBody<T> {
    pub data: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    pub fn from_page<U>(page: Page<U>, view: impl Fn(U) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
