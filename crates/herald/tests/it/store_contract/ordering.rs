//! Ordering per key: a claim takes only each key's head, the next one once the head has ended
//! (succeeded, or failed when its policy gave up), never while the head waits for a retry or is
//! in flight; unordered deliveries are not held by any of it.

use super::*;
use herald::domain::OrderingKey;

/// Publishes one event per key in `keys`, one publish after the other; their event ids.
async fn publish_keyed(f: &Fixture, keys: &[Option<&str>]) -> Vec<String> {
    let mut ids = Vec::new();
    for key in keys {
        let mut e = f.event("order.created");
        e.ordering_key = key.map(|k| OrderingKey::parse(k).unwrap());
        ids.push(e.id.to_string());
        f.publish(vec![e]).await;
    }
    ids
}

/// Which of `events` the claims are of, by index, in order.
fn which(claims: &[ClaimedDelivery], events: &[String]) -> Vec<usize> {
    let mut found: Vec<usize> = claims
        .iter()
        .map(|c| {
            events
                .iter()
                .position(|e| *e == c.event.id.to_string())
                .unwrap()
        })
        .collect();
    found.sort();
    found
}

async fn a_claim_takes_each_keys_head_and_the_next_once_the_head_ends(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut w = webhook(&f.account, &["*"], WebhookKind::Subscription, None);
    w.ordering = WebhookOrdering::Key;
    f.store.insert_webhook(&w).await.unwrap();
    // 0: a, 1: b, 2: a, 3: no key, 4: a
    let events = publish_keyed(&f, &[Some("a"), Some("b"), Some("a"), None, Some("a")]).await;
    let t0 = Timestamp::now();
    let heads = f.claim(t0, 10, 10).await;
    assert_eq!(
        which(&heads, &events),
        [0, 1, 3],
        "each key's head, and the keyless one"
    );
    assert!(
        f.claim(t0, 10, 10).await.is_empty(),
        "the heads are in flight"
    );

    // The head of `a` fails and waits for a retry: it still holds its key.
    let a1 = heads
        .iter()
        .find(|c| c.event.id.to_string() == events[0])
        .unwrap();
    let retry_at = t0.plus(Duration::from_millis(50));
    f.record(&[result(a1, 500, NextStep::RetryAt(retry_at), t0)], t0)
        .await;
    assert!(
        f.claim(t0, 10, 10).await.is_empty(),
        "nothing behind a retrying head"
    );
    let again = f.claim(retry_at, 10, 10).await;
    assert_eq!(which(&again, &events), [0], "the head again, not the next");

    // It succeeds: the next of its key goes; that one fails for good: the last goes.
    f.record(
        &[result(&again[0], 200, NextStep::Succeeded, retry_at)],
        retry_at,
    )
    .await;
    let next = f.claim(retry_at, 10, 10).await;
    assert_eq!(which(&next, &events), [2]);
    f.record(
        &[result(&next[0], 500, NextStep::Failed, retry_at)],
        retry_at,
    )
    .await;
    let last = f.claim(retry_at, 10, 10).await;
    assert_eq!(which(&last, &events), [4]);

    // A lease that runs out frees the head again, still only the head.
    let later = retry_at.plus(LEASE).plus(Duration::from_secs(1));
    assert_eq!(which(&f.claim(later, 10, 10).await, &events), [1, 3, 4]);
}

async fn a_fifo_webhook_has_one_delivery_in_flight_and_an_unordered_one_all(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut fifo = webhook(&f.account, &["*"], WebhookKind::Subscription, None);
    fifo.ordering = WebhookOrdering::Fifo;
    f.store.insert_webhook(&fifo).await.unwrap();
    let plain = f.subscribe(&["*"]).await;
    let events = publish_keyed(&f, &[None, Some("x"), None]).await;
    let mut t = Timestamp::now();
    for expected in 0..events.len() {
        let claims = f.claim(t, 10, 10).await;
        let of_fifo: Vec<ClaimedDelivery> = claims
            .iter()
            .filter(|c| c.webhook.id == fifo.id)
            .cloned()
            .collect();
        if expected == 0 {
            let unordered = claims.iter().filter(|c| c.webhook.id == plain.id).count();
            assert_eq!(
                unordered, 3,
                "an unordered webhook's deliveries are not held"
            );
        }
        assert_eq!(which(&of_fifo, &events), [expected]);
        f.record(&[result(&of_fifo[0], 200, NextStep::Succeeded, t)], t)
            .await;
        t = t.plus(Duration::from_millis(1));
    }
    assert!(f.claim(t, 10, 10).await.is_empty());
}

contract!(
    a_claim_takes_each_keys_head_and_the_next_once_the_head_ends,
    a_fifo_webhook_has_one_delivery_in_flight_and_an_unordered_one_all,
);
