//! API keys: an account makes, lists and revokes its own (`/v1/me/keys`), the operator any
//! account's (`/v1/accounts/{id}/keys`). A key is shown once, when made; afterwards only its id,
//! label and first characters. Revoking takes effect on the next request on every node, as each
//! request looks its key up in the store.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Actor, ApiQuery, OptionalJson, hash_key};
use super::{AppState, ListBody, page_request};
use crate::domain::{AccountId, ApiKeyId, Timestamp};
use crate::store::{ApiKeyInfo, NewApiKey};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_own, create_own))
        .routes(routes!(revoke_own))
        .routes(routes!(list_any, create_any))
        .routes(routes!(revoke_any))
}

const MAX_NAME: usize = 100;
/// Characters of a key kept to tell it apart: `hk_` and six of its 43 random ones.
const PREFIX_LEN: usize = 9;

/// A new key for `account`: the key, shown once, and what the store keeps of it.
pub fn new_key(account: &AccountId, name: String, now: Timestamp) -> (String, NewApiKey) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("hk_{}", URL_SAFE_NO_PAD.encode(bytes));
    let stored = NewApiKey {
        id: ApiKeyId::generate(),
        account_id: account.clone(),
        hash: hash_key(&key),
        prefix: key[..PREFIX_LEN].to_owned(),
        name,
        created_at: now,
    };
    (key, stored)
}

/// A key as lists show it.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: ApiKeyId,
    account: AccountId,
    /// The label given when the key was made (may be empty).
    name: String,
    /// The key's first characters; null for keys made before they were kept.
    #[schema(example = "hk_3q2-7w")]
    prefix: Option<String>,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
}

impl From<ApiKeyInfo> for KeyView {
    fn from(k: ApiKeyInfo) -> Self {
        Self {
            id: k.id,
            account: k.account_id,
            name: k.name,
            prefix: Some(k.prefix).filter(|p| !p.is_empty()),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just made: the only answer that holds the key itself.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The API key (`hk_…`): shown only here, stored only as a hash.
    #[schema(example = "hk_3q2-7wJk9yX0aZbC4dEfGhIjKlMnOpQrStUvWxYz012")]
    key: String,
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// A label, up to 100 printable characters (default empty).
    #[serde(default)]
    #[schema(max_length = 100, example = "ci")]
    name: String,
    /// With the admin token on `/v1/me/keys`: the account. Not accepted on
    /// `/v1/accounts/{id}/keys`, where the path names it.
    #[schema(value_type = Option<AccountId>)]
    account: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// With the admin token on `/v1/me/keys`: the account (required). With an API key: leave
    /// out, or the key's own account.
    account: Option<String>,
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// `?cursor=&limit=` of `/v1/accounts/{id}/keys`, where the path names the account.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageOnly {
    /// The `next_cursor` of the previous page; leave out for the first (newest) page.
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountParam {
    /// With the admin token: the account (required). With an API key: leave out, or the key's
    /// own account.
    account: Option<String>,
}

/// Make an API key
///
/// A new key for the caller's account (with the admin token: the account named in the body).
/// The answer is the only one that holds the key.
#[utoipa::path(post, path = "/v1/me/keys", tag = "keys", operation_id = "create_own_key",
    security(("admin_token" = []), ("api_key" = [])),
    request_body(content = Option<CreateKey>, description = "Optional"),
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedKey),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
        (status = 422, description = "The name is too long or holds control characters, or the \
            admin token named no account", body = ErrorBody),
    ))]
async fn create_own(
    State(state): State<AppState>,
    actor: Actor,
    OptionalJson(body): OptionalJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    create(&state, account, body.name).await
}

/// Make an API key for an account
#[utoipa::path(post, path = "/v1/accounts/{id}/keys", tag = "keys",
    operation_id = "create_account_key",
    security(("admin_token" = [])),
    params(("id" = AccountId, Path, description = "The account's id")),
    request_body(content = Option<CreateKey>, description = "Optional; `account` is not accepted"),
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedKey),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "The name is too long or holds control characters, or the \
            body names an account", body = ErrorBody),
    ))]
async fn create_any(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let account = admins_account(&state, &actor, &id).await?;
    if body.account.is_some() {
        return Err(ApiError::invalid(
            "account",
            "the account is the one in the path",
        ));
    }
    create(&state, account, body.name).await
}

async fn create(
    state: &AppState,
    account: AccountId,
    name: String,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let (key, info) = create_key(state, account, name).await?;
    let view = KeyView::from(info);
    Ok((StatusCode::CREATED, Json(CreatedKey { view, key })))
}

/// Makes a key for `account` labelled `name` (checked): the key, to show once, and what lists
/// show of it. The API's and the portal's one path.
pub(crate) async fn create_key(
    state: &AppState,
    account: AccountId,
    name: String,
) -> ApiResult<(String, ApiKeyInfo)> {
    let name = name.trim().to_owned();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("name must be at most {MAX_NAME} printable characters"),
        ));
    }
    let (key, stored) = new_key(&account, name, Timestamp::now());
    state.store.create_api_key(&stored).await?;
    let info = ApiKeyInfo {
        id: stored.id,
        account_id: stored.account_id,
        name: stored.name,
        prefix: stored.prefix,
        created_at: stored.created_at,
        last_used_at: None,
        revoked_at: None,
    };
    Ok((key, info))
}

