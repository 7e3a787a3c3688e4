//! The customer portal's one-time links and sessions on SQLite: every write on the writer
//! thread, so opening a link (check, mark used, store the session) is one transaction that no
//! other write interleaves with.

use super::{Commit, SqliteStore};
use crate::domain::{AccountId, Timestamp};
use crate::store::{
    LinkRedeemed, NewPortalLink, NewPortalSession, PORTAL_LINK_QUERY, PortalSession,
    PortalSessions, StoreResult,
};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use sqlx::Row;

#[async_trait]
impl PortalSessions for SqliteStore {
    async fn create_portal_link(&self, link: &NewPortalLink) -> StoreResult<()> {
        let link = link.clone();
        self.write_alone(Commit::Durable, move |tx| {
            let now = link.created_at.millis();
            tx.prepare_cached(
                "INSERT INTO portal_links (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            )?
            .execute((&link.hash, link.account.as_str(), now, link.expires_at.millis()))?;
            Ok(())
        })
        .await
    }

    async fn redeem_portal_link(
        &self,
        hash: &str,
        session: &NewPortalSession,
    ) -> StoreResult<LinkRedeemed> {
        let (hash, session) = (hash.to_owned(), session.clone());
        self.write_alone(Commit::Durable, move |tx| {
            let now = session.created_at;
            let link = tx
                .prepare_cached(PORTAL_LINK_QUERY)?
                .query_row([&hash], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .optional()?;
            let Some((account, expires_at, used_at)) = link else {
                return Ok(LinkRedeemed::Unknown);
            };
            let outcome = LinkRedeemed::decide(
                AccountId::from_trusted(account),
                Timestamp::from_millis(expires_at),
                used_at.map(Timestamp::from_millis),
                now,
            );
            if let LinkRedeemed::Opened(account) = &outcome {
                tx.prepare_cached("UPDATE portal_links SET used_at = ? WHERE token_hash = ?")?
                    .execute((now.millis(), &hash))?;
                tx.prepare_cached(
                    "INSERT INTO portal_sessions (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                )?
                .execute((
                    &session.hash,
                    account.as_str(),
                    now.millis(),
                    session.expires_at.millis(),
                ))?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn find_portal_session(
        &self,
        hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<PortalSession>> {
        let row = sqlx::query(
            "SELECT account_id, expires_at FROM portal_sessions WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(hash)
        .bind(now.millis())
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| PortalSession {
            account: AccountId::from_trusted(r.get("account_id")),
            expires_at: Timestamp::from_millis(r.get("expires_at")),
        }))
    }

    async fn end_portal_session(&self, hash: &str) -> StoreResult<()> {
        let hash = hash.to_owned();
        self.write_alone(Commit::Durable, move |tx| {
            tx.prepare_cached("DELETE FROM portal_sessions WHERE token_hash = ?")?
                .execute([&hash])?;
            Ok(())
        })
        .await
    }

    async fn peek_portal_link(&self, hash: &str, now: Timestamp) -> StoreResult<LinkRedeemed> {
        let row = sqlx::query(PORTAL_LINK_QUERY)
            .bind(hash)
            .fetch_optional(&self.reader)
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
