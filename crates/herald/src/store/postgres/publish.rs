//! Publishing on PostgreSQL: group commit and set-based inserts.
//!
//! Publishes go through a channel to a few committer tasks. Each takes whatever has queued and
//! writes it in one transaction, so one commit (one WAL flush) acknowledges many events, and
//! the committers' commits overlap. Events without an Idempotency-Key are written with three
//! statements for the whole group; events with one go one by one under a savepoint, as only
//! they can be refused alone. Nothing is answered before the commit that makes it durable.

use super::{CHANNEL, event_from_row};
use crate::domain::{DeliveryId, Timestamp, WebhookKind};
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::rows::{self, corrupt};
use crate::store::{NewEvent, Published, StoreError, StoreResult};
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Most committers; fewer when the pool is small, so publishing never holds most of it. With
/// the benchmark on 2 cores, three overlapping commits took about 25% more events/s than one.
const COMMITTERS: u32 = 3;

/// Starts the committers and returns where publishes go to them.
pub(super) fn start_publishers(pool: &PgPool, pool_size: u32) -> mpsc::Sender<PublishRequest> {
    let (publisher, requests) = group_commit::channel();
    let requests = Arc::new(Mutex::new(requests));
    for _ in 0..(pool_size / 4).clamp(1, COMMITTERS) {
        tokio::spawn(run_publisher(pool.clone(), requests.clone()));
    }
    publisher
}

/// One committer: it waits for publishes (one committer waits at a time), takes all that have
/// queued, and writes them while the next committer waits for more. Any error but a refused
/// Idempotency-Key fails the whole group, and nothing of it is acknowledged.
async fn run_publisher(pool: PgPool, requests: Arc<Mutex<mpsc::Receiver<PublishRequest>>>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT);
    loop {
        let received = requests
            .lock()
            .await
            .recv_many(&mut batch, GROUP_COMMIT)
            .await;
        if received == 0 {
            return;
        }
        let outcome = publish_batch(&pool, &batch).await;
        group_commit::answer(&mut batch, outcome);
    }
}

/// Is this the unique index that guards idempotency keys?
fn is_idempotency_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("events_idempotency"))
}

/// Writes a group of publishes in one transaction and wakes the nodes once if it made work.
async fn publish_batch(
    pool: &PgPool,
    batch: &[PublishRequest],
) -> StoreResult<Vec<StoreResult<Published>>> {
    let events: Vec<&NewEvent> = batch.iter().flat_map(|r| &r.events).collect();
    let mut results: Vec<Option<StoreResult<Published>>> = events.iter().map(|_| None).collect();
    let mut tx = pool.begin().await?;
    let mut made = 0u32;
    // Keyed events in (account, key) order: concurrent committers and nodes then wait on the
    // idempotency index in one order and cannot deadlock. The sort is stable, so repeats of a
    // key within the group keep their order (the first stores, the next replay it).
    let mut keyed: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].idempotency.is_some())
        .collect();
    keyed.sort_by_key(|&i| {
        let key = events[i].idempotency.as_ref().map(|k| k.key.as_str());
        (events[i].account.as_str(), key)
    });
    for i in keyed {
        let mut result = Err(StoreError::IdempotencyConflict);
        // A concurrent publish may win the race for the key: then the second try, under a
        // fresh savepoint, finds its event and answers as a repeat.
        for _ in 0..2 {
            sqlx::query("SAVEPOINT publish").execute(&mut *tx).await?;
            result = publish_keyed(&mut tx, events[i]).await;
            let race = matches!(&result, Err(StoreError::Database(d)) if is_idempotency_race(d));
            if result.is_err() {
                sqlx::query("ROLLBACK TO publish").execute(&mut *tx).await?;
            }
            sqlx::query("RELEASE publish").execute(&mut *tx).await?;
            if !race {
                break;
            }
        }
        if let Ok(p) = &result
            && !p.replayed
        {
            made += p.deliveries;
        }
        results[i] = Some(result);
    }
    let plain: Vec<&NewEvent> = events
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_none())
        .map(|(e, _)| *e)
        .collect();
    let counts = insert_events(&mut tx, &plain, Timestamp::now()).await?;
    made += counts.iter().sum::<u32>();
    if made > 0 {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    let mut counts = counts.into_iter();
    Ok(events
        .iter()
        .zip(results)
        .map(|(e, r)| {
            r.unwrap_or_else(|| {
                Ok(Published {
                    event: e.to_event(),
                    deliveries: counts.next().unwrap_or(0),
                    handed_over: 0,
                    replayed: false,
                })
            })
        })
        .collect())
}

