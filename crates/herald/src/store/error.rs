//! The store's one error type: each variant says what happened.

use super::seal;
use std::path::PathBuf;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// An error of the SQLite writer thread's own connection.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// A stored secret cannot be read with the configured `HERALD_SECRETS_KEY` (or without one).
    #[error(transparent)]
    Sealed(#[from] seal::SealError),
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// The event's account is being erased (or does not exist): nothing of it was stored.
    #[error("no such account")]
    UnknownAccount,
    /// The task or thread that writes this store's publishes (or, on SQLite, all its writes)
    /// has stopped, or stopped before it answered: nothing of the request was acknowledged.
    #[error("the {0} has stopped; the write was not acknowledged")]
    WriterStopped(&'static str),
    /// The transaction of a group commit this publish was part of failed: nothing of the group
    /// was acknowledged (the cause is logged once, for the whole group).
    #[error("the group commit failed; the publish was not acknowledged")]
    GroupCommitFailed,
    /// Another process holds the lock file beside the SQLite database.
    #[error("another Herald process is using {database} (lock file {lock} is held)")]
    Locked { database: PathBuf, lock: PathBuf },
    /// The lock file beside the SQLite database cannot be opened.
    #[error("cannot open the lock file {path}: {source}")]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The SQLite writer thread cannot be started.
    #[error("cannot start the SQLite writer thread: {0}")]
    WriterThread(std::io::Error),
    /// A database URL or setting this build cannot use.
    #[error("{0}")]
    Unsupported(String),
}

impl StoreError {
    /// Whether the request can simply be retried later: the database is unreachable, or the
    /// write was not acknowledged.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::WriterStopped(_) | Self::GroupCommitFailed
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception), 57P01-57P03 (shutting down, starting).
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e)
        } else {
            Self::Database(e)
        }
    }
}
