//! Attempt results on SQLite, written by the writer thread in its rounds: the attempts, their
//! deliveries' new state (only while the lease is still theirs), the webhooks' failure records,
//! disabling the webhooks that answered 410 or have failed for too long, and the operator events
//! all this causes ([`crate::store::operator`]).

use super::batch::Batch;
use super::publish::insert_event;
use crate::domain::{AccountId, DeliveryStatus};
use crate::store::operator::{self, Exhausted, Notice};
use crate::store::seal::Sealer;
use crate::store::{AttemptRecord, HealthPolicy, NewEvent, NextStep, StoreResult, WebhookRef};
use tokio::sync::oneshot;

/// On the writer's connection, in its round: the attempts, their deliveries' new state, the
/// webhooks' failure records, and the operator's `delivery.exhausted` and `webhook.recovered`.
pub(super) fn write(
    conn: &rusqlite::Connection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    // Before the deliveries' update, which lets their leases go: a spent delivery counts only
    // while its result's lease still holds it, as for the update itself.
    let exhausted = match health.operator {
        Some(_) => find_exhausted(conn, records)?,
        None => Vec::new(),
    };
    let mut batch = Batch::new();
    push_record(&mut batch, records, health);
    super::stats::push_stats(&mut batch, records);
    batch.run(conn)?;
    if health.operator.is_some() {
        let now = health.now;
        for found in &exhausted {
            let event = operator::delivery_exhausted(found, records, now);
            insert_event(conn, &event, now, sealer)?;
        }
        for w in recovered(conn, records)? {
            insert_event(conn, &operator::webhook_recovered(&w, now), now, sealer)?;
        }
    }
    Ok(())
}

/// The deliveries these results spend (still leased to them; none to the operator's webhook).
fn find_exhausted(
    conn: &rusqlite::Connection,
    records: &[AttemptRecord],
) -> StoreResult<Vec<Exhausted>> {
    let keys = operator::exhausted_keys(records);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let keys = serde_json::to_string(&keys).expect("strings serialize");
    let rows = conn
        .prepare_cached(
            "SELECT d.id, d.account_id, d.event_id, d.event_type, w.id, w.url
             FROM jsonb_each(?) AS k
             JOIN deliveries d ON d.id = k.value->>0 AND d.lease = k.value->>1
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE w.kind <> 'operator'",
        )?
        .query_map([keys], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(Exhausted::from).collect())
}

/// The webhooks reported failing (or disabled) that these results show succeeding again, their
/// report cleared: each is reported recovered.
fn recovered(conn: &rusqlite::Connection, records: &[AttemptRecord]) -> StoreResult<Vec<Notice>> {
    let cleared = crate::store::failure_record_changes(records).cleared;
    if cleared.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&cleared).expect("strings serialize");
    // Read, then cleared (RETURNING would show the cleared value); nothing writes between the
    // two on the one writer.
    let found = select_notices(
        conn,
        "SELECT id, account_id, url, reported_failing_since FROM webhooks
         WHERE id IN (SELECT value FROM json_each(?)) AND reported_failing_since IS NOT NULL
           AND status = 'active' AND deleted_at IS NULL AND kind <> 'operator'",
        [ids],
    )?;
    let ids: Vec<&str> = found.iter().map(|w| w.id.as_str()).collect();
    if !ids.is_empty() {
        conn.prepare_cached(
            "UPDATE webhooks SET reported_failing_since = NULL
             WHERE id IN (SELECT value FROM json_each(?))",
        )?
        .execute([serde_json::to_string(&ids).expect("strings serialize")])?;
    }
    Ok(found)
}

/// The notices a statement returns (id, account, url, failing since).
fn select_notices(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Notice>> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(Notice::from).collect())
}

/// Attempt results to write.
pub(super) struct RecordRequest {
    pub records: Vec<AttemptRecord>,
    pub health: HealthPolicy,
    pub reply: oneshot::Sender<StoreResult<()>>,
}

