//! Publishing on SQLite: publishes are group-committed by the writer thread ([`super::writer`]),
//! many in one transaction; events without an Idempotency-Key are written with set-based
//! statements for the whole group, events with one go one by one under a savepoint, as only they
//! can be refused alone. New deliveries go straight to this node's dispatcher when it has room
//! ([`Handoff`]).

use super::batch::Batch;
use super::{PUBLISHER, SqliteStore};
use crate::domain::{DeliveryId, Timestamp, Webhook, WebhookKind};
use crate::store::erasure;
use crate::store::group_commit::{self, PublishRequest};
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns, corrupt, event_from_rusqlite};
use crate::store::seal::Sealer;
use crate::store::{Fanout, Handoff, NewEvent, Published, Publisher, StoreError, StoreResult};
use async_trait::async_trait;

#[async_trait]
impl Publisher for SqliteStore {
    async fn publish_events(
        &self,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<StoreResult<Published>>> {
        group_commit::submit(&self.publisher, PUBLISHER, events).await
    }
}

/// In the writer's round: the events of a group of publishes, each with its result. Events with
/// an idempotency key go one by one, each under a savepoint: only a key can refuse one event
/// alone, and it does so before writing anything. The rest are written together.
pub(super) fn write_group(
    conn: &rusqlite::Connection,
    publishes: &[PublishRequest],
    handoff: Option<&mut Handoff>,
    sealer: &Sealer,
) -> StoreResult<Vec<StoreResult<Published>>> {
    let events: Vec<&NewEvent> = publishes.iter().flat_map(|r| &r.events).collect();
    let erasing = super::erasure::erasing_among(conn, &erasure::accounts_of(&events))?;
    let refused = erasure::refused(&events, &erasing);
    let (keyed, plain): (Vec<&NewEvent>, Vec<&NewEvent>) = events
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| !**refused)
        .map(|(e, _)| *e)
        .partition(|e| e.idempotency.is_some());
    let now = Timestamp::now();
    let mut keyed_results = Vec::with_capacity(keyed.len());
    for event in &keyed {
        conn.execute_batch("SAVEPOINT publish")?;
        let result = publish_keyed(conn, event, now, sealer);
        if result.is_err() {
            conn.execute_batch("ROLLBACK TO publish")?;
        }
        conn.execute_batch("RELEASE publish")?;
        keyed_results.push(result);
    }
    let counts = insert_events(conn, &plain, now, handoff, sealer)?;
    let mut keyed_results = keyed_results.into_iter();
    let mut counts = counts.into_iter();
    Ok(events
        .iter()
        .zip(refused)
        .map(|(e, refused)| {
            if refused {
                return Err(StoreError::UnknownAccount);
            }
            if e.idempotency.is_some() {
                return keyed_results.next().expect("one result per keyed event");
            }
            Ok(Published::new(
                e.to_event(),
                counts.next().unwrap_or_default(),
            ))
        })
        .collect())
}

/// Publishes an event with an idempotency key: the earlier event under the same key, if it is
/// still valid and the request is the same, else a new one.
fn publish_keyed(
    conn: &rusqlite::Connection,
    new: &NewEvent,
    now: Timestamp,
    sealer: &Sealer,
) -> StoreResult<Published> {
    use rusqlite::OptionalExtension;
    let idem = new.idempotency.as_ref().expect("a keyed event");
    let earlier: Option<(String, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT id, idempotency_fingerprint, created_at FROM events WHERE account_id = ? AND idempotency_key = ?",
        )?
        .query_row((new.account.as_str(), &idem.key), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((id, fingerprint, created_at)) = earlier {
        if created_at >= idem.valid_since.millis() {
            if fingerprint.as_deref() != Some(&idem.fingerprint) {
                return Err(StoreError::IdempotencyConflict);
            }
            let mut statement = conn.prepare_cached(
                "SELECT id, account_id, type, timestamp, data FROM events WHERE id = ?",
            )?;
            let mut rows = statement.query([&id])?;
            let row = rows
                .next()?
                .ok_or_else(|| corrupt("event", "the idempotency key's event is gone"))?;
            let event = event_from_rusqlite(row, "")?;
            let deliveries: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE event_id = ?")?
                .query_row([&id], |r| r.get(0))?;
            return Ok(Published::replay(event, deliveries as u32));
        }
        // The earlier use has expired: the key is free again.
        conn.prepare_cached("UPDATE events SET idempotency_key = NULL WHERE id = ?")?
            .execute([&id])?;
    }
    let counts = insert_events(conn, &[new], now, None, sealer)?;
    Ok(Published::new(new.to_event(), counts[0]))
}

/// Stores an event and one pending delivery per webhook that gets it (a job's status, a webhook
/// disabled); returns how many.
pub(super) fn insert_event(
    conn: &rusqlite::Connection,
    e: &NewEvent,
    now: Timestamp,
    sealer: &Sealer,
) -> StoreResult<u32> {
    let made = insert_events(conn, &[e], now, None, sealer)?[0].deliveries;
    Ok(made)
}

/// Stores events (none with an idempotency key to check) and enqueues a delivery for every
/// webhook that gets each. Returns, for each event in order, its number of deliveries and how
/// many of those went to `handoff`.
fn insert_events(
    conn: &rusqlite::Connection,
    events: &[&NewEvent],
    now: Timestamp,
    handoff: Option<&mut Handoff>,
    sealer: &Sealer,
) -> StoreResult<Vec<Fanout>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut batch = Batch::new();
    push_insert_events(&mut batch, events, now);
    push_webhook_lookup(&mut batch, events);
    let webhooks = batch.query(conn, |row| {
        WebhookColumns::from_rusqlite(row)?.into_webhook(sealer)
    })?;
    let mut batch = Batch::new();
    let counts = plan_deliveries(&mut batch, events, &webhooks, now, handoff);
    batch.run(conn)?;
    Ok(counts)
}

