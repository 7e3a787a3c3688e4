//! API keys: an account makes, lists and revokes its own (`/v1/me/keys`), the operator any
//! account's (`/v1/accounts/{id}/keys`). A key is shown once, when made; afterwards only its id,
//! label and first characters. Revoking takes effect on the next request on every node, as each
//! request looks its key up in the store.

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, ApiQuery, OptionalJson, hash_key};
use super::{AppState, ListBody, page_request};
use crate::domain::{AccountId, ApiKeyId, Timestamp};
use crate::store::{ApiKeyInfo, NewApiKey};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/keys", get(list_own).post(create_own))
        .route("/v1/me/keys/{key_id}", delete(revoke_own))
        .route("/v1/accounts/{id}/keys", get(list_any).post(create_any))
        .route("/v1/accounts/{id}/keys/{key_id}", delete(revoke_any))
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
#[derive(Serialize)]
pub struct KeyView {
    id: ApiKeyId,
    account: AccountId,
    name: String,
    /// The key's first characters; null for keys made before they were kept.
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
#[derive(Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    key: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    name: String,
    /// With the admin token on `/v1/me/keys`: the account.
    account: Option<String>,
}

#[derive(Deserialize)]
struct ListParams {
    account: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct AccountParam {
    account: Option<String>,
}

async fn create_own(
    State(state): State<AppState>,
    actor: Actor,
    OptionalJson(body): OptionalJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let account = actor.account(&state, body.account.as_deref()).await?;
    create(&state, account, body.name).await
}

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
    let name = name.trim().to_owned();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("name must be at most {MAX_NAME} printable characters"),
        ));
    }
    let (key, stored) = new_key(&account, name, Timestamp::now());
    state.store.create_api_key(&stored).await?;
    let view = KeyView {
        id: stored.id,
        account: stored.account_id,
        name: stored.name,
        prefix: Some(stored.prefix),
        created_at: stored.created_at,
        last_used_at: None,
        revoked_at: None,
    };
    Ok((StatusCode::CREATED, Json(CreatedKey { view, key })))
}

async fn list_own(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<KeyView>>> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    list(&state, &account, &params).await
}

async fn list_any(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<ListBody<KeyView>>> {
    let account = admins_account(&state, &actor, &id).await?;
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

async fn revoke_own(
    State(state): State<AppState>,
    actor: Actor,
    Path(key_id): Path<String>,
    ApiQuery(params): ApiQuery<AccountParam>,
) -> ApiResult<StatusCode> {
    let account = actor.account(&state, params.account.as_deref()).await?;
    revoke(&state, &account, &key_id).await
}

async fn revoke_any(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let account = admins_account(&state, &actor, &id).await?;
    revoke(&state, &account, &key_id).await
}

/// Revokes a key of the account; revoking it again changes nothing.
async fn revoke(state: &AppState, account: &AccountId, key_id: &str) -> ApiResult<StatusCode> {
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
