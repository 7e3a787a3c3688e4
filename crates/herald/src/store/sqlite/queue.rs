//! The queue on SQLite: claims ([`super::claim`]), results ([`super::record`]) and releases,
//! written by the writer thread in its rounds.

use super::SqliteStore;
use super::record::RecordRequest;
use super::writer::Write;
use crate::domain::{Timestamp, WebhookId};
use crate::store::{
    AttemptRecord, Claim, ClaimRequest, HealthPolicy, Intake, NextDue, Queue, Release, StoreResult,
    next_due_sql,
};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Retries' results per write: a publish waits for one of the queue's writes at most (the
/// writer's [`super::writer`] rounds), so the shorter each is, the shorter that wait; 32 was
/// measured against a retry backlog's drain (docs/BENCHMARKS.md).
const RETRY_RECORDS_PER_WRITE: usize = 32;

/// See [`next_due_sql`].
static NEXT_DUE: LazyLock<String> =
    LazyLock::new(|| next_due_sql("(SELECT value AS id FROM json_each(?1)) AS h", "?2"));

#[async_trait]
impl Queue for SqliteStore {
    async fn claim(&self, req: &ClaimRequest) -> StoreResult<Claim> {
        self.claim_gated(req).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let request = RecordRequest {
            records: records.to_vec(),
            health: *health,
            reply,
        };
        self.write(Write::Record(request), answer).await
    }

    fn retry_records_per_write(&self) -> usize {
        RETRY_RECORDS_PER_WRITE
    }

    async fn release(&self, releases: &[Release]) -> StoreResult<()> {
        if releases.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let request = ReleaseRequest {
            releases: releases.to_vec(),
            reply,
        };
        self.write(Write::Release(request), answer).await
    }

    async fn next_due(&self, full_lanes: &[WebhookId]) -> StoreResult<NextDue> {
        let hooks: Vec<&str> = full_lanes.iter().map(WebhookId::as_str).collect();
        let hooks = serde_json::to_string(&hooks).expect("strings serialize");
        let now = Timestamp::now();
        let rows = sqlx::query_as(AssertSqlSafe(NEXT_DUE.as_str()))
            .bind(hooks)
            .bind(now.millis())
            .fetch_all(&self.reader)
            .await?;
        Ok(NextDue::of_rows(rows, now))
    }

    fn set_intake(&self, intake: Arc<dyn Intake>, lease: Duration) {
        self.intake.set(intake, lease);
    }
}

/// Leases to give back.
pub(super) struct ReleaseRequest {
    pub releases: Vec<Release>,
    pub reply: oneshot::Sender<StoreResult<()>>,
}

/// In the writer's round: gives the leases back, where they are still the deliveries' leases.
pub(super) fn release(conn: &rusqlite::Connection, releases: &[Release]) -> StoreResult<()> {
    let pairs: Vec<(&str, &str)> = releases
        .iter()
        .map(|r| (r.delivery_id.as_str(), r.lease.as_str()))
        .collect();
    let pairs = serde_json::to_string(&pairs).expect("strings serialize");
    conn.prepare_cached(
        "UPDATE deliveries SET lease = NULL, locked_until = NULL
         FROM (SELECT value->>0 AS id, value->>1 AS lease FROM json_each(?)) AS r
         WHERE deliveries.id = r.id AND deliveries.lease = r.lease",
    )?
    .execute([pairs])?;
    Ok(())
}
