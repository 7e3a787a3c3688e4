//! Erasing an account: the mark hides the account, refuses its keys and publishes to it, and
//! keeps its deliveries from every claim, at once; batches then delete its rows child first, a
//! delivery only once no lease holds it, and the account row last.

use super::*;
use herald::store::{ErasureMark, ErasureStep};

const BATCH: usize = 3;

/// Runs every step until it has nothing more to delete, as the eraser does; rows per kind.
async fn erase_all(f: &Fixture, now: Timestamp) -> BTreeMap<&'static str, u64> {
    let mut total = BTreeMap::new();
    for step in ErasureStep::ALL {
        loop {
            let erased = f
                .store
                .erase_batch(&f.account, step, now, BATCH)
                .await
                .unwrap()
                .expect("no other node erases");
            *total.entry(step.kind()).or_default() += erased.rows;
            *total.entry("attempts").or_default() += erased.attempts;
            if erased.rows < BATCH as u64 {
                break;
            }
        }
    }
    total
}

async fn a_marked_account_is_gone_at_once_and_its_deliveries_never_claimed(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = f.subscribe(&["*"]).await;
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        account_id: f.account.clone(),
        hash: "a-known-hash".to_owned(),
        prefix: "hk_known0".to_owned(),
        name: "second".to_owned(),
        created_at: Timestamp::now(),
    };
    f.store.create_api_key(&key).await.unwrap();
    let other = add_account(&f.store, "Other").await;
    let other_hook = webhook(&other, &["*"], WebhookKind::Subscription, None);
    f.store.insert_webhook(&other_hook).await.unwrap();
    let data = || serde_json::value::to_raw_value(&serde_json::json!({})).unwrap();
    let for_other = || NewEvent::new(other.clone(), "order.created".to_owned(), data());
    f.publish(vec![f.event("order.created"), for_other()]).await;

    let now = Timestamp::now();
    let mark = f.store.begin_erasure(&f.account, now).await.unwrap();
    assert_eq!(mark, ErasureMark::Marked);
    let again = f.store.begin_erasure(&f.account, now).await.unwrap();
    assert_eq!(again, ErasureMark::AlreadyMarked);
    let unknown = f
        .store
        .begin_erasure(&AccountId::generate(), now)
        .await
        .unwrap();
    assert_eq!(unknown, ErasureMark::NoSuchAccount);
    assert_eq!(
        f.store.accounts_being_erased().await.unwrap(),
        std::slice::from_ref(&f.account)
    );

    assert!(f.store.get_account(&f.account).await.unwrap().is_none());
    let page = PageRequest {
        after: None,
        limit: 200,
    };
    let listed = f.store.list_accounts(&page).await.unwrap().items;
    assert_eq!(listed.iter().map(|a| &a.id).collect::<Vec<_>>(), [&other]);
    assert!(
        f.store
            .find_api_key("a-known-hash")
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.store.get_webhook(None, &hook.id).await.unwrap().is_none());
    let results = f
        .store
        .publish_events(vec![f.event("order.created"), for_other()])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Err(StoreError::UnknownAccount)),
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[1]
            .as_ref()
            .expect("the other account publishes")
            .deliveries,
        1
    );
    let claims = f.claim(Timestamp::now(), 10, 10).await;
    assert_eq!(claims.len(), 2, "the other account's two deliveries");
    assert!(claims.iter().all(|c| c.webhook.id == other_hook.id));
}

async fn rows_go_child_first_leased_deliveries_wait_and_the_account_goes_last(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.subscribe(&["*"]).await;
    f.publish((0..5).map(|_| f.event("order.created")).collect())
        .await;
    let now = Timestamp::now();
    let claims = f.claim(now, 2, 10).await;
    assert_eq!(claims.len(), 2);
    // One attempted (an attempt row, endpoint figures), one still leased.
    let retry = NextStep::RetryAt(now.plus(Duration::from_secs(3600)));
    f.record(&[result(&claims[0], 500, retry, now)], now).await;
    assert_eq!(
        f.store.begin_erasure(&f.account, now).await.unwrap(),
        ErasureMark::Marked
    );

    let erased = erase_all(&f, now).await;
    let expected = [
        ("api_keys", 1),
        ("attempts", 1),
        ("deliveries", 4),
        ("events", 4),
        ("jobs", 0),
        ("stats_rows", 1),
        ("webhooks", 0),
    ];
    assert_eq!(
        erased,
        BTreeMap::from(expected),
        "the leased delivery keeps its event and webhook"
    );
    assert!(
        !f.store.finish_erasure(&f.account).await.unwrap(),
        "rows are left"
    );
    assert_eq!(
        f.store.accounts_being_erased().await.unwrap(),
        std::slice::from_ref(&f.account)
    );

    // Its lease given back, the rest goes.
    let release = Release {
        delivery_id: claims[1].delivery_id.clone(),
        lease: claims[1].lease.clone(),
    };
    f.store.release(&[release]).await.unwrap();
    let erased = erase_all(&f, now).await;
    let expected = [
        ("api_keys", 0),
        ("attempts", 0),
        ("deliveries", 1),
        ("events", 1),
        ("jobs", 0),
        ("stats_rows", 0),
        ("webhooks", 1),
    ];
    assert_eq!(erased, BTreeMap::from(expected));
    assert!(f.store.finish_erasure(&f.account).await.unwrap());
    assert!(f.store.accounts_being_erased().await.unwrap().is_empty());
    assert!(
        f.store.finish_erasure(&f.account).await.unwrap(),
        "gone stays gone"
    );
}

contract!(
    a_marked_account_is_gone_at_once_and_its_deliveries_never_claimed,
    rows_go_child_first_leased_deliveries_wait_and_the_account_goes_last
);
