//! Accounts and their API keys on PostgreSQL.

use super::{PgStore, push_page};
use crate::domain::{Account, AccountId, SigningSecret};
use crate::store::rows::{ACCOUNT_COLUMNS, AccountColumns, corrupt, paginate};
use crate::store::seal::Column;
use crate::store::{Accounts, NewApiKey, Page, PageRequest, StoreResult};
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
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id.as_str())
        .bind(key.account_id.as_str())
        .bind(&key.hash)
        .bind(key.created_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let row: Option<AccountColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(AccountColumns::into_account))
    }

    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
        let mut q = QueryBuilder::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE TRUE"));
        push_page(&mut q, "id", page);
        let rows: Vec<AccountColumns> = q.build_query_as().fetch_all(&self.pool).await?;
        let items = rows.into_iter().map(AccountColumns::into_account).collect();
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<(AccountId, String)>> {
        let row = sqlx::query(
            "SELECT account_id, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            (
                AccountId::from_trusted(r.get("account_id")),
                r.get("key_hash"),
            )
        }))
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
}
