//! Attempt results on SQLite, written by the writer thread in its rounds: the attempts, their
//! deliveries' new state (only while the lease is still theirs), the webhooks' failure records,
//! and disabling the webhooks that answered 410 or have failed for too long.

use super::batch::Batch;
use super::publish::insert_event;
use crate::domain::{AccountId, DeliveryStatus};
use crate::store::seal::Sealer;
use crate::store::{AttemptRecord, HealthPolicy, NewEvent, NextStep, StoreResult, WebhookRef};
use tokio::sync::oneshot;

/// On the writer's connection, in its round: the attempts, their deliveries' new state, and the
/// webhooks' failure records.
pub(super) fn write(
    conn: &rusqlite::Connection,
    records: &[AttemptRecord],
    health: &HealthPolicy,
) -> StoreResult<()> {
    let mut batch = Batch::new();
    push_record(&mut batch, records, health);
    super::stats::push_stats(&mut batch, records);
    batch.run(conn)
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
}

/// Disables the webhooks these results show gone (410) or failing for longer than the policy
/// allows, each with a `webhook.disabled` event. Only a webhook whose last attempt here failed
/// can be newly failing for too long (a success clears its record), so a batch of successes
/// costs nothing here.
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
    let failing_before = health.now.minus(health.disable_after).millis();
    if !gone.is_empty() {
        let ids = serde_json::to_string(&gone).expect("strings serialize");
        let found = select_webhooks(
            conn,
            "SELECT id, account_id, url FROM webhooks
             WHERE status = 'active' AND id IN (SELECT value FROM json_each(?))",
            [ids],
        )?;
        disable(conn, found, "gone", health, sealer)?;
    }
    if !failing.is_empty() {
        // After the gone ones: a webhook disabled above is no longer active here.
        let ids = serde_json::to_string(&failing).expect("strings serialize");
        let found = select_webhooks(
            conn,
            "SELECT id, account_id, url FROM webhooks
             WHERE status = 'active' AND id IN (SELECT value FROM json_each(?)) AND failing_since <= ?",
            (ids, failing_before),
        )?;
        disable(conn, found, "failing", health, sealer)?;
    }
    Ok(())
}

/// The (id, account, url) of the webhooks `sql` selects.
fn select_webhooks(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<(String, String, String)>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Disables each webhook with a `webhook.disabled` event saying why.
fn disable(
    conn: &rusqlite::Connection,
    webhooks: Vec<(String, String, String)>,
    reason: &str,
    health: &HealthPolicy,
    sealer: &Sealer,
) -> StoreResult<()> {
    for (id, account, url) in webhooks {
        conn.prepare_cached(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = ?, updated_at = ? WHERE id = ?",
        )?
        .execute((reason, health.now.millis(), &id))?;
        tracing::warn!(webhook_id = %id, reason, "webhook disabled");
        let who = WebhookRef {
            id,
            account: AccountId::from_trusted(account),
            url,
        };
        let event = NewEvent::webhook_disabled(&who, reason, health.now);
        insert_event(conn, &event, health.now, sealer)?;
    }
    Ok(())
}