/// Wakes the other nodes' dispatchers when the transaction commits.
async fn notify(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Publishes an event that carries an Idempotency-Key: a repeat within the window answers the
/// earlier event, a different request under the key is refused, an expired key is reused.
async fn publish_keyed(tx: &mut PgConnection, new: &NewEvent) -> StoreResult<Published> {
    if let Some(idem) = &new.idempotency {
        let earlier = sqlx::query(
            "SELECT id, idempotency_fingerprint, created_at FROM events
             WHERE account_id = $1 AND idempotency_key = $2",
        )
        .bind(new.account.as_str())
        .bind(&idem.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = earlier {
            let id: String = row.get("id");
            if row.get::<i64, _>("created_at") >= idem.valid_since.millis() {
                if row
                    .get::<Option<String>, _>("idempotency_fingerprint")
                    .as_deref()
                    != Some(&idem.fingerprint)
                {
                    return Err(StoreError::IdempotencyConflict);
                }
                let row = sqlx::query(
                    "SELECT id, account_id, type, timestamp, data,
                     (SELECT COUNT(*) FROM deliveries WHERE event_id = $1) AS deliveries
                     FROM events WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                let deliveries: i64 = row.get("deliveries");
                return Ok(Published {
                    event: event_from_row(&row, "")?,
                    deliveries: deliveries as u32,
                    handed_over: 0,
                    replayed: true,
                });
            }
            // The earlier use has expired: the key is free again.
            sqlx::query("UPDATE events SET idempotency_key = NULL WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
    }
    let counts = insert_events(&mut *tx, &[new], Timestamp::now()).await?;
    Ok(Published {
        event: new.to_event(),
        deliveries: counts[0],
        handed_over: 0,
        replayed: false,
    })
}

/// Stores an event and one pending delivery per webhook that gets it, and wakes the nodes
/// when it commits; returns the number of deliveries.
pub(super) async fn insert_event(
    conn: &mut PgConnection,
    e: &NewEvent,
    now: Timestamp,
) -> StoreResult<u32> {
    let made = insert_events(&mut *conn, &[e], now).await?[0];
    if made > 0 {
        notify(conn).await?;
    }
    Ok(made)
}

/// A candidate webhook of one of the group's accounts.
struct Candidate {
    id: String,
    account_id: String,
    kind: WebhookKind,
    job_id: Option<String>,
    filters: Vec<crate::domain::EventFilter>,
}

/// Stores events and a pending delivery for every webhook that gets each, in three statements
/// whatever the number of events. Returns each event's number of deliveries, in order.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    now: Timestamp,
) -> StoreResult<Vec<u32>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|e| f(e)).collect()
    };
    let timestamps: Vec<i64> = events.iter().map(|e| e.timestamp.millis()).collect();
    sqlx::query(
        "INSERT INTO events (id, account_id, type, timestamp, data, idempotency_key,
         idempotency_fingerprint, created_at, job_id)
         SELECT id, account_id, type, ts, data, key, fingerprint, $8, job_id
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $9::text[])
              AS e(id, account_id, type, ts, data, key, fingerprint, job_id)",
    )
    .bind(column(&|e| Some(e.id.as_str())))
    .bind(column(&|e| Some(e.account.as_str())))
    .bind(column(&|e| Some(&e.event_type)))
    .bind(&timestamps)
    .bind(column(&|e| Some(e.data.get())))
    .bind(column(&|e| e.idempotency.as_ref().map(|i| i.key.as_str())))
    .bind(column(&|e| {
        e.idempotency.as_ref().map(|i| i.fingerprint.as_str())
    }))
    .bind(now.millis())
    .bind(column(&|e| e.job.as_ref().map(|j| j.id.as_str())))
    .execute(&mut *conn)
    .await?;

    let mut accounts: Vec<&str> = events.iter().map(|e| e.account.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let jobs: Vec<&str> = events
        .iter()
        .filter_map(|e| e.job.as_ref().map(|j| j.id.as_str()))
        .collect();
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, account_id, events, kind, job_id FROM webhooks
         WHERE account_id = ANY($1) AND status = 'active' AND deleted_at IS NULL
           AND (kind <> 'job' OR job_id = ANY($2))
         ORDER BY id",
    )
    .bind(&accounts)
    .bind(&jobs)
    .fetch_all(&mut *conn)
    .await?;
    let candidates = rows
        .into_iter()
        .map(|(id, account_id, events, kind, job_id)| {
            Ok(Candidate {
                kind: WebhookKind::parse(&kind).ok_or_else(|| corrupt("webhook kind", &kind))?,
                filters: rows::filters_from_json(&events)?,
                id,
                account_id,
                job_id,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;

    let mut counts = Vec::with_capacity(events.len());
    let mut deliveries: [Vec<String>; 5] = Default::default();
    for e in events {
        let job = e.job.as_ref().map(|j| j.id.as_str());
        let mut n = 0u32;
        for hook in &candidates {
            // The lookup was for the whole group: a job's webhook is only a candidate for
            // its own job's events, as when events are looked up one by one.
            let candidate = hook.account_id == e.account.as_str()
                && (hook.kind != WebhookKind::Job || hook.job_id.as_deref() == job);
            if !candidate || !e.is_for(&hook.id, hook.kind, hook.job_id.as_deref(), &hook.filters) {
                continue;
            }
            for (column, value) in deliveries.iter_mut().zip([
                DeliveryId::generate().to_string(),
                e.account.as_str().to_owned(),
                e.id.as_str().to_owned(),
                e.event_type.clone(),
                hook.id.clone(),
            ]) {
                column.push(value);
            }
            n += 1;
        }
        counts.push(n);
    }
    if !deliveries[0].is_empty() {
        let [ids, accounts, event_ids, types, webhooks] = deliveries;
        sqlx::query(
            "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status,
             attempts_made, next_attempt_at, created_at, updated_at)
             SELECT id, account_id, event_id, event_type, webhook_id, 'pending', 0, $6, $6, $6
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                  AS d(id, account_id, event_id, event_type, webhook_id)",
        )
        .bind(ids)
        .bind(accounts)
        .bind(event_ids)
        .bind(types)
        .bind(webhooks)
        .bind(now.millis())
        .execute(&mut *conn)
        .await?;
    }
    Ok(counts)
}
