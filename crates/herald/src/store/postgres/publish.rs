//! Publishing on PostgreSQL: group commit and set-based inserts.
//!
//! Publishes go through a channel to a few committer tasks. Each takes whatever has queued and
//! writes it in one transaction, so one commit (one WAL flush) acknowledges many events, and
//! the committers' commits overlap. Events without an Idempotency-Key are written with three
//! statements for the whole group; events with one go one by one under a savepoint, as only
//! they can be refused alone. Nothing is answered before the commit that makes it durable.
//!
//! As on SQLite, new deliveries go straight to this node's dispatcher when it has room for them
//! ([`Handoff`]): they are written already leased to it, handed over after the commit, and need
//! no claim. Should the node die first, their lease runs out and any node claims them.

use super::{CHANNEL, PUBLISHER, PgStore};
use crate::domain::{DeliveryId, Timestamp, Webhook, WebhookKind, WebhookOrdering};
use crate::store::erasure;
use crate::store::group_commit::{self, GROUP_COMMIT, PublishRequest};
use crate::store::rows::{self, WEBHOOK_COLUMNS, WebhookColumns, corrupt, event_from_row};
use crate::store::seal::Sealer;
use crate::store::{
    Fanout, Handoff, IntakeSlot, NewEvent, Published, Publisher, StoreError, StoreResult,
};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

#[async_trait]
impl Publisher for PgStore {
    async fn publish_events(
        &self,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<StoreResult<Published>>> {
        group_commit::submit(&self.publisher, PUBLISHER, events).await
    }
}

/// Most committers; fewer when the pool is small, so publishing never holds most of it. A few
/// commits overlapping take more events per second than one at a time (docs/BENCHMARKS.md).
const COMMITTERS: u32 = 3;

/// Starts the committers and returns where publishes go to them.
pub(super) fn start_publishers(
    pool: &PgPool,
    pool_size: u32,
    intake: &IntakeSlot,
    sealer: &Sealer,
) -> mpsc::Sender<PublishRequest> {
    let (publisher, requests) = group_commit::channel();
    let requests = Arc::new(Mutex::new(requests));
    for _ in 0..(pool_size / 4).clamp(1, COMMITTERS) {
        tokio::spawn(run_publisher(
            pool.clone(),
            requests.clone(),
            intake.clone(),
            sealer.clone(),
        ));
    }
    publisher
}

/// One committer: it waits for publishes (one committer waits at a time), takes all that have
/// queued, and writes them while the next committer waits for more. Any error but a refused
/// Idempotency-Key fails the whole group, and nothing of it is acknowledged.
async fn run_publisher(
    pool: PgPool,
    requests: Arc<Mutex<mpsc::Receiver<PublishRequest>>>,
    intake: IntakeSlot,
    sealer: Sealer,
) {
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
        let handoff = intake.handoff();
        let outcome = publish_batch(&pool, &batch, handoff, &sealer).await;
        group_commit::answer(&mut batch, outcome);
    }
}

/// Is this the unique index that guards idempotency keys?
fn is_idempotency_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("events_idempotency"))
}

