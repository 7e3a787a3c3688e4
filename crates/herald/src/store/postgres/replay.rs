//! Replaying what a webhook missed, on PostgreSQL: a page of the account's events at a time, each
//! page one transaction under an advisory lock of the webhook's, so calls on several nodes at
//! once take turns and each finds the deliveries the others made.

use super::{CHANNEL, PgStore};
use crate::domain::DeliveryId;
use crate::store::{PageEvent, ReplayMissing, ReplayPage, StoreResult};

impl PgStore {
    pub(super) async fn replay_page(&self, request: &ReplayMissing) -> StoreResult<ReplayPage> {
        let webhook = request.webhook.id.as_str();
        let account = request.webhook.account_id.as_str();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(webhook)
            .execute(&mut *tx)
            .await?;
        let events: Vec<PageEvent> = sqlx::query_as(
            "SELECT e.id, e.type, EXISTS (SELECT 1 FROM deliveries d
                                          WHERE d.event_id = e.id AND d.webhook_id = $3),
                    e.ordering_key
             FROM events e WHERE e.account_id = $1 AND e.id > $2 AND e.created_at >= $4
             ORDER BY e.id LIMIT $5",
        )
        .bind(account)
        .bind(request.start_after())
        .bind(webhook)
        .bind(request.since.millis())
        .bind(request.limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let (missing, next) = request.missing(&events);
        if !request.dry_run && !missing.is_empty() {
            let ids: Vec<String> = missing
                .iter()
                .map(|_| DeliveryId::generate().to_string())
                .collect();
            let events: Vec<&str> = missing.iter().map(|e| e.0.as_str()).collect();
            let kinds: Vec<&str> = missing.iter().map(|e| e.1.as_str()).collect();
            let keys: Vec<Option<String>> = missing
                .iter()
                .map(|e| request.delivery_key(e.3.as_deref()))
                .collect();
            // Ordered ones in event order (see publish.rs), after everything published so far.
            sqlx::query(
                "INSERT INTO deliveries (id, account_id, event_id, event_type, webhook_id, status,
                 attempts_made, next_attempt_at, created_at, updated_at, ordering_key, seq)
                 SELECT id, $4, event_id, event_type, $5, 'pending', 0, $6, $6, $6, ordering_key,
                        CASE WHEN ordering_key IS NOT NULL THEN nextval('delivery_seq') END
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $7::text[]) WITH ORDINALITY
                      AS d(id, event_id, event_type, ordering_key, n)
                 ORDER BY n",
            )
            .bind(ids)
            .bind(events)
            .bind(kinds)
            .bind(account)
            .bind(webhook)
            .bind(request.now.millis())
            .bind(keys)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ReplayPage {
            missing: missing.len() as u64,
            next,
        })
    }
}
