//! The task runner: works background tasks (a webhook's recovery, the operator's bulk retry),
//! on every node, beside the dispatcher and the janitor.
//!
//! It looks for a runnable task when one is made on this node (the API wakes it), else every
//! `tasks.poll_interval`; leases the oldest (queued, or running under a lapsed lease: its
//! runner died), and works it in batches (`store::tasks`): each batch one transaction that
//! checks the lease, re-queues the next `tasks.batch` matching deliveries after the task's
//! cursor and moves the cursor past them, renewing the lease. A runner that lost its lease
//! stops at its next batch, having written nothing more; one that takes a task up starts after
//! the last committed batch.
//!
//! **Pacing.** Re-queued deliveries are due at once, and would crowd fresh deliveries out of the
//! claims if a task queued them faster than the dispatcher sends them. So before each batch the
//! runner looks at the backlog of the task's scope (its webhook, its account, or every
//! account): while more than one batch of deliveries there waits for a claim, it waits
//! (`tasks.pace`), renewing its lease every third of it. A task never has more than about two
//! batches of its own queued ahead of the dispatcher.

use crate::config::TaskSettings;
use crate::dispatch::Waker;
use crate::domain::{RequeueFilter, Task, Timestamp};
use crate::store::{BatchOutcome, RequeueBatch, StoreResult, TaskLease, TaskQueue};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Wakes this node's runner when the API makes a task.
#[derive(Clone, Default)]
pub struct TaskWaker(Arc<Notify>);

impl TaskWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct TaskRunner {
    store: Arc<dyn TaskQueue>,
    settings: TaskSettings,
    node: String,
    woken: TaskWaker,
    /// The dispatcher, woken for what a batch re-queued.
    dispatcher: Waker,
}

/// A task this runner holds.
struct Held {
    task: Task,
    token: String,
}

impl TaskRunner {
    pub fn new(
        store: Arc<dyn TaskQueue>,
        settings: TaskSettings,
        node: String,
        woken: TaskWaker,
        dispatcher: Waker,
    ) -> Self {
        Self {
            store,
            settings,
            node,
            woken,
            dispatcher,
        }
    }

    /// Works runnable tasks one after another until none is left, then waits to be woken or
    /// for the poll interval; until `shutdown`, when the task in hand stops after its batch.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            while !shutdown.is_cancelled() {
                match self.lease().await {
                    Ok(Some(held)) => self.work(held, &shutdown).await,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(error = %e, "tasks: could not look for a task; trying again later");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval.0) => {}
                _ = self.woken.0.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn lease(&self) -> StoreResult<Option<Held>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = Timestamp::now();
        let lease = TaskLease {
            node: self.node.clone(),
            token: token.clone(),
            now,
            until: now.plus(self.settings.lease.0),
        };
        Ok(self
            .store
            .lease_task(&lease)
            .await?
            .map(|task| Held { task, token }))
    }

    async fn work(&self, held: Held, shutdown: &CancellationToken) {
        let task = &held.task;
        let started = Instant::now();
        let filter = match RequeueFilter::from_json(&task.params) {
            Ok(f) => f,
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "tasks: unreadable parameters; the task fails");
                let error = format!("unreadable parameters: {e}");
                if let Err(e) = self
                    .store
                    .fail_task(&task.id, &held.token, &error, Timestamp::now())
                    .await
                {
                    warn!(task_id = %task.id, error = %e, "tasks: could not record the failure");
                }
                return;
            }
        };
        info!(task_id = %task.id, kind = task.kind.as_str(), counted = task.counted,
              done = task.done, "tasks: working a task");
        match self.requeue(&held, filter, shutdown).await {
            Ok(Some(done)) => info!(task_id = %task.id, done, counted = task.counted,
                took_ms = started.elapsed().as_millis() as u64, "tasks: task succeeded"),
            Ok(None) => {}
            Err(e) => warn!(task_id = %task.id, error = %e,
                "tasks: a batch failed; the task is taken up again when its lease lapses"),
        }
    }

    /// Re-queues batch after batch until the task is done (its final `done`), or it is lost or
    /// shutdown comes (`None`).
    async fn requeue(
        &self,
        held: &Held,
        filter: RequeueFilter,
        shutdown: &CancellationToken,
    ) -> StoreResult<Option<u64>> {
        let batch = self.settings.batch;
        let lease = self.settings.lease.0;
        let mut renewed = Instant::now();
        loop {
            // Pacing: the scope's due backlog first goes down to one batch.
            loop {
                let now = Timestamp::now();
                let backlog = self.store.due_backlog(&filter, now, batch + 1).await?;
                if backlog <= batch as u64 {
                    break;
                }
                if renewed.elapsed() >= lease / 3 {
                    let until = now.plus(lease);
                    if !self
                        .store
                        .renew_task(&held.task.id, &held.token, until, now)
                        .await?
                    {
                        info!(task_id = %held.task.id, "tasks: lease lost to another runner");
                        return Ok(None);
                    }
                    renewed = Instant::now();
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.pace.0) => {}
                    _ = shutdown.cancelled() => return self.give_back(held).await,
                }
            }
            let now = Timestamp::now();
            let step = RequeueBatch {
                task: held.task.id.clone(),
                token: held.token.clone(),
                filter: filter.clone(),
                limit: batch,
                now,
                lease_until: now.plus(lease),
            };
            match self.store.requeue_batch(&step).await? {
                BatchOutcome::Lost => {
                    info!(task_id = %held.task.id, "tasks: lease lost to another runner");
                    return Ok(None);
                }
                BatchOutcome::Requeued {
                    requeued,
                    done,
                    finished,
                } => {
                    renewed = Instant::now();
                    if requeued > 0 {
                        self.dispatcher.wake();
                    }
                    if finished {
                        return Ok(Some(done));
                    }
                }
            }
            if shutdown.is_cancelled() {
                return self.give_back(held).await;
            }
        }
    }

    /// At shutdown: ends the lease now, so another node (or the next start) takes the task up at
    /// once where its last batch left it.
    async fn give_back(&self, held: &Held) -> StoreResult<Option<u64>> {
        let now = Timestamp::now();
        self.store
            .renew_task(
                &held.task.id,
                &held.token,
                now.minus(std::time::Duration::from_millis(1)),
                now,
            )
            .await?;
        Ok(None)
    }
}
