//! The customer portal's one-time links and sessions on PostgreSQL: opening a link locks its row
//! (`FOR UPDATE`), so two nodes given the same link at once open one session between them.

use super::PgStore;
use crate::domain::{AccountId, Timestamp};
use crate::store::{
    LinkRedeemed, NewPortalLink, NewPortalSession, PORTAL_LINK_QUERY, PortalSession,
    PortalSessions, StoreResult,
};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

#[async_trait]
impl PortalSessions for PgStore {
    async fn create_portal_link(&self, link: &NewPortalLink) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO portal_links (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&link.hash)
        .bind(link.account.as_str())
        .bind(link.created_at.millis())
        .bind(link.expires_at.millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn redeem_portal_link(
        &self,
        hash: &str,
        session: &NewPortalSession,
    ) -> StoreResult<LinkRedeemed> {
        let now = session.created_at;
        let mut tx = self.pool.begin().await?;
        let link = sqlx::query(AssertSqlSafe(format!("{PORTAL_LINK_QUERY} FOR UPDATE")))
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(link) = link else {
            return Ok(LinkRedeemed::Unknown);
        };
        let outcome = LinkRedeemed::decide(
            AccountId::from_trusted(link.get("account_id")),
            Timestamp::from_millis(link.get("expires_at")),
            link.get::<Option<i64>, _>("used_at")
                .map(Timestamp::from_millis),
            now,
        );
        if let LinkRedeemed::Opened(account) = &outcome {
            sqlx::query("UPDATE portal_links SET used_at = $1 WHERE token_hash = $2")
                .bind(now.millis())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO portal_sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&session.hash)
            .bind(account.as_str())
            .bind(now.millis())
            .bind(session.expires_at.millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn find_portal_session(
        &self,
        hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<PortalSession>> {
        let row = sqlx::query(
            "SELECT account_id, expires_at FROM portal_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(hash)
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| PortalSession {
            account: AccountId::from_trusted(r.get("account_id")),
            expires_at: Timestamp::from_millis(r.get("expires_at")),
        }))
    }

    async fn end_portal_session(&self, hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM portal_sessions WHERE token_hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn peek_portal_link(&self, hash: &str, now: Timestamp) -> StoreResult<LinkRedeemed> {
        let row = sqlx::query(PORTAL_LINK_QUERY)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map_or(LinkRedeemed::Unknown, |r| {
            LinkRedeemed::decide(
                AccountId::from_trusted(r.get("account_id")),
                Timestamp::from_millis(r.get("expires_at")),
                r.get::<Option<i64>, _>("used_at")
                    .map(Timestamp::from_millis),
                now,
            )
        }))
    }
}
