//! Claiming due deliveries on SQLite: the candidates are read on a reader connection, so the
//! scan never holds up the writer; the writer thread then leases those still due, in its next
//! round, and reads them back with their events and webhooks.
//!
//! The candidates come webhook by webhook when some webhook is left out (at its cap, or closed
//! by its gates) and the webhooks with pending work, all listed, have less room between them
//! than the claim asks: the due-order window would walk the left-out backlogs in the due index
//! to find none of theirs, a down endpoint's whole backlog on every claim. Otherwise they come
//! in due order, which still walks those backlogs where the window does not fill, and webhook
//! by webhook where webhooks reaching their cap within the window crowd it
//! (docs/architecture.md §4).
//!
//! A listener webhook (`herald listen`) counts as claimable only for the node holding its stream
//! (`listener_node`), as on PostgreSQL; with SQLite there is one node, so this only keeps a
//! restarted server (a new node id) from claiming for a stream it does not hold.
//!
//! An ordered delivery is a candidate only while it heads its key ([`heads_its_key`]). The
//! writer checks that again when it leases: the candidates were read outside its transaction,
//! and a delivery re-queued meanwhile may now come before one of them. With one writer, the
//! lease and the results that end a head are serialised, so no two of a key are ever leased.

use super::SqliteStore;
use super::batch::Batch;
use super::writer::Write;
use crate::domain::{DeliveryId, Timestamp, Webhook};
use crate::store::ordering::heads_its_key;
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns, event_from_rusqlite};
use crate::store::seal::Sealer;
use crate::store::{Claim, ClaimRequest, ClaimedDelivery, FlowRow, Gates, Picker, StoreResult};
use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use std::sync::LazyLock;
use tokio::sync::oneshot;

/// Candidates in due order: due ($1), free, of active webhooks (listeners of this node, $3) not
/// at their cap or closed by their gates ($4, a JSON array), heading their key if ordered; at
/// most $2.
static DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.id, d.webhook_id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
           AND (d.locked_until IS NULL OR d.locked_until <= ?1) AND w.status = 'active'
           AND (w.listener_node IS NULL OR w.listener_node = ?3)
           AND d.webhook_id NOT IN (SELECT value FROM json_each(?4)) AND {}
         ORDER BY d.next_attempt_at LIMIT ?2",
        heads_its_key("?1")
    )
});

/// As [`DUE`], for one webhook ($1): due at $2, at most $3, this node $4.
static DUE_OF_WEBHOOK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.id, d.webhook_id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2
           AND (d.locked_until IS NULL OR d.locked_until <= ?2) AND w.status = 'active'
           AND (w.listener_node IS NULL OR w.listener_node = ?4) AND {}
         ORDER BY d.next_attempt_at LIMIT ?3",
        heads_its_key("?2")
    )
});

/// Deliveries a claim picked (on a reader connection) to lease to this node.
pub(super) struct LeaseRequest {
    pub picked: Vec<String>,
    pub lease: String,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    /// The gates the picks were made within: the lease step takes the rate-limited webhooks'
    /// allowances and the circuits' probes.
    pub gates: Gates,
    pub probe_interval: std::time::Duration,
    pub reply: oneshot::Sender<StoreResult<Claim>>,
}

