//! The queue on PostgreSQL: claims ([`super::claim`]), results ([`super::record`]), releases,
//! and LISTEN/NOTIFY, by which one node's commits wake the others.

use super::{CHANNEL, PgStore};
use crate::domain::{Timestamp, WebhookId};
use crate::store::{
    AttemptRecord, Claim, ClaimRequest, HealthPolicy, Intake, NextDue, Queue, Release, StoreResult,
    next_due_sql,
};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// See [`next_due_sql`].
static NEXT_DUE: LazyLock<String> =
    LazyLock::new(|| next_due_sql("UNNEST($1::text[]) AS h(id)", "$2"));

#[async_trait]
impl Queue for PgStore {
    async fn claim(&self, req: &ClaimRequest) -> StoreResult<Claim> {
        self.claim_due_deliveries(req).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        self.record(records, health).await
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        let ids: Vec<String> = releases.iter().map(|r| r.delivery_id.to_string()).collect();
        let leases: Vec<String> = releases.iter().map(|r| r.lease.clone()).collect();
        sqlx::query(
            "UPDATE deliveries d SET lease = NULL, locked_until = NULL
             FROM UNNEST($1::text[], $2::text[]) AS v(id, lease)
             WHERE d.id = v.id AND d.lease = v.lease",
        )
        .bind(&ids)
        .bind(&leases)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn next_due(&self, full_lanes: &[WebhookId]) -> StoreResult<NextDue> {
        let hooks: Vec<&str> = full_lanes.iter().map(WebhookId::as_str).collect();
        let now = Timestamp::now();
        let rows = sqlx::query_as(AssertSqlSafe(NEXT_DUE.as_str()))
            .bind(hooks)
            .bind(now.millis())
            .fetch_all(&self.pool)
            .await?;
        Ok(NextDue::of_rows(rows, now))
    }

    fn set_intake(&self, intake: Arc<dyn Intake>, lease: Duration) {
        self.intake.set(intake, lease);
    }

    fn watch_for_work(&self, on_work: Arc<dyn Fn() + Send + Sync>, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                    continue;
                }
                loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(_) => on_work(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                // Work committed while we were away is found by the next poll.
                                on_work();
                                break;
                            }
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
    }
}