/// List API keys
///
/// The account's keys, revoked ones included, newest first; never the keys themselves.
#[utoipa::path(get, path = "/v1/me/keys", tag = "keys", operation_id = "list_own_keys",
    security(("admin_token" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of keys, newest first", body = ListBody<KeyView>),
        (status = 404, description = "The named account does not exist (or is not the key's)",
            body = ErrorBody),
    ))]
async fn list_own(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<KeyView>>> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    list(&state, &account, &params).await
}

/// List an account's API keys
#[utoipa::path(get, path = "/v1/accounts/{id}/keys", tag = "keys",
    operation_id = "list_account_keys",
    security(("admin_token" = [])),
    params(("id" = AccountId, Path, description = "The account's id"), PageOnly),
    responses(
        (status = 200, description = "A page of keys, newest first", body = ListBody<KeyView>),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn list_any(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageOnly>,
) -> ApiResult<Json<ListBody<KeyView>>> {
    let account = admins_account(&state, &actor, &id).await?;
    let params = ListParams {
        account: None,
        cursor: params.cursor,
        limit: params.limit,
    };
    list(&state, &account, &params).await
}

async fn list(
    state: &AppState,
    account: &AccountId,
    params: &ListParams,
) -> ApiResult<Json<ListBody<KeyView>>> {
    let page = page_request(params.cursor.as_deref(), params.limit, |c| {
        ApiKeyId::parse(c).is_some()
    })?;
    let keys = state.store.list_api_keys(account, &page).await?;
    Ok(Json(ListBody::from_page(keys, KeyView::from)))
}

/// Revoke an API key
///
/// Takes effect on the next request, on every node. Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/v1/me/keys/{key_id}", tag = "keys", operation_id = "revoke_own_key",
    security(("admin_token" = []), ("api_key" = [])),
    params(("key_id" = ApiKeyId, Path, description = "The key's id"), AccountParam),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key in the account, or the named account does not \
            exist (or is not the key's)", body = ErrorBody),
    ))]
async fn revoke_own(
    State(state): State<AppState>,
    actor: Actor,
    Path(key_id): Path<String>,
    ApiQuery(params): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    revoke(&state, &account, &key_id).await
}

/// Revoke an account's API key
#[utoipa::path(delete, path = "/v1/accounts/{id}/keys/{key_id}", tag = "keys",
    operation_id = "revoke_account_key",
    security(("admin_token" = [])),
    params(("id" = AccountId, Path, description = "The account's id"),
        ("key_id" = ApiKeyId, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such account, or no such key in it", body = ErrorBody),
    ))]
async fn revoke_any(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let account = admins_account(&state, &actor, &id).await?;
    revoke(&state, &account, &key_id).await
}

/// Revokes a key of the account; revoking it again changes nothing.
pub(crate) async fn revoke(
    state: &AppState,
    account: &AccountId,
    key_id: &str,
) -> ApiResult<StatusCode> {
    let id = ApiKeyId::parse(key_id).ok_or_else(|| ApiError::not_found("key"))?;
    match state
        .store
        .revoke_api_key(account, &id, Timestamp::now())
        .await?
    {
        Some(_) => {
            tracing::info!(account_id = %account, key_id = %id, "API key revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found("key")),
    }
}

/// The account in an `/v1/accounts/{id}/keys` path, for the operator only.
async fn admins_account(state: &AppState, actor: &Actor, id: &str) -> ApiResult<AccountId> {
    actor.require_admin()?;
    actor.account(state, Some(id)).await
}

/// When each key was last noted as used on this node, so a key's `last_used_at` is written at
/// most once a minute per node rather than on every request.
#[derive(Default)]
pub struct KeyUse(Mutex<HashMap<ApiKeyId, Instant>>);

impl KeyUse {
    const EVERY: Duration = Duration::from_secs(60);
    /// Most keys remembered; past that the map starts again (a miss costs one write).
    const MAX: usize = 100_000;

    /// Notes a use of `key`; true when it is time to write it down.
    pub fn due(&self, key: &ApiKeyId, now: Instant) -> bool {
        let mut seen = self.0.lock().expect("key use lock");
        if let Some(last) = seen.get(key)
            && now.duration_since(*last) < Self::EVERY
        {
            return false;
        }
        if seen.len() >= Self::MAX {
            seen.clear();
        }
        seen.insert(key.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_use_is_written_once_a_minute() {
        let uses = KeyUse::default();
        let (a, b) = (ApiKeyId::generate(), ApiKeyId::generate());
        let t0 = Instant::now();
        assert!(uses.due(&a, t0));
        assert!(!uses.due(&a, t0 + Duration::from_secs(59)));
        assert!(uses.due(&b, t0 + Duration::from_secs(1)));
        assert!(uses.due(&a, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn a_new_key_keeps_only_its_hash_and_first_characters() {
        let account = AccountId::generate();
        let (key, stored) = new_key(&account, "ci".into(), Timestamp::now());
        assert!(key.starts_with("hk_") && key.len() == 46, "{key}");
        assert_eq!(stored.prefix, key[..9]);
        assert_eq!(stored.hash, hash_key(&key));
        assert!(!stored.hash.contains(&key[3..]));
    }
}
