//! The API's resources: list order and cursors, deleting a webhook, retention.

use super::*;

/// Checks that paging through `list` with `limit` returns `all` newest first, each once.
async fn pages<F, Fut>(all: &[String], limit: u32, mut list: F)
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = (Vec<String>, Option<String>)>,
{
    let mut expected = all.to_vec();
    expected.sort();
    expected.reverse();
    let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let (ids, next) = list(PageRequest { after, limit }).await;
        assert!(
            ids.len() <= limit as usize && !ids.is_empty(),
            "page {pages}: {ids:?}"
        );
        seen.extend(ids);
        pages += 1;
        match next {
            Some(cursor) => {
                assert_eq!(Some(&cursor), seen.last(), "the cursor is the last id");
                after = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(
        pages,
        all.len().div_ceil(limit as usize),
        "no empty last page"
    );
}

async fn lists_run_newest_first_and_cursors_continue_without_gaps_or_repeats(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut hooks = Vec::new();
    for _ in 0..7 {
        hooks.push(f.subscribe(&["*"]).await.id.to_string());
    }
    let (store, account) = (&f.store, &f.account);
    pages(&hooks, 3, |page| async move {
        let p = store.list_webhooks(account, &page).await.unwrap();
        (
            p.items.into_iter().map(|w| w.id.to_string()).collect(),
            p.next_cursor,
        )
    })
    .await;
    // One webhook gets the events, so each event makes one delivery.
    for id in &hooks[1..] {
        let id = WebhookId::from_trusted(id.clone());
        assert!(
            store
                .delete_webhook(None, &id, Timestamp::now())
                .await
                .unwrap()
        );
    }
    let events: Vec<NewEvent> = (0..6).map(|_| f.event("order.created")).collect();
    let event_ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    f.publish(events).await;
    let query = EventQuery {
        account: Some(f.account.clone()),
        ..EventQuery::default()
    };
    pages(&event_ids, 3, |page| {
        let query = query.clone();
        async move {
            let p = store.list_events(&query, &page).await.unwrap();
            (
                p.items.into_iter().map(|e| e.id.to_string()).collect(),
                p.next_cursor,
            )
        }
    })
    .await;
    let deliveries: Vec<String> = f
        .deliveries(DeliveryQuery::default())
        .await
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(deliveries.len(), 6);
    pages(&deliveries, 4, |page| async move {
        let p = store
            .list_deliveries(&DeliveryQuery::default(), &page)
            .await
            .unwrap();
        (
            p.items.into_iter().map(|d| d.id.to_string()).collect(),
            p.next_cursor,
        )
    })
    .await;
    let mut accounts = vec![f.account.to_string()];
    for n in 0..4 {
        accounts.push(
            add_account(store, &format!("account {n}"))
                .await
                .to_string(),
        );
    }
    pages(&accounts, 2, |page| async move {
        let p = store.list_accounts(&page).await.unwrap();
        (
            p.items.into_iter().map(|a| a.id.to_string()).collect(),
            p.next_cursor,
        )
    })
    .await;
}

async fn retention_prunes_finished_events_and_keeps_pending_ones(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("a.x"), f.event("b.x")]).await;
    let t0 = Timestamp::now();
    let claims = f.claim(t0, 10, 10).await;
    let done = claims.iter().find(|c| c.event.event_type == "a.x").unwrap();
    let pending = claims.iter().find(|c| c.event.event_type == "b.x").unwrap();
    f.record(&[result(done, 200, NextStep::Succeeded, t0)], t0)
        .await;
    let later = Timestamp::now().plus(Duration::from_secs(1));
    let batch = PruneEvents {
        created_before: later,
        finished_before: later,
        after: None,
        limit: 100,
    };
    let pruned = f.store.prune_events(&batch).await.unwrap();
    assert_eq!(
        (pruned.events, pruned.deliveries, pruned.attempts),
        (1, 1, 1)
    );
    assert_eq!(pruned.next, None);
    assert!(
        f.store
            .get_event(None, &done.event.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .get_event(None, &pending.event.id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(f.deliveries(DeliveryQuery::default()).await.len(), 1);
}

async fn deleting_a_webhook_cancels_its_pending_deliveries(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    f.publish(vec![f.event("a.x"), f.event("a.y")]).await;
    assert!(
        f.store
            .delete_webhook(Some(&f.account), &hook.id, Timestamp::now())
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .delete_webhook(None, &hook.id, Timestamp::now())
            .await
            .unwrap()
    );
    let statuses: Vec<_> = f
        .deliveries(DeliveryQuery::default())
        .await
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(
        statuses,
        [DeliveryStatus::Cancelled, DeliveryStatus::Cancelled]
    );
    assert!(f.claim(Timestamp::now(), 10, 10).await.is_empty());
    let depth = f.store.queue_depth(Timestamp::now()).await.unwrap();
    assert_eq!((depth.due, depth.scheduled), (0, 0));
}

async fn api_keys_are_found_until_revoked_and_listed_newest_first(backend: Backend) {
    let f = Fixture::new(backend).await;
    let other = add_account(&f.store, "Other").await;
    let mut keys = Vec::new();
    for i in 0..4 {
        let key = NewApiKey {
            id: ApiKeyId::generate(),
            account_id: f.account.clone(),
            hash: format!("{i:064x}"),
            prefix: format!("hk_key{i:03}"),
            name: format!("key {i}"),
            created_at: Timestamp::now(),
        };
        f.store.create_api_key(&key).await.unwrap();
        let found = f.store.find_api_key(&key.hash).await.unwrap().unwrap();
        assert_eq!((&found.id, &found.account_id), (&key.id, &f.account));
        assert_eq!(found.hash, key.hash);
        keys.push(key);
    }
    let (store, account) = (&f.store, &f.account);
    let listed = store
        .list_api_keys(
            account,
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .items;
    let all: Vec<String> = listed.iter().map(|k| k.id.to_string()).collect();
    assert_eq!(all.len(), 5, "the first key and four more");
    pages(&all, 2, |page| async move {
        let p = store.list_api_keys(account, &page).await.unwrap();
        (
            p.items.into_iter().map(|k| k.id.to_string()).collect(),
            p.next_cursor,
        )
    })
    .await;
    let shown = listed.iter().find(|k| k.id == keys[2].id).unwrap();
    assert_eq!(
        (shown.name.as_str(), shown.prefix.as_str()),
        ("key 2", "hk_key002")
    );
    assert_eq!((shown.last_used_at, shown.revoked_at), (None, None));

    // Revoking: not found from then on; once revoked it stays revoked as it was.
    let now = Timestamp::from_millis(Timestamp::now().millis());
    assert!(
        store
            .revoke_api_key(&other, &keys[0].id, now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_api_key(&keys[0].hash).await.unwrap().is_some());
    let revoked = store
        .revoke_api_key(account, &keys[0].id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(now));
    assert!(store.find_api_key(&keys[0].hash).await.unwrap().is_none());
    let again = store
        .revoke_api_key(account, &keys[0].id, now.plus(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(now),
        "the first revocation's time stays"
    );
    assert!(store.find_api_key(&keys[1].hash).await.unwrap().is_some());

    // A key's last use only moves forward.
    store.touch_api_key(&keys[1].id, now).await.unwrap();
    store
        .touch_api_key(&keys[1].id, now.minus(Duration::from_secs(60)))
        .await
        .unwrap();
    let listed = store
        .list_api_keys(
            account,
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .items;
    let used = listed.iter().find(|k| k.id == keys[1].id).unwrap();
    assert_eq!(used.last_used_at, Some(now));
}

async fn endpoint_figures_add_up_per_minute_and_old_minutes_are_pruned(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    f.publish((0..4).map(|_| f.event("tts.completed")).collect())
        .await;
    let now = Timestamp::from_millis(Timestamp::now().millis());
    let claims = f.claim(now, 10, 10).await;
    assert_eq!(claims.len(), 4);
    let old = now.minus(Duration::from_secs(8 * 86_400));
    let (ok, failed) = (NextStep::Succeeded, NextStep::Failed);
    // Two batches, each with a result in the old minute and one now: the second adds to the
    // rows the first stored.
    f.record(
        &[
            result(&claims[0], 200, ok, old),
            result(&claims[2], 200, ok, now),
        ],
        now,
    )
    .await;
    f.record(
        &[
            result(&claims[1], 500, failed, old),
            result(&claims[3], 503, failed, now),
        ],
        now,
    )
    .await;
    let all = f
        .store
        .webhook_stats(&hook.id, old.minus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        (all.attempts, all.successes, all.failures.status_5xx),
        (4, 2, 2)
    );
    assert_eq!(
        all.last_error.as_ref().map(|e| e.1.as_str()),
        Some("HTTP 503")
    );
    let recent = f
        .store
        .webhook_stats(&hook.id, now.minus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        (recent.attempts, recent.successes, recent.failed()),
        (2, 1, 1)
    );
    assert_eq!(recent.last_error, Some((now, "HTTP 503".to_owned())));

    let week = now.minus(Duration::from_secs(7 * 86_400));
    assert_eq!(
        f.store.prune_stats(week, 100).await.unwrap(),
        1,
        "the old minute's row"
    );
    assert_eq!(f.store.prune_stats(week, 100).await.unwrap(), 0);
    let left = f
        .store
        .webhook_stats(&hook.id, old.minus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(left, recent, "the recent minute is kept");
}

contract!(
    endpoint_figures_add_up_per_minute_and_old_minutes_are_pruned,
    api_keys_are_found_until_revoked_and_listed_newest_first,
    lists_run_newest_first_and_cursors_continue_without_gaps_or_repeats,
    retention_prunes_finished_events_and_keeps_pending_ones,
    deleting_a_webhook_cancels_its_pending_deliveries,
);

/// The lock file beside a SQLite database keeps a second store (a second process) off it, and
/// the error names the lock file.
#[tokio::test]
async fn a_second_store_on_a_sqlite_file_in_use_is_refused_naming_the_lock_file() {
    let f = Fixture::new(Backend::Sqlite).await;
    let second = store::open(&f._env.database_url, 8, Default::default()).await;
    match second {
        Err(StoreError::Locked { lock, .. }) => {
            assert_eq!(lock, f._env.dir.path().join("herald.db.lock"));
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second store opened on a file in use"),
    }
}
