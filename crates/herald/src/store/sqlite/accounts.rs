//! Accounts and their API keys on SQLite.

use super::{Commit, SqliteStore, push_page};
use crate::domain::{Account, AccountId, ApiKeyId, SigningSecret, Timestamp};
use crate::store::rows::{
    ACCOUNT_COLUMNS, API_KEY_COLUMNS, AccountColumns, ApiKeyColumns, corrupt, paginate,
};
use crate::store::seal::Column;
use crate::store::{Accounts, ApiKeyInfo, FoundKey, NewApiKey, Page, PageRequest, StoreResult};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};

#[async_trait]
impl Accounts for SqliteStore {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()> {
        let (account, key) = (account.clone(), key.clone());
        self.write_alone(Commit::Durable, move |tx| {
            tx.prepare_cached("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)")?
                .execute((
                    account.id.as_str(),
                    &account.name,
                    account.created_at.millis(),
                ))?;
            insert_key(tx, &key)?;
            Ok(())
        })
        .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let row: Option<AccountColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ? AND erasing_since IS NULL"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(AccountColumns::into_account))
    }

    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
        // Neither the hidden operator account (no customer: see `store/operator.rs`) nor an
        // account being erased.
        let mut q = QueryBuilder::new(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id <> '{}' AND erasing_since IS NULL",
            crate::store::operator::ACCOUNT
        ));
        push_page(&mut q, "id", page);
        let rows: Vec<AccountColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows.into_iter().map(AccountColumns::into_account).collect();
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<FoundKey>> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.key_hash FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.key_hash = ? AND k.revoked_at IS NULL AND a.erasing_since IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| FoundKey {
            id: ApiKeyId::from_trusted(r.get("id")),
            account_id: AccountId::from_trusted(r.get("account_id")),
            hash: r.get("key_hash"),
        }))
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.write_alone(Commit::Durable, move |tx| insert_key(tx, &key))
            .await
    }

    async fn list_api_keys(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKeyInfo>> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = "
        ));
        q.push_bind(account.as_str().to_owned());
        push_page(&mut q, "id", page);
        let rows: Vec<ApiKeyColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows.into_iter().map(ApiKeyColumns::into_info).collect();
        Ok(paginate(items, page.limit, |k| k.id.to_string()))
    }

    async fn revoke_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
        now: Timestamp,
    ) -> StoreResult<Option<ApiKeyInfo>> {
        let (account, id) = (account.to_string(), id.to_string());
        let row = self
            .write_alone(Commit::Durable, move |tx| {
                tx.prepare_cached(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2 AND account_id = ?3",
                )?
                .execute((now.millis(), &id, &account))?;
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND account_id = ?2"
                ))?;
                let mut rows = stmt.query((&id, &account))?;
                Ok(match rows.next()? {
                    Some(row) => Some(ApiKeyColumns::from_rusqlite(row)?),
                    None => None,
                })
            })
            .await?;
        Ok(row.map(ApiKeyColumns::into_info))
    }

    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<()> {
        let id = id.to_string();
        self.write_alone(Commit::Relaxed, move |tx| {
            tx.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )?
            .execute((at.millis(), &id))?;
            Ok(())
        })
        .await
    }

    async fn account_signing_secret(&self, account: &AccountId) -> StoreResult<SigningSecret> {
        let fresh = SigningSecret::generate();
        let sealed = self.sealer.seal(
            Column::AccountSigningSecret,
            account.as_str(),
            fresh.expose(),
        );
        let id = account.to_string();
        let stored: String = self
            .write_alone(Commit::Durable, move |tx| {
                let stored = tx
                    .prepare_cached(
                        "UPDATE accounts SET signing_secret = COALESCE(signing_secret, ?1) WHERE id = ?2 RETURNING signing_secret",
                    )?
                    .query_row((&sealed, &id), |r| r.get(0))?;
                Ok(stored)
            })
            .await?;
        let text = self
            .sealer
            .open(Column::AccountSigningSecret, account.as_str(), &stored)?;
        SigningSecret::parse(&text).map_err(|e| corrupt("account signing secret", e))
    }

    async fn begin_erasure(
        &self,
        id: &AccountId,
        now: Timestamp,
    ) -> StoreResult<crate::store::ErasureMark> {
        self.mark_for_erasure(id, now).await
    }
}

fn insert_key(tx: &rusqlite::Connection, key: &NewApiKey) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO api_keys (id, account_id, key_hash, prefix, name, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute((
        key.id.as_str(),
        key.account_id.as_str(),
        &key.hash,
        &key.prefix,
        &key.name,
        key.created_at.millis(),
    ))?;
    Ok(())
}
