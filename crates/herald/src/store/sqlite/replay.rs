//! Replaying what a webhook missed, on SQLite: a page of the account's events at a time, each
//! page one transaction on the writer thread, which also makes a second call wait its turn and
//! then find the deliveries the first one made.

use super::{Commit, SqliteStore};
use crate::domain::DeliveryId;
use crate::store::{PageEvent, ReplayMissing, ReplayPage, StoreResult};

impl SqliteStore {
    pub(super) async fn replay_page(&self, request: &ReplayMissing) -> StoreResult<ReplayPage> {
        let request = request.clone();
        self.write_alone(Commit::Durable, move |tx| {
            let webhook = request.webhook.id.as_str();
            let account = request.webhook.account_id.as_str();
            let events: Vec<PageEvent> = tx
                .prepare_cached(
                    "SELECT e.id, e.type, EXISTS (SELECT 1 FROM deliveries d
                                                  WHERE d.event_id = e.id AND d.webhook_id = ?3),
                            e.ordering_key
                     FROM events e WHERE e.account_id = ?1 AND e.id > ?2 AND e.created_at >= ?4
                     ORDER BY e.id LIMIT ?5",
                )?
                .query_map(
                    (
                        account,
                        request.start_after(),
                        webhook,
                        request.since.millis(),
                        request.limit as i64,
                    ),
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let (missing, next) = request.missing(&events);
            if !request.dry_run {
                let now = request.now.millis();
                // Ordered ones in event order, after everything published so far.
                let mut insert = tx.prepare_cached(
                    "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status,
                     attempts_made, next_attempt_at, created_at, updated_at, ordering_key, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, ?7,
                             CASE WHEN ?7 IS NOT NULL THEN (SELECT last + 1 FROM ordering_seq) END)",
                )?;
                let mut next_seq = tx.prepare_cached(
                    "UPDATE ordering_seq SET last = last + 1",
                )?;
                for (event, kind, _, event_key) in &missing {
                    let id = DeliveryId::generate();
                    let key = request.delivery_key(event_key.as_deref());
                    insert.execute((id.as_str(), account, event, kind, webhook, now, &key))?;
                    if key.is_some() {
                        next_seq.execute([])?;
                    }
                }
            }
            Ok(ReplayPage {
                missing: missing.len() as u64,
                next,
            })
        })
        .await
    }
}
