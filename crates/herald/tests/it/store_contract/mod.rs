//! The store's promises, checked on the store itself (no HTTP), on both backends: the queue's
//! leases, caps and late results, publishing's idempotency and hand-over, a job's one terminal
//! event, retention, the order of every list, and listener webhooks' node affinity.

use crate::common;

use common::{Backend, TestEnv};
use herald::domain::{
    Account, AccountId, ApiKeyId, Attempt, AttemptId, DeliveryStatus, EventFilter, Job, JobPatch,
    JobStatus, PayloadFormat, RetryPolicy, SigningMode, SigningSecret, Timestamp, Webhook,
    WebhookId, WebhookKind, WebhookOrdering, WebhookStatus, WebhookUrl,
};
use herald::store::{
    self, AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryQuery, DynStore, EventQuery,
    HealthPolicy, Idempotency, Intake, JobCreated, JobUpdate, NewApiKey, NewEvent, NextDue,
    NextStep, PageRequest, PruneEvents, Release, StoreError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

/// Runs each test once per backend, on a runtime with worker threads (the races need them).
macro_rules! contract {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )+};
}

/// A store opened on a fresh database, with one account in it.
struct Fixture {
    store: DynStore,
    account: AccountId,
    // Last: the database goes after the store that uses it.
    _env: TestEnv,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let env = TestEnv::new(backend).await;
        let store = store::open(&env.database_url, 8, Default::default())
            .await
            .expect("the store opens");
        let account = add_account(&store, "Acme").await;
        Self {
            store,
            account,
            _env: env,
        }
    }

    /// An active subscription of the account to `filters`.
    async fn subscribe(&self, filters: &[&str]) -> Webhook {
        let w = webhook(&self.account, filters, WebhookKind::Subscription, None);
        self.store.insert_webhook(&w).await.expect("insert webhook");
        w
    }

    fn event(&self, event_type: &str) -> NewEvent {
        let data = serde_json::value::to_raw_value(&serde_json::json!({"n": 1})).unwrap();
        NewEvent::new(self.account.clone(), event_type.to_owned(), data)
    }

    fn keyed(&self, key: &str, fingerprint: &str, valid_since: Timestamp) -> NewEvent {
        let mut e = self.event("order.created");
        e.idempotency = Some(Idempotency {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            valid_since,
        });
        e
    }

    async fn publish(&self, events: Vec<NewEvent>) {
        for result in self.store.publish_events(events).await.expect("publish") {
            result.expect("published");
        }
    }

    async fn claim(&self, now: Timestamp, limit: usize, cap: usize) -> Vec<ClaimedDelivery> {
        self.claim_with(now, limit, cap, &[]).await
    }

    async fn claim_with(
        &self,
        now: Timestamp,
        limit: usize,
        cap: usize,
        in_flight: &[(&WebhookId, usize)],
    ) -> Vec<ClaimedDelivery> {
        let request = ClaimRequest {
            in_flight: in_flight.iter().map(|(w, n)| ((*w).clone(), *n)).collect(),
            ..claim_request(now, limit, cap, "test-node")
        };
        self.store.claim_due(&request).await.expect("claim")
    }

    /// A claim of up to 10 (5 a webhook) by `node`, with what it reports.
    async fn claim_on(&self, node: &str, now: Timestamp) -> herald::store::Claim {
        self.store
            .claim(&claim_request(now, 10, 5, node))
            .await
            .expect("claim")
    }

    async fn record(&self, records: &[AttemptRecord], now: Timestamp) {
        self.store
            .record_attempts(records, &health(now))
            .await
            .expect("record attempts");
    }

    async fn delivery(&self, claim: &ClaimedDelivery) -> herald::domain::Delivery {
        self.store
            .get_delivery(None, &claim.delivery_id)
            .await
            .expect("get delivery")
            .expect("the delivery exists")
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Vec<herald::domain::Delivery> {
        let page = PageRequest {
            after: None,
            limit: 200,
        };
        let found = self.store.list_deliveries(&query, &page).await.unwrap();
        assert!(found.next_cursor.is_none(), "more than a page");
        found.items
    }

    async fn events_of_type(&self, event_type: &str) -> usize {
        let query = EventQuery {
            account: Some(self.account.clone()),
            event_type: Some(event_type.to_owned()),
            ..EventQuery::default()
        };
        let page = PageRequest {
            after: None,
            limit: 200,
        };
        self.store
            .list_events(&query, &page)
            .await
            .unwrap()
            .items
            .len()
    }
}

