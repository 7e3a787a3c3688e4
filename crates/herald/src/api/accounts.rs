//! Accounts (admin): each is created with its first API key, shown once, and erased with
//! everything of it (`crate::erasure`).

use super::error::ErrorBody;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use super::{AppState, ListBody, PageParams};
use crate::domain::{Account, AccountId, Timestamp};
use crate::store::ErasureMark;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, erase))
}

const MAX_NAME: usize = 200;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    /// 1 to 200 printable characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200, example = "Acme")]
    name: String,
}

/// A new account with its first API key.
#[derive(Serialize, ToSchema)]
#[schema(as = AccountCreated)]
struct Created {
    id: AccountId,
    name: String,
    /// The account's API key (`hk_…`): shown only here, stored only as a hash.
    #[schema(example = "hk_3q2-7wJk9yX0aZbC4dEfGhIjKlMnOpQrStUvWxYz012")]
    api_key: String,
    created_at: Timestamp,
}

/// Create an account
///
/// The answer holds the account's first API key, shown this once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", operation_id = "create_account",
    security(("admin_token" = [])),
    request_body = CreateAccount,
    responses(
        (status = 201, description = "Created, with its API key", body = Created),
        (status = 422, description = "The name is empty, too long or holds control characters",
            body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    actor.require_admin()?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    let now = Timestamp::now();
    let account = Account {
        id: AccountId::generate(),
        name: name.to_owned(),
        created_at: now,
    };
    let (api_key, key) = super::keys::new_key(&account.id, "first key".to_owned(), now);
    state.store.create_account(&account, &key).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id: account.id,
            name: account.name,
            api_key,
            created_at: now,
        }),
    ))
}

/// List accounts
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", operation_id = "list_accounts",
    security(("admin_token" = [])),
    params(PageParams),
    responses((status = 200, description = "A page of accounts, newest first",
        body = ListBody<Account>)))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListBody<Account>>> {
    actor.require_admin()?;
    let page = page.to_request(|c| AccountId::parse(c).is_some())?;
    Ok(Json(ListBody::from_page(
        state.store.list_accounts(&page).await?,
        |a| a,
    )))
}

/// Get an account
///
/// An API key sees its own account only; any other id is 404.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", operation_id = "get_account",
    security(("admin_token" = []), ("api_key" = [])),
    params(("id" = AccountId, Path, description = "The account's id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 404, description = "No such account, or not the key's own", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<Account>> {
    let id = AccountId::parse(&id).ok_or_else(|| ApiError::not_found("account"))?;
    if let Actor::Account(own) = &actor
        && *own != id
    {
        return Err(ApiError::not_found("account"));
    }
    state
        .store
        .get_account(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("account"))
}

/// An account being erased.
#[derive(Serialize, ToSchema)]
#[schema(as = AccountErasing)]
struct Erasing {
    id: AccountId,
    state: ErasingState,
}

/// What an erased account is now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ErasingState {
    /// Gone for the API; its rows are being deleted in the background.
    Erasing,
}

/// Erase an account
///
/// Removes the account and everything of it: its API keys, webhooks (subscriptions, its
/// callback URL, jobs' own, `herald listen` streams), events, deliveries and their attempts,
/// jobs, idempotency keys, endpoint figures and its signing secret. At once, and on every node:
/// the account is not found, its keys are refused (401), publishing to it is refused (404), and
/// none of its pending deliveries is sent (attempts under way are cut off). Its rows are deleted
/// in small batches in the background, so other accounts are not slowed; an erasure cut short
/// by a restart goes on by itself. The call is idempotent: while the erasure goes on, another
/// `DELETE` answers 202 again; once the account's rows are gone, 404.
#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", operation_id = "erase_account",
    security(("admin_token" = [])),
    params(("id" = AccountId, Path, description = "The account's id")),
    responses(
        (status = 202, description = "Marked: the account is gone for the API, and its rows \
            are being deleted", body = Erasing),
        (status = 404, description = "No such account (or its erasure is finished)",
            body = ErrorBody),
    ))]
async fn erase(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Erasing>)> {
    actor.require_admin()?;
    let id = AccountId::parse(&id).ok_or_else(|| ApiError::not_found("account"))?;
    // This node stops attempting the account's deliveries before the store marks it, so none
    // starts here once the mark is committed (other nodes learn of it from the store).
    let new = state.erasures.mark(&id);
    let marked = state.store.begin_erasure(&id, Timestamp::now()).await;
    match marked {
        Ok(mark @ (ErasureMark::Marked | ErasureMark::AlreadyMarked)) => {
            if mark == ErasureMark::Marked {
                tracing::info!(account_id = %id, "account marked for erasure");
            }
            state.erasures.wake();
            Ok((
                StatusCode::ACCEPTED,
                Json(Erasing {
                    id,
                    state: ErasingState::Erasing,
                }),
            ))
        }
        other => {
            // Not marked after all (unless it was marked here before: an erased account).
            if new {
                state.erasures.unmark(&id);
            }
            Err(other
                .err()
                .map_or_else(|| ApiError::not_found("account"), ApiError::from))
        }
    }
}
