//! Opening the store a database URL names.

use super::{DynStore, StoreError, StoreResult, postgres, seal, sqlite};
use std::sync::Arc;

/// Opens the store a database URL names, runs its migrations, and brings the stored secrets in
/// line with `sealer` ([`seal::Sealer::reseal`]): sealed with its key, or refused without it.
/// `pool_size` bounds the PostgreSQL connections of this process (SQLite uses one writer).
pub async fn open(
    database_url: &str,
    pool_size: u32,
    sealer: seal::Sealer,
) -> StoreResult<DynStore> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(database_url, sealer).await?,
        ))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PgStore::open(database_url, pool_size, sealer).await?,
        ))
    } else {
        Err(StoreError::Unsupported(format!(
            "unsupported database URL scheme in {:?}; expected sqlite: or postgres:",
            database_url.split(':').next().unwrap_or_default()
        )))
    }
}

/// Readiness's migration check, the same on both backends: the newest migration applied (from
/// sqlx's own table) is at least the newest this build carries.
pub(crate) fn migrations_done(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), String> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied.unwrap_or(0) {
        a if a >= known => Ok(()),
        a => Err(format!(
            "database migrations pending (applied up to {a}, this build needs {known})"
        )),
    }
}

/// The newest migration applied, from sqlx's own table.
pub(crate) const APPLIED_MIGRATION: &str =
    "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
