//! Accounts (admin): each is created with its first API key, shown once.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiJson, ApiQuery};
use super::{AppState, ListBody, PageParams};
use crate::domain::{Account, AccountId, Timestamp};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(create).get(list))
        .route("/v1/accounts/{id}", get(show))
}

const MAX_NAME: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
}

#[derive(Serialize)]
struct Created {
    id: AccountId,
    name: String,
    api_key: String,
    created_at: Timestamp,
}

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
