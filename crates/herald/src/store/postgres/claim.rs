//! Claiming due deliveries on PostgreSQL: one listing of the webhooks with pending work, then
//! one statement that picks, locks (`FOR UPDATE SKIP LOCKED`), leases and returns the claimed
//! deliveries with their events and webhooks.
//!
//! Why it is shaped so (pass 4 of docs/BENCHMARKS.md measured the claims before): a due-order scan
//! joined with `webhooks` was planned as "every due delivery, then sort", so each claim read and
//! sorted the whole backlog to lock a window of 4 × the claim size and keep at most the
//! webhook's room. Now a claim locks only what it may take: when the webhooks with due work have
//! less room between them than the claim asks for (one busy endpoint, a few), each webhook's
//! room is taken from its own index (`deliveries_pending_by_webhook`), oldest first; with more
//! room than that, one due-order window of the claim's size, the per-webhook cap applied inside
//! the statement.
//!
//! Every table access of a claim is an index lookup or an ordered index scan that stops at the
//! `LIMIT`, and the claim's transaction tells the planner so (`enable_seqscan` and
//! `enable_bitmapscan` off, custom plans): with the statistics of a table that has just grown
//! (estimates of a dozen due rows among tens of thousands), or with a generic plan that cannot
//! see how small the `LIMIT` is, it chose a bitmap scan of every due row and a sort again.
//!
//! The webhooks under flow control (a rate limit, a pause, an open circuit) get their gates from
//! the listing of the webhooks with pending work; when that listing is cut at
//! `MAX_WEBHOOKS_PER_CLAIM`, the claim also reads every gated webhook with pending work (by a
//! partial index), since the due-order window may pick deliveries of webhooks past the cut.
//!
//! A listener webhook (`herald listen`) counts as claimable only for the node holding its stream
//! (`listener_node`): every other node sees it as it sees a disabled webhook, left out.
//!
//! An ordered delivery is picked only while it heads its key ([`heads_its_key`]), and that holds
//! across nodes under READ COMMITTED with `SKIP LOCKED`, because of how a key's deliveries move:
//! - Each claim statement reads one snapshot, in which a key has at most one head: the pending
//!   delivery with the smallest `seq`, and only if no other of the key is leased. A head stays
//!   `pending` while it is leased and retried, so in every committed state the next one is not a
//!   head; it becomes one only when a result commits the head `succeeded` or `failed`.
//! - Two nodes that see the same head race for its row lock: one locks it, the other skips it
//!   (`SKIP LOCKED`); if the first has committed by the time the second reaches the row, the
//!   row is re-checked in its new version (`locked_until` is now ahead) and left out. Either
//!   way one lease.
//! - A snapshot taken before a head's result commits still sees it pending: that claim leaves
//!   the next one alone (a later claim takes it; the node that wrote the result is woken by it).
//!   One taken after sees the result and the next head. No snapshot shows two heads of a key.
//! - `seq` comes from one sequence, so a publish made after another was answered has the larger
//!   one, whichever node took it. Two publishes that race have no order to keep; should the later
//!   `seq` commit first and be leased, the other waits for it (the "in flight" test).
//!
//! A claim that finds fewer heads than its room reads the webhook's whole ordered backlog to know
//! there are no more; a `fifo` webhook has one head at most, so its room is one (none while this
//! node holds its head), and the scan usually stops at its first row.

use super::PgStore;
use crate::domain::DeliveryId;
use crate::store::ordering::heads_its_key;
use crate::store::rows::{WEBHOOK_COLUMNS, WebhookColumns, event_from_row};
use crate::store::{Claim, ClaimRequest, ClaimedDelivery, FlowRow, Gates, Locking, StoreResult};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashSet;
use std::sync::LazyLock;

/// Most webhooks one claim lists; with more, the claim takes the due-order window.
const MAX_WEBHOOKS_PER_CLAIM: i64 = 1000;

/// A claim's transaction: its commit needs no WAL flush (see [`PgStore::relaxed_begin`]), and
/// its statements are planned for their actual parameters, as index scans (see above).
const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off; \
                           SET LOCAL plan_cache_mode = force_custom_plan; \
                           SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off";

