//! Attempt results on PostgreSQL: one relaxed transaction per batch (see
//! [`PgStore::relaxed_begin`]); a result whose lease was lost is kept but changes nothing. The
//! operator events the results cause are written in the same transaction
//! ([`crate::store::operator`]).

use super::{PgStore, publish::insert_event};
use crate::domain::{AccountId, DeliveryStatus};
use crate::store::operator::{self, Exhausted, Notice};
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
        // With an operator, the update tells which deliveries it spent (only those whose lease
        // still held, as it updates only those; none to the operator's own webhook).
        let spent = health.operator.is_some() && !operator::exhausted_keys(records).is_empty();
        let mut update = QueryBuilder::<Postgres>::new(if spent { "WITH u AS (" } else { "" });
        update.push(
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
        if spent {
            update.push(
                " RETURNING d.id, d.account_id, d.event_id, d.event_type, d.webhook_id, d.status)
                 SELECT u.id, u.account_id, u.event_id, u.event_type, w.id, w.url
                 FROM u JOIN webhooks w ON w.id = u.webhook_id
                 WHERE u.status = 'failed' AND w.kind <> 'operator'",
            );
            let found: Vec<(String, String, String, String, String, String)> =
                update.build_query_as().fetch_all(&mut *tx).await?;
            for found in found.into_iter().map(Exhausted::from) {
                let event = operator::delivery_exhausted(&found, records, health.now);
                insert_event(&mut tx, &event, health.now).await?;
            }
        } else {
            update.build().execute(&mut *tx).await?;
        }
        record_health(&mut tx, records, health).await?;
        record_flow(&mut tx, records, health).await?;
        super::stats::record_stats(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps the webhooks' failure records, tells the operator of recoveries and of webhooks
/// failing for `failing_after`, and disables those that answered 410 or kept failing (never the
/// operator's own). Only rows whose state changes are touched, so the usual all-is-well batch
/// locks no webhook.
async fn record_health(
    conn: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
) -> StoreResult<()> {
    // Folded as SQLite folds them (`store/health.rs`): a webhook whose last result here
    // succeeded is not failing, one whose last results failed is, since the first of those.
    let mut changes = crate::store::failure_record_changes(records);
    changes.cleared.sort();
    changes.started.sort();
    let succeeded = changes.cleared;
    let (failed, since): (Vec<String>, Vec<i64>) = changes.started.into_iter().unzip();
    let mut gone: Vec<String> = records
        .iter()
        .filter(|r| r.gone)
        .map(|r| r.webhook_id.to_string())
        .collect();
    gone.sort();
    gone.dedup();
    let now = health.now;
    if health.operator.is_some() && !succeeded.is_empty() {
        let recovered = notices(
            &mut *conn,
            // The spell as it was: RETURNING shows the row after the update.
            "UPDATE webhooks w SET reported_failing_since = NULL
             FROM (SELECT id, reported_failing_since AS spell FROM webhooks WHERE id = ANY($1)) AS was
             WHERE w.id = was.id AND w.reported_failing_since IS NOT NULL AND w.status = 'active'
               AND w.deleted_at IS NULL AND w.kind <> 'operator'
             RETURNING w.id, w.account_id, w.url, was.spell",
            &succeeded,
            None,
        )
        .await?;
        for w in recovered {
            insert_event(&mut *conn, &operator::webhook_recovered(&w, now), now).await?;
        }
    }
    sqlx::query(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL",
    )
    .bind(&succeeded)
    .execute(&mut *conn)
    .await?;
    if !failed.is_empty() {
        sqlx::query(
            "UPDATE webhooks w SET failing_since = s.since
             FROM unnest($1::text[], $2::bigint[]) AS s(id, since)
             WHERE w.id = s.id AND w.failing_since IS NULL",
        )
        .bind(&failed)
        .bind(&since)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(policy) = health.operator
        && !failed.is_empty()
    {
        let failing = notices(
            &mut *conn,
            "UPDATE webhooks SET reported_failing_since = failing_since
             WHERE id = ANY($1) AND status = 'active' AND deleted_at IS NULL AND kind <> 'operator'
               AND failing_since <= $2 AND reported_failing_since IS DISTINCT FROM failing_since
             RETURNING id, account_id, url, failing_since",
            &failed,
            Some(policy.failing_before(now)),
        )
        .await?;
        for w in failing {
            let event = operator::webhook_failing(&w, records, now);
            insert_event(&mut *conn, &event, now).await?;
        }
    }
    let failing_before = now.minus(health.disable_after).millis();
    // With an operator, a disabled webhook's spell counts as reported: its next success is a
    // recovery.
    let reported = match health.operator {
        Some(_) => ", reported_failing_since = coalesce(failing_since, $2)",
        None => "",
    };
    for (reason, ids, extra) in [
        ("gone", &gone, ""),
        ("failing", &failed, " AND failing_since <= $4"),
    ] {
        if ids.is_empty() {
            continue;
        }
        let sql = format!(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = $1, updated_at = $2{reported}
             WHERE id = ANY($3) AND status = 'active' AND kind <> 'operator'{extra}
             RETURNING id, account_id, url, failing_since"
        );
        let mut q = sqlx::query_as::<_, (String, String, String, Option<i64>)>(AssertSqlSafe(sql))
            .bind(reason)
            .bind(now.millis())
            .bind(ids);
        if !extra.is_empty() {
            q = q.bind(failing_before);
        }
        for w in q.fetch_all(&mut *conn).await?.into_iter().map(Notice::from) {
            tracing::warn!(webhook_id = %w.id, reason, "webhook disabled");
            let who = WebhookRef {
                id: w.id.clone(),
                account: AccountId::from_trusted(w.account.clone()),
                url: w.url.clone(),
            };
            insert_event(
                &mut *conn,
                &NewEvent::webhook_disabled(&who, reason, now),
                now,
            )
            .await?;
            if health.operator.is_some() {
                let event = operator::webhook_disabled(&w, reason, records, now);
                insert_event(&mut *conn, &event, now).await?;
            }
        }
    }
    Ok(())
}

/// The circuit breaker's update ([`crate::store::flow::circuit_update`]).
static CIRCUIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::store::flow::circuit_update(
        "UNNEST($1::text[], $2::bool[], $3::int8[]) AS s(id, reset, n)",
        "$4",
        "$5",
        "$6",
    )
});

/// Flow control (`crate::store::flow`): the pauses receivers asked for, then the circuit
/// breaker's count and a success clearing a pause that is over, in one statement.
async fn record_flow(
    conn: &mut sqlx::PgConnection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
) -> StoreResult<()> {
    let pauses = crate::store::flow::pauses(records);
    if !pauses.is_empty() {
        let (ids, until): (Vec<String>, Vec<i64>) = pauses.into_iter().unzip();
        sqlx::query(
            "UPDATE webhooks w SET paused_until = GREATEST(COALESCE(w.paused_until, 0), p.until)
             FROM UNNEST($1::text[], $2::int8[]) AS p(id, until) WHERE w.id = p.id",
        )
        .bind(ids)
        .bind(until)
        .execute(&mut *conn)
        .await?;
    }
    let streaks = crate::store::flow::streaks(records);
    let (ids, (reset, n)): (Vec<String>, (Vec<bool>, Vec<i64>)) = streaks
        .into_iter()
        .map(|(id, reset, n)| (id, (reset, n)))
        .unzip();
    sqlx::query(AssertSqlSafe(CIRCUIT.as_str()))
        .bind(ids)
        .bind(reset)
        .bind(n)
        .bind(i64::from(health.circuit_after))
        .bind(health.now.plus(health.probe_interval).millis())
        .bind(health.now.millis())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The webhooks an `UPDATE … RETURNING id, account_id, url, <since>` over the ids `$1` (and
/// a moment `$2`, if given) changed.
async fn notices(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    ids: &[String],
    moment: Option<i64>,
) -> StoreResult<Vec<Notice>> {
    let mut q = sqlx::query_as::<_, (String, String, String, Option<i64>)>(sql).bind(ids);
    if let Some(m) = moment {
        q = q.bind(m);
    }
    Ok(q.fetch_all(conn)
        .await?
        .into_iter()
        .map(Notice::from)
        .collect())
}