/// Writes a group of publishes in one transaction, wakes the nodes once if it left work for
/// the claims, and hands the deliveries reserved in `handoff` over after the commit.
async fn publish_batch(
    pool: &PgPool,
    batch: &[PublishRequest],
    mut handoff: Option<Handoff>,
    sealer: &Sealer,
) -> StoreResult<Vec<StoreResult<Published>>> {
    let events: Vec<&NewEvent> = batch.iter().flat_map(|r| &r.events).collect();
    let mut results: Vec<Option<StoreResult<Published>>> = events.iter().map(|_| None).collect();
    let mut tx = pool.begin().await?;
    // Events of accounts being erased are refused, as of unknown accounts.
    let erasing = super::erasure::erasing_among(&mut tx, &erasure::accounts_of(&events)).await?;
    for (result, refused) in results.iter_mut().zip(erasure::refused(&events, &erasing)) {
        if refused {
            *result = Some(Err(StoreError::UnknownAccount));
        }
    }
    // Deliveries left for the claims: what other nodes (and this one's claims) are woken for.
    let mut made = 0u32;
    // Keyed events in (account, key) order: concurrent committers and nodes then wait on the
    // idempotency index in one order and cannot deadlock. The sort is stable, so repeats of a
    // key within the group keep their order (the first stores, the next replay it).
    let mut keyed: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].idempotency.is_some() && results[i].is_none())
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
    let to_dispatcher = handoff.as_mut().map(|h| (h, sealer));
    let counts = insert_events(&mut tx, &plain, Timestamp::now(), to_dispatcher).await?;
    made += counts.iter().map(Fanout::waiting_for_a_claim).sum::<u32>();
    if made > 0 {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    if let Some(handoff) = handoff {
        handoff.finish();
    }
    let mut counts = counts.into_iter();
    Ok(events
        .iter()
        .zip(results)
        .map(|(e, r)| {
            r.unwrap_or_else(|| {
                Ok(Published::new(
                    e.to_event(),
                    counts.next().unwrap_or_default(),
                ))
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
                return Ok(Published::replay(
                    event_from_row(&row, "")?,
                    deliveries as u32,
                ));
            }
            // The earlier use has expired: the key is free again.
            sqlx::query("UPDATE events SET idempotency_key = NULL WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
    }
    let counts = insert_events(&mut *tx, &[new], Timestamp::now(), None).await?;
    Ok(Published::new(new.to_event(), counts[0]))
}

/// Stores an event and one pending delivery per webhook that gets it, and wakes the nodes
/// when it commits; returns the number of deliveries.
pub(super) async fn insert_event(
    conn: &mut PgConnection,
    e: &NewEvent,
    now: Timestamp,
) -> StoreResult<u32> {
    let made = insert_events(&mut *conn, &[e], now, None).await?[0];
    if made.waiting_for_a_claim() > 0 {
        notify(conn).await?;
    }
    Ok(made.deliveries)
}

/// A candidate webhook of one of the group's accounts.
struct Candidate {
    id: String,
    account_id: String,
    kind: WebhookKind,
    job_id: Option<String>,
    filters: Vec<crate::domain::EventFilter>,
    ordering: WebhookOrdering,
    /// Held by its gate (paused, circuit open): see [`crate::store::Published::held`].
    held: bool,
    /// The whole webhook, read when deliveries may be handed over.
    webhook: Option<Webhook>,
}

impl Candidate {
    fn of(webhook: Webhook) -> Self {
        Self {
            id: webhook.id.to_string(),
            account_id: webhook.account_id.to_string(),
            kind: webhook.kind,
            job_id: webhook.job_id.clone(),
            filters: webhook.events.clone(),
            ordering: webhook.ordering,
            held: webhook.held,
            webhook: Some(webhook),
        }
    }
}

/// Stores events and a pending delivery for every webhook that gets each, in three statements
/// whatever the number of events. Deliveries `handoff` reserves are written leased to this
/// node. Returns, for each event in order, its number of deliveries and how many of those went
/// to `handoff`.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    now: Timestamp,
    mut handoff: Option<(&mut Handoff, &Sealer)>,
) -> StoreResult<Vec<Fanout>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|e| f(e)).collect()
    };
    let timestamps: Vec<i64> = events.iter().map(|e| e.timestamp.millis()).collect();
    sqlx::query(
        "INSERT INTO events (id, account_id, type, timestamp, data, idempotency_key,
         idempotency_fingerprint, created_at, job_id, ordering_key)
         SELECT id, account_id, type, ts, data, key, fingerprint, $8, job_id, ordering_key
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $9::text[], $10::text[])
              AS e(id, account_id, type, ts, data, key, fingerprint, job_id, ordering_key)",
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
    .bind(column(&|e| e.ordering_key.as_ref().map(|k| k.as_str())))
    .execute(&mut *conn)
    .await?;

    let accounts = erasure::accounts_of(events);
    let jobs: Vec<&str> = events
        .iter()
        .filter_map(|e| e.job.as_ref().map(|j| j.id.as_str()))
        .collect();
    let candidates = match &handoff {
        Some((_, sealer)) => whole_candidates(&mut *conn, &accounts, &jobs, sealer).await?,
        None => candidates(&mut *conn, &accounts, &jobs).await?,
    };

    let mut counts = Vec::with_capacity(events.len());
    let mut deliveries: [Vec<String>; 5] = Default::default();
    let (mut leases, mut locked_until) = (Vec::new(), Vec::new());
    let mut keys: Vec<Option<&str>> = Vec::new();
    for e in events {
        let job = e.job.as_ref().map(|j| j.id.as_str());
        let mut fanout = Fanout::default();
        for hook in &candidates {
            // The lookup was for the whole group: a job's webhook is only a candidate for
            // its own job's events, as when events are looked up one by one.
            let candidate = hook.account_id == e.account.as_str()
                && (hook.kind != WebhookKind::Job || hook.job_id.as_deref() == job);
            if !candidate
                || !e
                    .route()
                    .reaches(&hook.id, hook.kind, hook.job_id.as_deref(), &hook.filters)
            {
                continue;
            }
            let id = DeliveryId::generate();
            let (mut lease, mut until) = (None, None);
            let mut handed = false;
            if let Some((h, _)) = handoff.as_mut()
                && let Some(webhook) = &hook.webhook
                && webhook.takes_hand_overs()
                && h.reserve(&webhook.id)
            {
                h.add(id.clone(), e.to_event(), webhook.clone());
                (lease, until) = (Some(h.lease.clone()), Some(h.lease_until.millis()));
                handed = true;
            }
            fanout.add(handed, hook.held);
            leases.push(lease);
            locked_until.push(until);
            keys.push(hook.ordering.delivery_key(e.ordering_key.as_ref()));
            for (column, value) in deliveries.iter_mut().zip([
                id.to_string(),
                e.account.as_str().to_owned(),
                e.id.as_str().to_owned(),
                e.event_type.clone(),
                hook.id.clone(),
            ]) {
                column.push(value);
            }
        }
        counts.push(fanout);
    }
    if !deliveries[0].is_empty() {
        let [ids, accounts, event_ids, types, webhooks] = deliveries;
        // Ordered deliveries take their `seq` in the order written (the output list, and so
        // `nextval`, is computed after the sort); unordered ones none.
        sqlx::query(
            "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status,
             attempts_made, next_attempt_at, created_at, updated_at, lease, locked_until,
             ordering_key, seq)
             SELECT id, account_id, event_id, event_type, webhook_id, 'pending', 0, $6, $6, $6,
                    lease, locked_until, ordering_key,
                    CASE WHEN ordering_key IS NOT NULL THEN nextval('delivery_seq') END
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::text[],
                         $8::int8[], $9::text[]) WITH ORDINALITY
                  AS d(id, account_id, event_id, event_type, webhook_id, lease, locked_until,
                       ordering_key, n)
             ORDER BY n",
        )
        .bind(ids)
        .bind(accounts)
        .bind(event_ids)
        .bind(types)
        .bind(webhooks)
        .bind(now.millis())
        .bind(leases)
        .bind(locked_until)
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    }
    Ok(counts)
}