impl SqliteStore {
    /// [`crate::store::Queue::claim_due`] on SQLite: candidates are read on a reader, and the
    /// writer leases those still due. Webhooks under flow control count as their gates say
    /// ([`Gates`]): one process claims on SQLite, so the gates read here still hold when the
    /// writer takes their allowances in the lease step.
    pub(super) async fn claim_gated(&self, req: &ClaimRequest) -> StoreResult<Claim> {
        if req.limit == 0 {
            return Ok(Claim::default());
        }
        // Candidates are read on a reader connection: the scan never holds up the writer.
        let mut conn = self.reader.acquire().await?;
        let flows: Vec<FlowRow> = sqlx::query_as(AssertSqlSafe(FLOW_ROWS.as_str()))
            .fetch_all(&mut *conn)
            .await?;
        let gates = Gates::of(&flows, None, req.now.millis());
        let req = &gates.narrow(req);
        // Closed webhooks count as at their cap: both are left out of the due window, which a
        // backlog at its cap would otherwise fill.
        let full = crate::store::saturated_webhooks(req);
        let mut picker = Picker::new(req);
        // With webhooks left out, the due-order scan walks their due deliveries to find none
        // of theirs: all of a down endpoint's, on every claim. So when the webhooks with
        // pending work have less room between them than the claim asks, each one's room is
        // taken from its own index instead (as on PostgreSQL); with more, no choice is lost
        // by the due order. Every active webhook not left out has room for one at least, so the
        // listing stops at the limit and those left out, one more, of the active ones: one cut
        // there (or at 1,000 in all) takes the due window.
        let mut hooks = None;
        if !full.is_empty() {
            let enough = (req.limit + full.len() + 1) as i64;
            let listed = pending_webhooks(&mut conn, &req.node, enough).await?;
            // Each webhook's room counts at most the limit, so the sum is short of the limit
            // exactly when their rooms are.
            let room: usize = listed.active.iter().map(|h| picker.room_of(h)).sum();
            if listed.all && room < req.limit {
                claim_per_webhook(&mut conn, &mut picker, listed.active).await?;
                drop(conn);
                return self.lease_picked(req, picker.picked(), gates).await;
            }
            hooks = listed.all.then_some(listed.active);
        }
        let full = serde_json::to_string(&full).expect("strings serialize");
        // The claim's size first, in due order: where no webhook reaches its cap, that is all
        // it takes (with 50 busy webhooks, the window read four times what the claim took).
        // Only a claim the caps left short reads the whole window. Each read is read whole: a
        // statement left half-read could keep its reader's snapshot open.
        let window = req.limit * 4;
        let mut read = 0;
        for size in [req.limit, window] {
            let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(DUE.as_str()))
                .bind(req.now.millis())
                .bind(size as i64)
                .bind(&req.node)
                .bind(&full)
                .fetch_all(&mut *conn)
                .await?;
            read = rows.len();
            for (delivery, webhook) in &rows {
                picker.offer(delivery, webhook);
            }
            if picker.is_full() || read < size {
                break;
            }
        }
        if read == window && !picker.is_full() {
            // The due window is crowded by webhooks that reach their cap within it (a busy
            // endpoint's backlog): look webhook by webhook, so that backlog never hides the
            // others' due work.
            let hooks = match hooks {
                Some(hooks) => hooks,
                None => {
                    pending_webhooks(&mut conn, &req.node, MAX_WEBHOOKS_PER_CLAIM)
                        .await?
                        .active
                }
            };
            claim_per_webhook(&mut conn, &mut picker, hooks).await?;
        }
        drop(conn);
        self.lease_picked(req, picker.picked(), gates).await
    }

    /// Has the writer lease what the claim picked (those still due) and read them back.
    async fn lease_picked(
        &self,
        req: &ClaimRequest,
        picked: Vec<(String, String)>,
        gates: Gates,
    ) -> StoreResult<Claim> {
        if picked.is_empty() {
            return Ok(Claim::left(Vec::new(), gates.after([])));
        }
        let (reply, answer) = oneshot::channel();
        let request = LeaseRequest {
            picked: picked.into_iter().map(|(d, _)| d).collect(),
            lease: uuid::Uuid::new_v4().simple().to_string(),
            now: req.now,
            lease_until: req.lease_until,
            gates,
            probe_interval: req.probe_interval,
            reply,
        };
        self.write(Write::Lease(request), answer).await
    }
}

/// The flow-control columns of the webhooks that have any (see [`Gates`]), by the partial index
/// `webhooks_flow`.
static FLOW_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, paused_until, rate_limit, rate_tat, probe_at FROM webhooks WHERE {}",
        crate::store::flow::UNDER_FLOW_CONTROL
    )
});

/// Most webhooks one claim looks at one by one.
const MAX_WEBHOOKS_PER_CLAIM: i64 = 1000;

/// The webhooks with pending work, listed by a loose index scan over
/// `deliveries_pending_by_webhook` (one index seek each): at most `active_max` of those active
/// and claimable by this node, and at most [`MAX_WEBHOOKS_PER_CLAIM`] in all.
struct PendingWebhooks {
    /// Those active and claimable by this node.
    active: Vec<String>,
    /// Whether the listing holds them all (it was not cut).
    all: bool,
}

/// The listing: each step takes the next webhook with pending work (`k` counts them, `n` the
/// active ones before it); a last row with no webhook says the listing is whole.
const PENDING_WEBHOOKS: &str = "WITH RECURSIVE hooks(id, k, n) AS (
       SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' ORDER BY webhook_id LIMIT 1), 1, 0
       UNION ALL
       SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' AND webhook_id > hooks.id
               ORDER BY webhook_id LIMIT 1), k + 1,
              n + (SELECT count(*) FROM webhooks w WHERE w.id = hooks.id AND w.status = 'active'
                   AND (w.listener_node IS NULL OR w.listener_node = ?2))
       FROM hooks WHERE hooks.id IS NOT NULL AND k < ?1 AND n < ?3)
     SELECT h.id, coalesce(w.status = 'active' AND (w.listener_node IS NULL OR w.listener_node = ?2), 0)
     FROM hooks h LEFT JOIN webhooks w ON w.id = h.id";

async fn pending_webhooks(
    conn: &mut sqlx::SqliteConnection,
    node: &str,
    active_max: i64,
) -> StoreResult<PendingWebhooks> {
    let listed: Vec<(Option<String>, bool)> = sqlx::query_as(PENDING_WEBHOOKS)
        .bind(MAX_WEBHOOKS_PER_CLAIM)
        .bind(node)
        .bind(active_max)
        .fetch_all(&mut *conn)
        .await?;
    Ok(PendingWebhooks {
        all: listed.iter().any(|(id, _)| id.is_none()),
        active: listed
            .into_iter()
            .filter_map(|(id, active)| id.filter(|_| active))
            .collect(),
    })
}