/// The webhooks with pending deliveries (leased or not, due or not), whether each is active and
/// claimable by this node ($2), and whether it is `fifo` (one delivery at a time): a loose index
/// scan over `deliveries_pending_by_webhook`, one index seek per webhook.
const PENDING_WEBHOOKS: &str = "WITH RECURSIVE hooks(id, n) AS (
       (SELECT webhook_id, 1 FROM deliveries WHERE status = 'pending' ORDER BY webhook_id LIMIT 1)
       UNION ALL
       SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' AND webhook_id > hooks.id
               ORDER BY webhook_id LIMIT 1), n + 1
       FROM hooks WHERE hooks.id IS NOT NULL AND n < $1)
     SELECT h.id, w.status = 'active' AND (w.listener_node IS NULL OR w.listener_node = $2) AS active,
            w.ordering = 'fifo' AS fifo, w.paused_until, w.rate_limit, w.rate_tat, w.probe_at,
            w.rate_node, w.rate_node_until
     FROM hooks h JOIN webhooks w ON w.id = h.id";

/// The flow-control columns of the active webhooks under flow control with pending work,
/// claimable by this node ($1), by the partial index `webhooks_flow`. Read when
/// [`PENDING_WEBHOOKS`] was cut at its limit: the due-order window may then pick deliveries of
/// webhooks it did not list, and each of them must be held to its gate.
static GATED_WEBHOOKS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT w.id, w.paused_until, w.rate_limit, w.rate_tat, w.probe_at, w.rate_node,
           w.rate_node_until FROM webhooks w
         WHERE {} AND w.status = 'active' AND (w.listener_node IS NULL OR w.listener_node = $1)
           AND EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.webhook_id = w.id AND d.status = 'pending')",
        crate::store::flow::UNDER_FLOW_CONTROL
    )
});

/// A row of [`PENDING_WEBHOOKS`].
#[derive(sqlx::FromRow)]
struct ListedWebhook {
    #[sqlx(flatten)]
    flow: FlowRow,
    active: bool,
    fifo: bool,
}

/// The flow-control columns of the rate-limited webhooks and those whose circuit's probe is due
/// ($1), locked for the claim's transaction (see [`crate::store::Gates`]): two nodes never take
/// the same allowance or probe. A row another claim holds is skipped, not waited for.
const LOCK_GATED: &str = "SELECT id, paused_until, rate_limit, rate_tat, probe_at, rate_node,
       rate_node_until FROM webhooks WHERE id = ANY($1) FOR UPDATE SKIP LOCKED";

/// What a claim writes back, per webhook ($1): a rate-limited one's new theoretical arrival time
/// ($2, if it took deliveries) and this node ($5) as the allowance's holder until $6, the next
/// probe ($4) if it took its circuit's probe ($3).
const WRITE_GATES: &str = "UPDATE webhooks w SET rate_tat = COALESCE(v.tat, w.rate_tat),
       probe_at = CASE WHEN v.probed THEN $4 ELSE w.probe_at END,
       rate_node = CASE WHEN v.tat IS NULL THEN w.rate_node ELSE $5 END,
       rate_node_until = COALESCE(v.held_until, w.rate_node_until)
     FROM UNNEST($1::text[], $2::int8[], $3::bool[], $6::int8[]) AS v(id, tat, probed, held_until)
     WHERE w.id = v.id";

/// `picked` for a claim webhook by webhook: up to `room` ($5) due deliveries of each webhook
/// ($4), oldest first, skipping rows another claim holds; listener webhooks of this node ($6)
/// only; ordered ones only while they head their key.
fn pick_by_webhook() -> String {
    format!(
        "picked AS (
       SELECT d.id FROM UNNEST($4::text[], $5::int8[]) AS h(id, room)
       JOIN webhooks w ON w.id = h.id AND w.status = 'active'
         AND (w.listener_node IS NULL OR w.listener_node = $6)
       CROSS JOIN LATERAL (
         SELECT d.id FROM deliveries d
         WHERE d.webhook_id = h.id AND d.status = 'pending' AND d.next_attempt_at <= $3
           AND (d.locked_until IS NULL OR d.locked_until <= $3) AND {}
         ORDER BY d.next_attempt_at LIMIT h.room
         FOR UPDATE OF d SKIP LOCKED) d)",
        heads_its_key("$3")
    )
}