/// The active webhooks of `accounts` (and the own webhooks of `jobs`), enough to match events.
async fn candidates(
    conn: &mut PgConnection,
    accounts: &[&str],
    jobs: &[&str],
) -> StoreResult<Vec<Candidate>> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, account_id, events, kind, job_id, ordering, paused_until, probe_at {CANDIDATES}"
    )))
    .bind(accounts)
    .bind(jobs)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(
            |(id, account_id, events, kind, job_id, ordering, paused_until, probe_at)| {
                Ok(Candidate {
                    kind: WebhookKind::parse(&kind)
                        .ok_or_else(|| corrupt("webhook kind", &kind))?,
                    ordering: WebhookOrdering::parse(&ordering)
                        .ok_or_else(|| corrupt("webhook ordering", &ordering))?,
                    filters: rows::filters_from_json(&events)?,
                    id,
                    account_id,
                    job_id,
                    held: rows::held(paused_until, probe_at),
                    webhook: None,
                })
            },
        )
        .collect()
}

/// As [`candidates`], each with the whole webhook (secrets opened), to hand deliveries over.
async fn whole_candidates(
    conn: &mut PgConnection,
    accounts: &[&str],
    jobs: &[&str],
    sealer: &Sealer,
) -> StoreResult<Vec<Candidate>> {
    let rows: Vec<WebhookColumns> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} {CANDIDATES}"
    )))
    .bind(accounts)
    .bind(jobs)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok(Candidate::of(r.into_webhook(sealer)?)))
        .collect()
}

/// Where the candidate webhooks of a group's accounts ($1) and jobs ($2) come from.
const CANDIDATES: &str = "FROM webhooks
     WHERE account_id = ANY($1) AND status = 'active' AND deleted_at IS NULL
       AND (kind <> 'job' OR job_id = ANY($2))
     ORDER BY id";
