//! Background tasks on the store: a task is worked under one lease at a time, each batch moves
//! its cursor with its re-queues, a runner that lost its lease writes nothing, one that takes a
//! task up resumes after the last batch, and two runners (on PostgreSQL, two stores: two nodes)
//! never re-queue a delivery twice.

use super::{Fixture, LEASE, result};
use crate::common::Backend;
use herald::domain::{
    DeliveryStatus, RequeueFilter, TaskId, TaskKind, TaskState, Timestamp, Webhook,
};
use herald::store::{
    self, BatchOutcome, DeliveryQuery, DynStore, NewTask, NextStep, RequeueBatch, TaskLease,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// Publishes `n` events of a type of its own to a new webhook of the fixture's account, and
/// fails each delivery.
async fn failed_deliveries(f: &Fixture, n: usize) -> Webhook {
    let kind = format!("k{}", uuid::Uuid::new_v4().simple());
    let filter = format!("{kind}.*");
    let hook = f.subscribe(&[filter.as_str()]).await;
    let event_type = format!("{kind}.created");
    f.publish((0..n).map(|_| f.event(&event_type)).collect())
        .await;
    let now = Timestamp::now();
    let claims = f.claim(now, n * 10, n * 10).await;
    let mine: Vec<_> = claims
        .iter()
        .filter(|c| c.webhook.id == hook.id)
        .map(|c| result(c, 500, NextStep::Failed, now))
        .collect();
    assert_eq!(mine.len(), n);
    f.record(&mine, now).await;
    hook
}

fn filter_of(hook: &Webhook) -> RequeueFilter {
    RequeueFilter {
        account: Some(hook.account_id.clone()),
        webhook: Some(hook.id.clone()),
        status: DeliveryStatus::Failed,
        since: Timestamp::now().minus(Duration::from_secs(3600)),
        until: Timestamp::now().plus(Duration::from_secs(1)),
    }
}

async fn new_task(store: &DynStore, filter: RequeueFilter) -> TaskId {
    let counted = store.count_requeueable(&filter).await.unwrap();
    let task = NewTask {
        id: TaskId::generate(),
        account: filter.account.clone(),
        kind: TaskKind::Recover,
        filter,
        counted,
        now: Timestamp::now(),
    };
    store.create_task(&task).await.unwrap().id
}

fn lease(node: &str, now: Timestamp) -> TaskLease {
    TaskLease {
        node: node.to_owned(),
        token: uuid::Uuid::new_v4().simple().to_string(),
        now,
        until: now.plus(LEASE),
    }
}

fn batch(task: &TaskId, lease: &TaskLease, filter: &RequeueFilter, limit: usize) -> RequeueBatch {
    RequeueBatch {
        task: task.clone(),
        token: lease.token.clone(),
        filter: filter.clone(),
        limit,
        now: lease.now,
        lease_until: lease.until,
    }
}

async fn statuses(f: &Fixture, hook: &Webhook) -> Vec<DeliveryStatus> {
    let query = DeliveryQuery {
        webhook: Some(hook.id.clone()),
        ..DeliveryQuery::default()
    };
    f.deliveries(query).await.iter().map(|d| d.status).collect()
}

async fn a_task_is_taken_up_where_it_stopped_and_a_lost_lease_writes_nothing(backend: Backend) {
    let f = Fixture::new(backend).await;
    let hook = failed_deliveries(&f, 25).await;
    let other = failed_deliveries(&f, 3).await;
    let filter = filter_of(&hook);
    let id = new_task(&f.store, filter.clone()).await;
    let t0 = Timestamp::now();

    let a = lease("node-a", t0);
    let task = f
        .store
        .lease_task(&a)
        .await
        .unwrap()
        .expect("a task to run");
    assert_eq!(
        (task.id.clone(), task.state, task.counted),
        (id.clone(), TaskState::Running, 25)
    );
    assert!(
        f.store
            .lease_task(&lease("node-b", t0))
            .await
            .unwrap()
            .is_none(),
        "a leased task is no one else's"
    );
    let first = f
        .store
        .requeue_batch(&batch(&id, &a, &filter, 10))
        .await
        .unwrap();
    assert_eq!(
        first,
        BatchOutcome::Requeued {
            requeued: 10,
            done: 10,
            finished: false
        }
    );

    // Node A goes quiet; once its lease has lapsed, node B takes the task up.
    let later = t0.plus(LEASE).plus(Duration::from_secs(1));
    let b = lease("node-b", later);
    let taken = f
        .store
        .lease_task(&b)
        .await
        .unwrap()
        .expect("the lapsed task");
    assert_eq!((taken.id.clone(), taken.done), (id.clone(), 10));
    assert_eq!(
        f.store
            .requeue_batch(&batch(&id, &a, &filter, 10))
            .await
            .unwrap(),
        BatchOutcome::Lost,
        "the old holder's batch writes nothing"
    );
    assert!(
        !f.store
            .renew_task(&id, &a.token, later, later)
            .await
            .unwrap()
    );
    let mut requeued = 10;
    loop {
        match f
            .store
            .requeue_batch(&batch(&id, &b, &filter, 10))
            .await
            .unwrap()
        {
            BatchOutcome::Requeued {
                requeued: n,
                done,
                finished,
            } => {
                requeued += n;
                assert_eq!(done, requeued);
                if finished {
                    break;
                }
            }
            BatchOutcome::Lost => panic!("node B lost a lease nobody took"),
        }
    }
    assert_eq!(requeued, 25, "each delivery re-queued once");
    let task = f.store.get_task(None, &id).await.unwrap().unwrap();
    assert_eq!(
        (task.state, task.done, task.counted),
        (TaskState::Succeeded, 25, 25)
    );
    assert!(task.finished_at.is_some());
    assert!(
        statuses(&f, &hook)
            .await
            .iter()
            .all(|s| *s == DeliveryStatus::Pending)
    );
    assert!(
        statuses(&f, &other)
            .await
            .iter()
            .all(|s| *s == DeliveryStatus::Failed),
        "another webhook's deliveries are untouched"
    );
    assert_eq!(
        f.store
            .requeue_batch(&batch(&id, &b, &filter, 10))
            .await
            .unwrap(),
        BatchOutcome::Lost,
        "a finished task takes no more batches"
    );
    assert_eq!(f.store.count_requeueable(&filter).await.unwrap(), 0);
    // Scoped reads: the account sees its task, another account does not.
    assert!(
        f.store
            .get_task(Some(&f.account), &id)
            .await
            .unwrap()
            .is_some()
    );
    let stranger = super::add_account(&f.store, "Stranger").await;
    assert!(
        f.store
            .get_task(Some(&stranger), &id)
            .await
            .unwrap()
            .is_none()
    );
    // Retention: a finished task goes once it finished before the cut, not before.
    let finished = task.finished_at.unwrap();
    assert_eq!(f.store.prune_tasks(finished, 100).await.unwrap(), 0);
    let later = finished.plus(Duration::from_millis(1));
    assert_eq!(f.store.prune_tasks(later, 100).await.unwrap(), 1);
    assert!(f.store.get_task(None, &id).await.unwrap().is_none());
    assert_eq!(f.store.prune_tasks(later, 100).await.unwrap(), 0);
}

/// Leases and works tasks until none is left; returns the deliveries re-queued and the tasks
/// it worked.
async fn runner(store: DynStore, node: &'static str) -> (u64, Vec<TaskId>) {
    let (mut requeued, mut worked) = (0, Vec::new());
    loop {
        let l = lease(node, Timestamp::now());
        let Some(task) = store.lease_task(&l).await.unwrap() else {
            return (requeued, worked);
        };
        let filter = RequeueFilter::from_json(&task.params).unwrap();
        worked.push(task.id.clone());
        loop {
            match store
                .requeue_batch(&batch(&task.id, &l, &filter, 4))
                .await
                .unwrap()
            {
                BatchOutcome::Requeued {
                    requeued: n,
                    finished,
                    ..
                } => {
                    requeued += n;
                    if finished {
                        break;
                    }
                }
                BatchOutcome::Lost => panic!("{node} lost a lease that had not lapsed"),
            }
            tokio::task::yield_now().await;
        }
    }
}

async fn two_runners_never_requeue_a_delivery_twice(backend: Backend) {
    let f = Fixture::new(backend).await;
    let mut hooks = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let hook = failed_deliveries(&f, 15).await;
        tasks.push(new_task(&f.store, filter_of(&hook)).await);
        hooks.push(hook);
    }
    // On PostgreSQL the second runner is another node: a store of its own on the same database.
    let second = match backend {
        Backend::Postgres => store::open(&f._env.database_url, 8, Default::default())
            .await
            .expect("a second store opens"),
        Backend::Sqlite => f.store.clone(),
    };
    let (a, b) = tokio::join!(
        tokio::spawn(runner(f.store.clone(), "node-a")),
        tokio::spawn(runner(second, "node-b")),
    );
    let ((done_a, worked_a), (done_b, worked_b)) = (a.unwrap(), b.unwrap());
    assert_eq!(done_a + done_b, 60, "every delivery re-queued exactly once");
    let worked: BTreeSet<_> = worked_a.iter().chain(&worked_b).cloned().collect();
    assert_eq!(
        worked.len(),
        worked_a.len() + worked_b.len(),
        "no task was leased by both"
    );
    assert_eq!(worked, tasks.iter().cloned().collect());
    for (id, hook) in tasks.iter().zip(&hooks) {
        let task = f.store.get_task(None, id).await.unwrap().unwrap();
        assert_eq!(
            (task.state, task.done, task.counted),
            (TaskState::Succeeded, 15, 15)
        );
        assert!(
            statuses(&f, hook)
                .await
                .iter()
                .all(|s| *s == DeliveryStatus::Pending)
        );
    }
}

contract!(
    a_task_is_taken_up_where_it_stopped_and_a_lost_lease_writes_nothing,
    two_runners_never_requeue_a_delivery_twice,
);
