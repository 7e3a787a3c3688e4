//! Operator events at the store: written with the results that cause them, only for results
//! whose lease still holds, never about the operator's own webhook; its webhook set from the
//! configuration and removed without it.

use super::*;
use herald::store::operator::{self, OperatorPolicy};

fn operator_events(f: &Fixture, event_type: &str) -> impl std::future::Future<Output = usize> {
    let query = EventQuery {
        account: Some(AccountId::from_trusted(operator::ACCOUNT.to_owned())),
        event_type: Some(event_type.to_owned()),
        ..EventQuery::default()
    };
    let store = f.store.clone();
    async move {
        let page = PageRequest {
            after: None,
            limit: 200,
        };
        store.list_events(&query, &page).await.unwrap().items.len()
    }
}

async fn spent_deliveries_are_reported_once_and_the_operator_webhook_never_about_itself(
    backend: Backend,
) {
    let f = Fixture::new(backend).await;
    let t0 = Timestamp::now();
    let url = |u: &str| WebhookUrl::from_trusted(u.to_owned());
    let mut hook = operator::webhook(
        url("http://127.0.0.1:9/first"),
        SigningSecret::generate(),
        RetryPolicy::default(),
        t0,
    );
    f.store.set_operator_webhook(Some(&hook), t0).await.unwrap();
    // Set again (another start): the same row, brought in line.
    hook.url = url("http://127.0.0.1:9/second");
    f.store.set_operator_webhook(Some(&hook), t0).await.unwrap();
    let stored = f.store.get_webhook(None, &hook.id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.url.as_str(),
            stored.kind,
            stored.secret == hook.secret
        ),
        ("http://127.0.0.1:9/second", WebhookKind::Operator, true)
    );
    let accounts = f
        .store
        .list_accounts(&PageRequest {
            after: None,
            limit: 200,
        })
        .await
        .unwrap();
    assert!(
        accounts
            .items
            .iter()
            .all(|a| a.id.as_str() != operator::ACCOUNT)
    );

    f.subscribe(&["order.*"]).await;
    f.publish(vec![f.event("order.created"), f.event("order.updated")])
        .await;
    let claims = f.claim(Timestamp::now(), 10, 10).await;
    assert_eq!(claims.len(), 2);
    let health = HealthPolicy {
        now: t0,
        disable_after: Duration::from_secs(60),
        operator: Some(OperatorPolicy {
            failing_after: Duration::from_secs(10),
        }),
        circuit_after: 0,
        probe_interval: Duration::from_secs(30),
    };
    let mut lost = result(&claims[1], 500, NextStep::Failed, t0);
    lost.lease = "a lease that ran out".to_owned();
    let records = [result(&claims[0], 500, NextStep::Failed, t0), lost];
    f.store.record_attempts(&records, &health).await.unwrap();
    assert_eq!(
        operator_events(&f, "delivery.exhausted").await,
        1,
        "the lost lease spent nothing"
    );

    // The operator's delivery fails for good, after failing for longer than both spans:
    // nothing about it, and its webhook stays active.
    let mine = f.claim(Timestamp::now(), 10, 10).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].webhook.id, hook.id);
    let long_ago = t0.minus(Duration::from_secs(120));
    f.store
        .record_attempts(
            &[result(&mine[0], 500, NextStep::Failed, long_ago)],
            &health,
        )
        .await
        .unwrap();
    assert_eq!(operator_events(&f, "delivery.exhausted").await, 1);
    for t in ["webhook.failing", "webhook.disabled"] {
        assert_eq!(operator_events(&f, t).await, 0, "{t}");
    }
    let stored = f.store.get_webhook(None, &hook.id).await.unwrap().unwrap();
    assert_eq!(stored.status, WebhookStatus::Active);

    // Without [operator]: the webhook goes, its waiting deliveries are cancelled.
    f.publish(vec![f.event("order.deleted")]).await;
    let waiting = f.claim(Timestamp::now(), 10, 10).await.remove(0);
    f.store
        .record_attempts(&[result(&waiting, 500, NextStep::Failed, t0)], &health)
        .await
        .unwrap();
    f.store.set_operator_webhook(None, t0).await.unwrap();
    assert!(f.store.get_webhook(None, &hook.id).await.unwrap().is_none());
    let left = f
        .deliveries(DeliveryQuery {
            webhook: Some(hook.id.clone()),
            status: Some(DeliveryStatus::Pending),
            ..DeliveryQuery::default()
        })
        .await;
    assert!(left.is_empty(), "{left:?}");
}

contract!(spent_deliveries_are_reported_once_and_the_operator_webhook_never_about_itself);
