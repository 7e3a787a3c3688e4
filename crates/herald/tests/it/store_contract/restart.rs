//! A store opened again on the same database. SQLite has one process, so whatever its last
//! store had leased was in flight when that process stopped or crashed: the new one releases
//! those leases as it opens, and they are due at once instead of when the leases run out.
//! (PostgreSQL's nodes share the database; there, a lost node's leases run out.)

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reopened_sqlite_store_releases_what_the_last_one_had_leased() {
    let f = Fixture::new(Backend::Sqlite).await;
    f.subscribe(&["*"]).await;
    f.publish(vec![f.event("order.created"), f.event("order.paid")])
        .await;
    let now = Timestamp::now();
    let leased = f.claim(now, 10, 10).await;
    assert_eq!(leased.len(), 2);
    // One of them gets its result: it is no longer pending, and nothing should bring it back.
    let done = &leased[0];
    f.record(&[result(done, 200, NextStep::Succeeded, now)], now)
        .await;

    let Fixture {
        store, _env: env, ..
    } = f;
    drop(store);
    let store = store::open(&env.database_url, 8, Default::default())
        .await
        .expect("the store opens again");
    let again = store
        .claim_due(&claim_request(now, 10, 10, "test-node"))
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "the one still leased is due at once");
    assert_eq!(again[0].delivery_id, leased[1].delivery_id);
    assert_eq!(again[0].attempt_number, 1, "no attempt was recorded");
    assert_ne!(again[0].lease, leased[1].lease, "a new lease");
}