/// The attempts, their deliveries' new state, and the webhooks' failure records (cleared by a
/// success, started by the first failure since).
fn push_record(batch: &mut Batch, records: &[AttemptRecord], health: &HealthPolicy) {
    let attempts: Vec<_> = records
        .iter()
        .map(|r| {
            let a = &r.attempt;
            (
                a.id.as_str(),
                r.delivery_id.as_str(),
                a.number,
                a.started_at.millis(),
                a.duration_ms,
                a.status_code,
                a.error_kind.map(|k| k.as_str()),
                a.error.as_deref(),
                a.response_body.as_deref(),
                a.node.as_deref(),
            )
        })
        .collect();
    let attempts = batch.arg(serde_json::to_string(&attempts).expect("attempts serialize"));
    batch.push(&format!(
        "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, status_code, error_kind, error,
         response_body, node)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7,
                value->>8, value->>9
         FROM jsonb_each({attempts})"
    ));
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| {
            let (status, next_at) = match r.next {
                NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
                NextStep::Failed => (DeliveryStatus::Failed, None),
                NextStep::RetryAt(t) => (DeliveryStatus::Pending, Some(t.millis())),
            };
            (
                r.delivery_id.as_str(),
                r.lease.as_str(),
                status.as_str(),
                r.attempt.number,
                next_at,
            )
        })
        .collect();
    let now = batch.arg(health.now.millis());
    let outcomes = batch.arg(serde_json::to_string(&outcomes).expect("outcomes serialize"));
    // Only while the lease is still ours: a lease that ran out may have been taken again.
    batch.push(&format!(
        "UPDATE deliveries SET status = o.status, attempts_made = o.number, next_attempt_at = o.next_at,
                lease = NULL, locked_until = NULL, updated_at = {now}
         FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS status, value->>3 AS number,
                      value->>4 AS next_at FROM jsonb_each({outcomes})) AS o
         WHERE deliveries.id = o.id AND deliveries.lease = o.lease"
    ));
    let changes = crate::store::failure_record_changes(records);
    if !changes.cleared.is_empty() {
        let cleared = batch.arg(serde_json::to_string(&changes.cleared).expect("ids serialize"));
        batch.push(&format!(
            "UPDATE webhooks SET failing_since = NULL
             WHERE id IN (SELECT value FROM json_each({cleared})) AND failing_since IS NOT NULL"
        ));
    }
    if !changes.started.is_empty() {
        let started = batch.arg(serde_json::to_string(&changes.started).expect("ids serialize"));
        batch.push(&format!(
            "UPDATE webhooks SET failing_since = s.since
             FROM (SELECT value->>0 AS id, value->>1 AS since FROM jsonb_each({started})) AS s
             WHERE webhooks.id = s.id AND webhooks.failing_since IS NULL"
        ));
    }
    push_flow(batch, records, health);
}

/// Flow control (`crate::store::flow`): the pauses receivers asked for, the circuit breaker's
/// count ([`crate::store::flow::circuit_update`]), and a success clearing a pause that is over
/// (so the claims need not read the webhook's gate again).
fn push_flow(batch: &mut Batch, records: &[AttemptRecord], health: &HealthPolicy) {
    let pauses = crate::store::flow::pauses(records);
    if !pauses.is_empty() {
        let pauses = batch.arg(serde_json::to_string(&pauses).expect("pauses serialize"));
        batch.push(&format!(
            "UPDATE webhooks SET paused_until = max(coalesce(paused_until, 0), p.until)
             FROM (SELECT value->>0 AS id, value->>1 AS until FROM jsonb_each({pauses})) AS p
             WHERE webhooks.id = p.id"
        ));
    }
    let streaks = crate::store::flow::streaks(records);
    let after = batch.arg(i64::from(health.circuit_after));
    let open = batch.arg(health.now.plus(health.probe_interval).millis());
    let now = batch.arg(health.now.millis());
    let streaks = batch.arg(serde_json::to_string(&streaks).expect("streaks serialize"));
    batch.push(&crate::store::flow::circuit_update(
        &format!(
            "(SELECT value->>0 AS id, value->>1 AS reset, value->>2 AS n, {after} AS after,
                     {open} AS open, {now} AS now FROM jsonb_each({streaks})) AS s"
        ),
        "s.after",
        "s.open",
        "s.now",
    ));
}

