//! Accounts and their API keys on SQLite.

use super::{Commit, SqliteStore, push_page};
use crate::domain::{Account, AccountId, SigningSecret};
use crate::store::rows::{ACCOUNT_COLUMNS, AccountColumns, corrupt, paginate};
use crate::store::seal::Column;
use crate::store::{Accounts, NewApiKey, Page, PageRequest, StoreResult};
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
            tx.prepare_cached(
                "INSERT INTO api_keys (id, account_id, key_hash, created_at) VALUES (?, ?, ?, ?)",
            )?
            .execute((
                key.id.as_str(),
                key.account_id.as_str(),
                &key.hash,
                key.created_at.millis(),
            ))?;
            Ok(())
        })
        .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let row: Option<AccountColumns> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(AccountColumns::into_account))
    }

    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
        let mut q = QueryBuilder::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE TRUE"));
        push_page(&mut q, "id", page);
        let rows: Vec<AccountColumns> = q.build_query_as().fetch_all(&self.reader).await?;
        let items = rows.into_iter().map(AccountColumns::into_account).collect();
        Ok(paginate(items, page.limit, |a| a.id.to_string()))
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<(AccountId, String)>> {
        let row = sqlx::query(
            "SELECT account_id, key_hash FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
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
}
