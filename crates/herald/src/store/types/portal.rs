//! The portal's links and sessions, as stored.

use crate::domain::{AccountId, Timestamp};

/// A one-time portal link to store (`POST /v1/accounts/{id}/portal-sessions`): only the hash of
/// its token is kept, as for API keys.
#[derive(Clone, Debug)]
pub struct NewPortalLink {
    /// Hex SHA-256 of the link's token.
    pub hash: String,
    pub account: AccountId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The session an opened portal link starts (for the link's account): only its token's hash.
#[derive(Clone, Debug)]
pub struct NewPortalSession {
    /// Hex SHA-256 of the session's token (the cookie's value).
    pub hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What opening a portal link did: a link opens one session, once, before it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRedeemed {
    /// The session is stored, for this account.
    Opened(AccountId),
    /// The link was opened before (when).
    Used(Timestamp),
    /// The link expired (when) unused.
    Expired(Timestamp),
    /// No link has this token.
    Unknown,
}

impl LinkRedeemed {
    /// What a stored link (its account, expiry and use) allows at `now`; the one decision both
    /// backends make, under the link's row lock (PostgreSQL) or on the writer (SQLite).
    pub fn decide(
        account: AccountId,
        expires_at: Timestamp,
        used_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        match used_at {
            Some(used) => Self::Used(used),
            None if expires_at <= now => Self::Expired(expires_at),
            None => Self::Opened(account),
        }
    }
}

/// A live portal session, as a request's cookie finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalSession {
    pub account: AccountId,
    pub expires_at: Timestamp,
}

/// A portal link's account, expiry and use, by its hash (`$1`; SQLite takes `$n` parameters
/// too): what [`LinkRedeemed::decide`] judges, for both backends.
pub(crate) const PORTAL_LINK_QUERY: &str =
    "SELECT account_id, expires_at, used_at FROM portal_links WHERE token_hash = $1";

/// The portal's expiring tokens, which the janitor deletes once expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalTokens {
    /// One-time links, used or not.
    Links,
    Sessions,
}

impl PortalTokens {
    pub const ALL: [Self; 2] = [Self::Links, Self::Sessions];

    /// Its table, which is also its `herald_pruned_total` kind.
    pub fn table(self) -> &'static str {
        match self {
            Self::Links => "portal_links",
            Self::Sessions => "portal_sessions",
        }
    }

    /// Deletes up to `$2` rows that expired before `$1` (SQLite takes `$n` parameters too);
    /// `lock` ends the inner select (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    pub(crate) fn prune_sql(self, lock: &str) -> String {
        let table = self.table();
        format!(
            "DELETE FROM {table} WHERE token_hash IN \
             (SELECT token_hash FROM {table} WHERE expires_at < $1 LIMIT $2{lock})"
        )
    }
}
