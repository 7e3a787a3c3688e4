//! Readiness on PostgreSQL: the pool reaches the database and the schema is current.

use super::{MIGRATOR, PgStore};
use crate::store::{APPLIED_MIGRATION, Readiness, migrations_done};
use async_trait::async_trait;

#[async_trait]
impl Readiness for PgStore {
    async fn check_ready(&self) -> Result<(), String> {
        let applied: Option<i64> = sqlx::query_scalar(APPLIED_MIGRATION)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "readiness: the database cannot be read");
                "the database cannot be reached".to_owned()
            })?;
        migrations_done(applied, &MIGRATOR)
    }
}