async fn add_account(store: &DynStore, name: &str) -> AccountId {
    let account = Account {
        id: AccountId::generate(),
        name: name.to_owned(),
        created_at: Timestamp::now(),
    };
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        account_id: account.id.clone(),
        hash: uuid::Uuid::new_v4().simple().to_string(),
        prefix: "hk_first0".to_owned(),
        name: "first key".to_owned(),
        created_at: account.created_at,
    };
    store.create_account(&account, &key).await.expect("account");
    account.id
}

fn webhook(
    account: &AccountId,
    filters: &[&str],
    kind: WebhookKind,
    job_id: Option<&str>,
) -> Webhook {
    let now = Timestamp::now();
    Webhook {
        id: WebhookId::generate(),
        account_id: account.clone(),
        url: WebhookUrl::from_trusted("http://127.0.0.1:9/hook".to_owned()),
        events: filters
            .iter()
            .map(|f| EventFilter::parse(f).unwrap())
            .collect(),
        secret: SigningSecret::generate(),
        description: String::new(),
        retry: RetryPolicy::default(),
        status: WebhookStatus::Active,
        created_at: now,
        updated_at: now,
        kind,
        job_id: job_id.map(str::to_owned),
        signing: SigningMode::Standard,
        format: PayloadFormat::Envelope,
        previous_secret: None,
        disabled_reason: None,
        failing_since: None,
        rate_limit: None,
        ordering: WebhookOrdering::None,
        held: false,
    }
}

/// The results' policy at `now`: a webhook is disabled after an hour of failures, no operator,
/// no circuit breaker.
fn health(now: Timestamp) -> HealthPolicy {
    HealthPolicy {
        now,
        disable_after: Duration::from_secs(3600),
        operator: None,
        circuit_after: 0,
        probe_interval: Duration::from_secs(30),
    }
}

/// The result of attempting `claim`, under its lease.
fn result(
    claim: &ClaimedDelivery,
    status: u16,
    next: NextStep,
    started: Timestamp,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: claim.delivery_id.clone(),
        webhook_id: claim.webhook.id.clone(),
        lease: claim.lease.clone(),
        attempt: Attempt {
            id: AttemptId::generate(),
            number: claim.attempt_number,
            started_at: started,
            duration_ms: 3,
            status_code: Some(status),
            error_kind: None,
            error: None,
            response_body: None,
            node: Some("test".to_owned()),
        },
        next,
        gone: status == 410,
        pause_until: None,
        ordered: false,
    }
}

/// How many of `claims` went to each webhook.
/// A subscription whose id sorts after every other's (UUIDv7 ids sort by creation time): the
/// last a listing of webhooks by id reaches.
fn webhook_sorting_last(account: &AccountId, filters: &[&str]) -> Webhook {
    Webhook {
        id: WebhookId::from_trusted(format!("wh_{}", "f".repeat(32))),
        ..webhook(account, filters, WebhookKind::Subscription, None)
    }
}

fn per_webhook(claims: &[ClaimedDelivery]) -> BTreeMap<WebhookId, usize> {
    let mut counts = BTreeMap::new();
    for c in claims {
        *counts.entry(c.webhook.id.clone()).or_default() += 1;
    }
    counts
}

mod erasure;
mod listeners;
mod operator;
mod ordering;
mod portal;
mod publish;
mod queue;
mod resources;
mod restart;
mod tasks;

fn claim_request(now: Timestamp, limit: usize, cap: usize, node: &str) -> ClaimRequest {
    ClaimRequest {
        now,
        lease_until: now.plus(LEASE),
        limit,
        per_webhook_cap: cap,
        in_flight: Default::default(),
        node: node.to_owned(),
        probe_interval: std::time::Duration::from_secs(30),
    }
}
