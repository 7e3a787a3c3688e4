//! Attempt results on PostgreSQL: one relaxed transaction per batch (see
//! [`PgStore::relaxed_begin`]); a result whose lease was lost is kept but changes nothing.

use super::{PgStore, publish::insert_event};
use crate::domain::{AccountId, DeliveryStatus};
use crate::store::{AttemptRecord, HealthPolicy, NewEvent, NextStep, StoreResult, WebhookRef};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

impl PgStore {
    /// [`crate::store::Queue::record_attempts`] on PostgreSQL: the attempts and the deliveries' new state in
    /// two set-based statements, then the webhooks' health.
    pub(super) async fn record(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = health.now.millis();
        let mut tx = self.relaxed_begin().await?;
        let mut attempts = QueryBuilder::<Postgres>::new(
            "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, status_code,
             error_kind, error, response_body, node) ",
        );
        attempts.push_values(records, |mut b, r| {
            let a = &r.attempt;
            b.push_bind(a.id.as_str().to_owned())
                .push_bind(r.delivery_id.as_str().to_owned())
                .push_bind(i64::from(a.number))
                .push_bind(a.started_at.millis())
                .push_bind(a.duration_ms as i64)
                .push_bind(a.status_code.map(i64::from))
                .push_bind(a.error_kind.map(|k| k.as_str()))
                .push_bind(a.error.clone())
                .push_bind(a.response_body.clone())
                .push_bind(a.node.clone());
        });
        attempts.build().execute(&mut *tx).await?;
        let mut update = QueryBuilder::<Postgres>::new(
            "UPDATE deliveries d SET status = v.status, attempts_made = v.number,
             next_attempt_at = v.next_at, lease = NULL, locked_until = NULL, updated_at = ",
        );
        update.push_bind(now).push(" FROM (");
        update.push_values(records, |mut b, r| {
            let (status, next_at) = match r.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
                NextStep::Failed => (DeliveryStatus::Failed, None),
                NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(t.millis())),
            };
            b.push_bind(r.delivery_id.as_str().to_owned())
                .push_bind(r.lease.clone())
                .push_bind(status.as_str())
                .push_bind(i64::from(r.attempt.number))
                .push_bind(next_at);
        });
        update.push(
            ") AS v(id, lease, status, number, next_at) WHERE d.id = v.id AND d.lease = v.lease",
        );
        update.build().execute(&mut *tx).await?;
        record_health(&mut tx, records, health).await?;
        super::stats::record_stats(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps the webhooks' failure records and disables those that answered 410 or kept failing.
/// Only rows whose state changes are touched, so the usual all-is-well batch locks no webhook.
async fn record_health(
    conn: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
) -> StoreResult<()> {
    let ids = |pick: &dyn Fn(&AttemptRecord) -> bool| -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.webhook_id.to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let succeeded = ids(&|r| r.next == NextStep::Succeeded);
    let failed = ids(&|r| r.next != NextStep::Succeeded);
    let gone = ids(&|r| r.gone);
    sqlx::query(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL",
    )
    .bind(&succeeded)
    .execute(&mut *conn)
    .await?;
    if let Some(first) = records
        .iter()
        .filter(|r| r.next != NextStep::Succeeded)
        .map(|r| r.attempt.started_at)
        .min()
    {
        sqlx::query(
            "UPDATE webhooks SET failing_since = $1 WHERE id = ANY($2) AND failing_since IS NULL",
        )
        .bind(first.millis())
        .bind(&failed)
        .execute(&mut *conn)
        .await?;
    }
    let failing_before = health.now.minus(health.disable_after).millis();
    for (reason, ids, extra) in [
        ("gone", &gone, ""),
        ("failing", &failed, " AND failing_since <= $4"),
    ] {
        if ids.is_empty() {
            continue;
        }
        let sql = format!(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = $1, updated_at = $2
             WHERE id = ANY($3) AND status = 'active'{extra} RETURNING id, account_id, url"
        );
        let mut q = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql))
            .bind(reason)
            .bind(health.now.millis())
            .bind(ids);
        if !extra.is_empty() {
            q = q.bind(failing_before);
        }
        for (id, account, url) in q.fetch_all(&mut *conn).await? {
            tracing::warn!(webhook_id = %id, reason, "webhook disabled");
            let who = WebhookRef {
                id,
                account: AccountId::from_trusted(account),
                url,
            };
            insert_event(
                &mut *conn,
                &NewEvent::webhook_disabled(&who, reason, health.now),
                health.now,
            )
            .await?;
        }
    }
    Ok(())
}