/// `picked` for a claim in due order: a window of the claim's size ($5) of due deliveries, less
/// those of webhooks left out ($4: at their cap, or not active), skipping rows another claim
/// holds; then each webhook's share cut to its room: the cap ($6) less what it has in flight
/// ($7, $8); listener webhooks of this node ($9) only; ordered ones only while they head their
/// key.
fn pick_in_due_order() -> String {
    format!(
        "due AS (
       SELECT d.id, d.webhook_id, d.next_attempt_at FROM deliveries d
       WHERE d.status = 'pending' AND d.next_attempt_at <= $3
         AND (d.locked_until IS NULL OR d.locked_until <= $3) AND d.webhook_id <> ALL($4::text[])
         AND {}
       ORDER BY d.next_attempt_at LIMIT $5
       FOR UPDATE SKIP LOCKED),
     picked AS (
       SELECT id FROM (
         SELECT due.id,
                row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at) AS n,
                $6 - COALESCE(f.used, 0) AS room
         FROM due JOIN webhooks w ON w.id = due.webhook_id AND w.status = 'active'
           AND (w.listener_node IS NULL OR w.listener_node = $9)
         LEFT JOIN UNNEST($7::text[], $8::int8[]) AS f(id, used) ON f.id = due.webhook_id) ranked
       WHERE n <= room)",
        heads_its_key("$3")
    )
}

/// Leases what `pick` chose (lease $1 until $2) and returns it with its event and webhook. The
/// lookups are `LATERAL … OFFSET 0`, which the planner cannot turn into a hash join that reads
/// all of `events`: a claim reads one event and one webhook per delivery.
fn claim_statement(pick: &str) -> String {
    let webhook = WEBHOOK_COLUMNS
        .split(", ")
        .map(|c| format!("w.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH {pick},
         leased AS (
           UPDATE deliveries d SET lease = $1, locked_until = $2
           WHERE d.id = ANY(ARRAY(SELECT id FROM picked))
           RETURNING d.id, d.attempts_made, d.event_id, d.webhook_id, d.next_attempt_at)
         SELECT d.id AS d_id, d.attempts_made AS d_attempts_made,
                e.id AS e_id, e.account_id AS e_account_id, e.type AS e_type,
                e.timestamp AS e_timestamp, e.data AS e_data, {webhook}
         FROM leased d
         CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = d.event_id OFFSET 0) e
         CROSS JOIN LATERAL (SELECT * FROM webhooks w WHERE w.id = d.webhook_id OFFSET 0) w
         ORDER BY d.next_attempt_at"
    )
}

static CLAIM_BY_WEBHOOK: LazyLock<String> = LazyLock::new(|| claim_statement(&pick_by_webhook()));
static CLAIM_IN_DUE_ORDER: LazyLock<String> =
    LazyLock::new(|| claim_statement(&pick_in_due_order()));

/// Whether the listing of the webhooks with pending work holds them all (it was not cut at
/// [`MAX_WEBHOOKS_PER_CLAIM`]).
fn listed_all(pending: &[PendingWebhook]) -> bool {
    (pending.len() as i64) < MAX_WEBHOOKS_PER_CLAIM
}

/// How one claim picks, from the webhooks with pending work and what is in flight.
#[derive(Debug, PartialEq)]
enum Pick {
    /// No webhook with pending work has room.
    Nothing,
    /// Each of these webhooks up to its room; the rooms add up to at most the claim's limit.
    ByWebhook { hooks: Vec<String>, rooms: Vec<i64> },
    /// A due-order window, leaving out these webhooks.
    InDueOrder { left_out: Vec<String> },
}

/// A webhook with pending work: its id, whether this node may claim for it, and whether it is
/// `fifo`.
type PendingWebhook = (String, bool, bool);