/// The insert of `events` (none with an idempotency key to check).
fn push_insert_events(batch: &mut Batch, events: &[&NewEvent], now: Timestamp) {
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.id.as_str(),
                e.account.as_str(),
                &e.event_type,
                e.timestamp.millis(),
                e.data.get(),
                e.idempotency.as_ref().map(|i| (&i.key, &i.fingerprint)),
                e.job.as_ref().map(|j| j.id.as_str()),
                e.ordering_key.as_ref().map(|k| k.as_str()),
            )
        })
        .collect();
    let now = batch.arg(now.millis());
    let rows = batch.arg(serde_json::to_string(&rows).expect("strings serialize"));
    batch.push(&format!(
        "INSERT INTO events (id, account_id, type, timestamp, data, idempotency_key, idempotency_fingerprint,
         created_at, job_id, ordering_key)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>'$[5][0]', value->>'$[5][1]',
                {now}, value->>6, value->>7
         FROM jsonb_each({rows})"
    ));
}

/// The lookup of every webhook that may get one of `events`: the active webhooks of their
/// accounts, a job's webhook only for its own job's events; rows of [`WEBHOOK_COLUMNS`].
fn push_webhook_lookup(batch: &mut Batch, events: &[&NewEvent]) {
    let accounts = erasure::accounts_of(events);
    let jobs: Vec<&str> = events
        .iter()
        .filter_map(|e| e.job.as_ref().map(|j| j.id.as_str()))
        .collect();
    let accounts = batch.arg(serde_json::to_string(&accounts).expect("strings serialize"));
    let jobs = batch.arg(serde_json::to_string(&jobs).expect("strings serialize"));
    batch.push(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks
         WHERE account_id IN (SELECT value FROM json_each({accounts})) AND status = 'active' AND deleted_at IS NULL
           AND (kind <> 'job' OR job_id IN (SELECT value FROM json_each({jobs})))
         ORDER BY id"
    ));
}

/// Chooses the webhooks that get each event from the looked-up `hooks`, and adds the insert
/// of their deliveries to `batch` (those `handoff` reserves are written leased to this node).
/// Returns, for each event, its number of deliveries and how many were handed over.
fn plan_deliveries(
    batch: &mut Batch,
    events: &[&NewEvent],
    hooks: &[Webhook],
    now: Timestamp,
    mut handoff: Option<&mut Handoff>,
) -> Vec<Fanout> {
    let mut counts = Vec::with_capacity(events.len());
    let mut deliveries = Vec::new();
    let mut ordered = false;
    for e in events {
        let mut fanout = Fanout::default();
        for hook in hooks {
            // The lookup covered the whole group: a job's webhook is only ever a candidate for
            // its own job's events, as when events are written one by one.
            let other_job = hook.kind == WebhookKind::Job
                && e.job.as_ref().map(|j| j.id.as_str()) != hook.job_id.as_deref();
            if hook.account_id != e.account
                || other_job
                || !e.route().reaches(
                    hook.id.as_str(),
                    hook.kind,
                    hook.job_id.as_deref(),
                    &hook.events,
                )
            {
                continue;
            }
            let id = DeliveryId::generate();
            let mut leased = None;
            let mut handed = false;
            if hook.takes_hand_overs()
                && let Some(h) = handoff.as_deref_mut()
                && h.reserve(&hook.id)
            {
                h.add(id.clone(), e.to_event(), hook.clone());
                leased = Some((h.lease.clone(), h.lease_until.millis()));
                handed = true;
            }
            fanout.add(handed, hook.held);
            let key = hook.ordering.delivery_key(e.ordering_key.as_ref());
            ordered |= key.is_some();
            deliveries.push((
                id.to_string(),
                e.account.as_str(),
                e.id.as_str(),
                &e.event_type,
                hook.id.as_str(),
                leased,
                key,
            ));
        }
        counts.push(fanout);
    }
    if !deliveries.is_empty() {
        let now_ms = now.millis();
        let (now, now2, now3) = (batch.arg(now_ms), batch.arg(now_ms), batch.arg(now_ms));
        let rows = batch.arg(serde_json::to_string(&deliveries).expect("strings serialize"));
        // Ordered deliveries take their `seq` from the counter, in the order written (`key` is
        // the index in `rows`); the counter then moves past them.
        batch.push(&format!(
            "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status, attempts_made,
             next_attempt_at, created_at, updated_at, lease, locked_until, ordering_key, seq)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, 'pending', 0, {now}, {now2}, {now3},
                    value->>'$[5][0]', value->>'$[5][1]', value->>6,
                    CASE WHEN value->>6 IS NOT NULL THEN (SELECT last FROM ordering_seq) + key + 1 END
             FROM jsonb_each({rows})"
        ));
        if ordered {
            let n = batch.arg(deliveries.len() as i64);
            batch.push(&format!("UPDATE ordering_seq SET last = last + {n}"));
        }
    }
    counts
}
