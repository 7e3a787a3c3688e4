//! Accounts and their API keys on PostgreSQL.

use super::{PgStore, push_page};
use crate::domain::{Account, AccountId, ApiKeyId, SigningSecret, Timestamp};
use crate::store::rows::{
    ACCOUNT_COLUMNS, API_KEY_COLUMNS, AccountColumns, ApiKeyColumns, corrupt, paginate,
};
use crate::store::seal::Column;
use crate::store::{Accounts, ApiKeyInfo, FoundKey, NewApiKey, Page, PageRequest, StoreResult};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};

#[async_trait]
impl Accounts for PgStore {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(&account.name)
            .bind(account.created_at.millis())
            .execute(&mut *tx)
            .await?;
        insert_key(&mut *tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let row: Option<AccountColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 AND erasing_since IS NULL"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
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
        let rows: Vec<AccountColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows.into_iter().map(AccountColumns::into_account).collect();
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<FoundKey>> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.key_hash FROM api_keys k JOIN accounts a ON a.id = k.account_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.erasing_since IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| FoundKey {
            id: ApiKeyId::from_trusted(r.get("id")),
            account_id: AccountId::from_trusted(r.get("account_id")),
            hash: r.get("key_hash"),
        }))
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        insert_key(&self.pool, key).await
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
        let rows: Vec<ApiKeyColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows.into_iter().map(ApiKeyColumns::into_info).collect();
        Ok(paginate(items, page.limit, |k| k.id.to_string()))
    }

    async fn revoke_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
        now: Timestamp,
    ) -> StoreResult<Option<ApiKeyInfo>> {
        let row: Option<ApiKeyColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND account_id = $3 RETURNING {API_KEY_COLUMNS}"
        )))
        .bind(now.millis())
        .bind(id.as_str())
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(ApiKeyColumns::into_info))
    }

    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at.millis())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn account_signing_secret(&self, account: &AccountId) -> StoreResult<SigningSecret> {
        let fresh = SigningSecret::generate();
        let stored: String = sqlx::query_scalar(
            "UPDATE accounts SET signing_secret = COALESCE(signing_secret, $1) WHERE id = $2 RETURNING signing_secret",
        )
        .bind(
            self.sealer
                .seal(Column::AccountSigningSecret, account.as_str(), fresh.expose()),
        )
        .bind(account.as_str())
        .fetch_one(&self.pool)
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

async fn insert_key<'c>(conn: impl sqlx::PgExecutor<'c>, key: &NewApiKey) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, key_hash, prefix, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.id.as_str())
    .bind(key.account_id.as_str())
    .bind(&key.hash)
    .bind(&key.prefix)
    .bind(&key.name)
    .bind(key.created_at.millis())
    .execute(conn)
    .await?;
    Ok(())
}
