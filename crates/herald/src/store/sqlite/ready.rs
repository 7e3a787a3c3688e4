//! Readiness on SQLite: the reader pool answers, the schema is current, and the writer thread
//! commits.

use super::{Commit, MIGRATOR, SqliteStore};
use crate::store::{APPLIED_MIGRATION, Readiness, migrations_done};
use async_trait::async_trait;

#[async_trait]
impl Readiness for SqliteStore {
    async fn check_ready(&self) -> Result<(), String> {
        let applied: Option<i64> = sqlx::query_scalar(APPLIED_MIGRATION)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "readiness: the database cannot be read");
                "the database cannot be read".to_owned()
            })?;
        migrations_done(applied, &MIGRATOR)?;
        self.write_alone(Commit::Relaxed, |_| Ok(()))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "readiness: the writer does not commit");
                "the database writer is not running".to_owned()
            })
    }
}