impl Pick {
    fn of(pending: &[PendingWebhook], req: &ClaimRequest) -> Self {
        // A `fifo` webhook has one delivery claimable at most: asking for more would read its
        // whole backlog to find none (see `heads_its_key`).
        let room = |hook: &str, fifo: bool| {
            let cap = if fifo { 1 } else { req.per_webhook_cap };
            cap.saturating_sub(req.in_flight_of(hook))
        };
        let (mut hooks, mut rooms, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
        for (hook, active, fifo) in pending {
            match room(hook, *fifo) {
                r if r > 0 && *active => {
                    hooks.push(hook.clone());
                    rooms.push(r.min(req.limit) as i64);
                }
                _ => left_out.push(hook.clone()),
            }
        }
        let listed_all = listed_all(pending);
        if listed_all && hooks.is_empty() {
            Self::Nothing
        } else if listed_all && rooms.iter().sum::<i64>() <= req.limit as i64 {
            Self::ByWebhook { hooks, rooms }
        } else {
            // Webhooks at their cap that were not listed have no pending work; leaving them out
            // as well costs nothing.
            left_out.extend(crate::store::saturated_webhooks(req));
            Self::InDueOrder { left_out }
        }
    }
}

impl PgStore {
    /// [`crate::store::Queue::claim_due`] on PostgreSQL (see the module's documentation).
    pub(super) async fn claim_due_deliveries(&self, req: &ClaimRequest) -> StoreResult<Claim> {
        if req.limit == 0 {
            return Ok(Claim::default());
        }
        let mut tx = self.pool.begin_with(CLAIM_BEGIN).await?;
        let listed: Vec<ListedWebhook> = sqlx::query_as(PENDING_WEBHOOKS)
            .bind(MAX_WEBHOOKS_PER_CLAIM)
            .bind(&req.node)
            .fetch_all(&mut *tx)
            .await?;
        let (mut pending, mut flows) = (Vec::new(), Vec::new());
        for hook in listed {
            let flow = &hook.flow;
            if hook.active
                && (flow.paused_until.is_some()
                    || flow.rate_limit.is_some()
                    || flow.probe_at.is_some())
            {
                flows.push(flow.clone());
            }
            pending.push((hook.flow.id, hook.active, hook.fifo));
        }
        if !listed_all(&pending) {
            // The gated webhooks past the cut still get their gates.
            let gated: Vec<FlowRow> = sqlx::query_as(AssertSqlSafe(GATED_WEBHOOKS.as_str()))
                .bind(&req.node)
                .fetch_all(&mut *tx)
                .await?;
            let listed: HashSet<&str> = pending.iter().map(|(id, ..)| id.as_str()).collect();
            flows.extend(
                gated
                    .into_iter()
                    .filter(|f| !listed.contains(f.id.as_str())),
            );
        }
        let now = req.now.millis();
        let to_lock: Vec<&str> = flows
            .iter()
            .filter(|f| f.needs_lock(now, &req.node))
            .map(|f| f.id.as_str())
            .collect();
        let locked: Vec<FlowRow> = if to_lock.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(LOCK_GATED)
                .bind(to_lock)
                .fetch_all(&mut *tx)
                .await?
        };
        let locking = Locking {
            locked: &locked,
            node: &req.node,
        };
        let gates = Gates::of(&flows, Some(locking), now);
        let req = &gates.narrow(req);
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let rows = match Pick::of(&pending, req) {
            Pick::Nothing => Vec::new(),
            Pick::ByWebhook { hooks, rooms } => {
                sqlx::query(AssertSqlSafe(CLAIM_BY_WEBHOOK.as_str()))
                    .bind(&lease)
                    .bind(req.lease_until.millis())
                    .bind(req.now.millis())
                    .bind(hooks)
                    .bind(rooms)
                    .bind(&req.node)
                    .fetch_all(&mut *tx)
                    .await?
            }
            Pick::InDueOrder { left_out } => {
                let (in_flight, used): (Vec<String>, Vec<i64>) = req
                    .in_flight
                    .iter()
                    .map(|(hook, n)| (hook.to_string(), *n as i64))
                    .unzip();
                sqlx::query(AssertSqlSafe(CLAIM_IN_DUE_ORDER.as_str()))
                    .bind(&lease)
                    .bind(req.lease_until.millis())
                    .bind(req.now.millis())
                    .bind(left_out)
                    .bind(req.limit as i64)
                    .bind(req.per_webhook_cap as i64)
                    .bind(in_flight)
                    .bind(used)
                    .bind(&req.node)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let after = gates.after(
            rows.iter()
                .map(|row| row.try_get::<&str, _>("id"))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let written = after.written();
        if !written.is_empty() {
            let ids: Vec<&str> = written.iter().map(|w| w.webhook.as_str()).collect();
            let taken = || written.iter().map(|w| w.taken.as_ref());
            let tats: Vec<Option<i64>> = taken().map(|t| t.map(|t| t.tat)).collect();
            let holds: Vec<Option<i64>> = taken().map(|t| t.map(|t| t.held_until)).collect();
            let probed: Vec<bool> = written.iter().map(|w| w.probed).collect();
            sqlx::query(WRITE_GATES)
                .bind(ids)
                .bind(tats)
                .bind(probed)
                .bind(req.now.plus(req.probe_interval).millis())
                .bind(&req.node)
                .bind(holds)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let deliveries = rows
            .iter()
            .map(|row| {
                let webhook: WebhookColumns = sqlx::FromRow::from_row(row)?;
                Ok(ClaimedDelivery {
                    delivery_id: DeliveryId::from_trusted(row.try_get("d_id")?),
                    lease: lease.clone(),
                    attempt_number: row.try_get::<i64, _>("d_attempts_made")? as u32 + 1,
                    event: event_from_row(row, "e_")?,
                    webhook: webhook.into_webhook(&self.sealer)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(Claim::left(deliveries, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Timestamp, WebhookId};
    use std::collections::HashMap;

    fn request(limit: usize, in_flight: &[(&str, usize)]) -> ClaimRequest {
        ClaimRequest {
            now: Timestamp::from_millis(0),
            lease_until: Timestamp::from_millis(1),
            limit,
            per_webhook_cap: 32,
            in_flight: in_flight
                .iter()
                .map(|(w, n)| (WebhookId::from_trusted((*w).to_owned()), *n))
                .collect::<HashMap<_, _>>(),
            node: "test".to_owned(),
            probe_interval: std::time::Duration::from_secs(1),
        }
    }

    fn pending(hooks: &[(&str, bool)]) -> Vec<PendingWebhook> {
        hooks
            .iter()
            .map(|(h, a)| ((*h).to_owned(), *a, false))
            .collect()
    }

    #[test]
    fn one_busy_webhook_is_claimed_up_to_its_room_only() {
        let pick = Pick::of(&pending(&[("wh_a", true)]), &request(64, &[("wh_a", 20)]));
        assert_eq!(
            pick,
            Pick::ByWebhook {
                hooks: vec!["wh_a".to_owned()],
                rooms: vec![12]
            }
        );
    }

    #[test]
    fn webhooks_at_their_cap_or_disabled_leave_nothing_to_claim() {
        let pick = Pick::of(
            &pending(&[("wh_a", true), ("wh_b", false)]),
            &request(64, &[("wh_a", 32)]),
        );
        assert_eq!(pick, Pick::Nothing);
    }

    #[test]
    fn more_room_than_the_claim_takes_the_due_order_window_without_the_full_or_disabled() {
        let pick = Pick::of(
            &pending(&[
                ("wh_a", true),
                ("wh_b", true),
                ("wh_c", true),
                ("wh_d", false),
            ]),
            &request(40, &[("wh_a", 32)]),
        );
        let Pick::InDueOrder { mut left_out } = pick else {
            panic!("expected the due-order window, got {pick:?}");
        };
        left_out.sort();
        left_out.dedup();
        assert_eq!(left_out, ["wh_a", "wh_d"]);
    }

    #[test]
    fn a_fifo_webhook_has_room_for_one_and_none_while_one_is_held() {
        let mut hooks = pending(&[("wh_a", true)]);
        hooks[0].2 = true;
        let pick = Pick::of(&hooks, &request(64, &[]));
        assert_eq!(
            pick,
            Pick::ByWebhook {
                hooks: vec!["wh_a".to_owned()],
                rooms: vec![1]
            }
        );
        assert_eq!(
            Pick::of(&hooks, &request(64, &[("wh_a", 1)])),
            Pick::Nothing
        );
    }

    #[test]
    fn a_room_is_never_above_the_claim_limit() {
        let pick = Pick::of(&pending(&[("wh_a", true)]), &request(5, &[]));
        assert_eq!(
            pick,
            Pick::ByWebhook {
                hooks: vec!["wh_a".to_owned()],
                rooms: vec![5]
            }
        );
    }
}