/// Adds to `picked`, up to the limit, due deliveries of `hooks` (webhooks with pending work)
/// that have room, looked up webhook by webhook through `deliveries_pending_by_webhook`, in
/// random order for fairness.
async fn claim_per_webhook(
    conn: &mut sqlx::SqliteConnection,
    picker: &mut Picker<'_>,
    mut hooks: Vec<String>,
) -> StoreResult<()> {
    {
        use rand::seq::SliceRandom;
        hooks.shuffle(&mut rand::rng());
    }
    let req = picker.request();
    for hook in hooks {
        if picker.is_full() {
            break;
        }
        let room = picker.room_of(&hook);
        if room == 0 {
            continue;
        }
        let due: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(DUE_OF_WEBHOOK.as_str()))
            .bind(&hook)
            .bind(req.now.millis())
            .bind((room + req.per_webhook_cap) as i64)
            .bind(&req.node)
            .fetch_all(&mut *conn)
            .await?;
        for (delivery, webhook) in &due {
            picker.offer(delivery, webhook);
        }
    }
    Ok(())
}

/// Leases the picked deliveries, if still pending, due and free (they were read outside this
/// transaction), and reads them back with their events and webhooks.
fn push_lease(batch: &mut Batch, l: &LeaseRequest) {
    let picked = serde_json::to_string(&l.picked).expect("strings serialize");
    let lease = batch.arg(l.lease.clone());
    let until = batch.arg(l.lease_until.millis());
    let ids = batch.arg(picked.clone());
    let now = batch.arg(l.now.millis());
    let due = batch.arg(l.now.millis());
    let head_now = batch.arg(l.now.millis());
    // Still due too: a late result of an expired lease may have set a later retry meanwhile.
    // Still its key's head too: a re-queued delivery may have come before it meanwhile.
    batch.push(&format!(
        "UPDATE deliveries AS d SET lease = {lease}, locked_until = {until}
         WHERE d.id IN (SELECT value FROM json_each({ids}))
           AND d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until <= {now})
           AND d.next_attempt_at <= {due} AND {}",
        heads_its_key(head_now)
    ));
    let ids = batch.arg(picked);
    let lease = batch.arg(l.lease.clone());
    batch.push(&format!(
        "SELECT d.id AS d_id, d.attempts_made AS d_attempts_made,
                e.id AS e_id, e.account_id AS e_account_id, e.type AS e_type, e.timestamp AS e_timestamp, e.data AS e_data,
                {}
         FROM deliveries d JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.id IN (SELECT value FROM json_each({ids})) AND d.lease = {lease}
         ORDER BY d.next_attempt_at",
        WEBHOOK_COLUMNS
            .split(", ")
            .map(|c| format!("w.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

/// On the writer's connection, in its round: leases the picked deliveries still due, and reads
/// them back with their events and webhooks. Each webhook is decoded (and its secrets opened)
/// once per claim, not once per delivery: a claim is mostly a few webhooks' backlog.
pub(super) fn lease(
    conn: &rusqlite::Connection,
    request: &LeaseRequest,
    sealer: &Sealer,
) -> StoreResult<Claim> {
    let mut batch = Batch::new();
    push_lease(&mut batch, request);
    let mut webhooks: HashMap<String, Webhook> = HashMap::new();
    let deliveries: Vec<ClaimedDelivery> = batch.query(conn, |row| {
        let id: String = row.get("id")?;
        let webhook = match webhooks.get(&id) {
            Some(w) => w.clone(),
            None => {
                let w = WebhookColumns::from_rusqlite(row)?.into_webhook(sealer)?;
                webhooks.insert(id, w.clone());
                w
            }
        };
        Ok(ClaimedDelivery {
            delivery_id: DeliveryId::from_trusted(row.get("d_id")?),
            lease: request.lease.clone(),
            attempt_number: row.get::<_, i64>("d_attempts_made")? as u32 + 1,
            event: event_from_rusqlite(row, "e_")?,
            webhook,
        })
    })?;
    // The allowances and probes taken, in the same transaction as the leases.
    let after = request
        .gates
        .after(deliveries.iter().map(|d| d.webhook.id.as_str()));
    let next_probe = request.now.plus(request.probe_interval).millis();
    for write in after.written() {
        conn.prepare_cached(
            "UPDATE webhooks SET rate_tat = coalesce(?2, rate_tat),
             probe_at = CASE WHEN ?3 THEN ?4 ELSE probe_at END WHERE id = ?1",
        )?
        .execute(rusqlite::params![
            write.webhook,
            write.taken.map(|t| t.tat),
            write.probed,
            next_probe
        ])?;
    }
    Ok(Claim::left(deliveries, after))
}