/// Reports to the operator the webhooks these results show failing for `failing_after` (once
/// per spell), then disables those gone (410) or failing for longer than the policy allows,
/// each with a `webhook.disabled` event (and the operator's copy). Only a webhook whose last
/// attempt here failed can be newly failing for too long (a success clears its record), so a
/// batch of successes costs nothing here. The operator's own webhook is never disabled.
pub(super) fn disable_unhealthy(
    conn: &rusqlite::Connection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    let gone: Vec<&str> = records
        .iter()
        .filter(|r| r.gone)
        .map(|r| r.webhook_id.as_str())
        .collect();
    let failing: Vec<String> = crate::store::failure_record_changes(records)
        .started
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let now = health.now;
    if let Some(policy) = health.operator
        && !failing.is_empty()
    {
        let ids = serde_json::to_string(&failing).expect("strings serialize");
        let found = select_notices(
            conn,
            "UPDATE webhooks SET reported_failing_since = failing_since
             WHERE id IN (SELECT value FROM json_each(?)) AND status = 'active' AND deleted_at IS NULL
               AND kind <> 'operator' AND failing_since <= ? AND reported_failing_since IS NOT failing_since
             RETURNING id, account_id, url, failing_since",
            (ids, policy.failing_before(now)),
        )?;
        for w in found {
            let event = operator::webhook_failing(&w, records, now);
            insert_event(conn, &event, now, sealer)?;
        }
    }
    let failing_before = now.minus(health.disable_after).millis();
    if !gone.is_empty() {
        let ids = serde_json::to_string(&gone).expect("strings serialize");
        let found = select_notices(
            conn,
            "SELECT id, account_id, url, failing_since FROM webhooks
             WHERE status = 'active' AND kind <> 'operator' AND id IN (SELECT value FROM json_each(?))",
            [ids],
        )?;
        disable(conn, found, "gone", records, health, sealer)?;
    }
    if !failing.is_empty() {
        // After the gone ones: a webhook disabled above is no longer active here.
        let ids = serde_json::to_string(&failing).expect("strings serialize");
        let found = select_notices(
            conn,
            "SELECT id, account_id, url, failing_since FROM webhooks
             WHERE status = 'active' AND kind <> 'operator' AND id IN (SELECT value FROM json_each(?))
               AND failing_since <= ?",
            (ids, failing_before),
        )?;
        disable(conn, found, "failing", records, health, sealer)?;
    }
    Ok(())
}

/// Disables each webhook with a `webhook.disabled` event saying why, and the operator's copy
/// (noting the spell as reported, so that its next success is reported as a recovery).
fn disable(
    conn: &rusqlite::Connection,
    webhooks: Vec<Notice>,
    reason: &str,
    records: &[AttemptRecord],
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    let now = health.now;
    for w in webhooks {
        conn.prepare_cached(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = ?, updated_at = ? WHERE id = ?",
        )?
        .execute((reason, now.millis(), &w.id))?;
        tracing::warn!(webhook_id = %w.id, reason, "webhook disabled");
        let who = WebhookRef {
            id: w.id.clone(),
            account: AccountId::from_trusted(w.account.clone()),
            url: w.url.clone(),
        };
        insert_event(
            conn,
            &NewEvent::webhook_disabled(&who, reason, now),
            now,
            sealer,
        )?;
        if health.operator.is_some() {
            conn.prepare_cached(
                "UPDATE webhooks SET reported_failing_since = coalesce(failing_since, ?) WHERE id = ?",
            )?
            .execute((now.millis(), &w.id))?;
            let event = operator::webhook_disabled(&w, reason, records, now);
            insert_event(conn, &event, now, sealer)?;
        }
    }
    Ok(())
}
