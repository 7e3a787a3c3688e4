//! The store's interface, one trait per caller: the API's resources ([`Accounts`], [`Webhooks`],
//! [`Jobs`], [`Events`], [`Deliveries`]), [`Publisher`] and the `herald listen` streams'
//! [`Listeners`], the background tasks' [`Tasks`] (the API's side) and [`TaskQueue`] (the
//! runner's), the dispatcher's [`Queue`], the janitor's [`Retention`], the metrics'
//! [`QueueGauges`], and the start-up's [`OperatorWebhook`]. Both backends implement all of
//! them; [`Store`] is the whole, which [`super::open`] returns and the app hands out in parts.
//!
//! `account: None` on a read means the admin's unscoped view; `Some(id)` restricts it to that
//! account, so another account's ids are simply not found.

use super::erasure::{ErasedRows, ErasureMark, ErasureStep};
use super::stats::AttemptStats;
use super::{
    ApiKeyInfo, AttemptRecord, Claim, ClaimRequest, ClaimedDelivery, DeliveryQuery, EventQuery,
    FoundKey, HealthPolicy, JobCreated, JobUpdate, LinkRedeemed, NewApiKey, NewEvent,
    NewPortalLink, NewPortalSession, NextDue, Page, PageRequest, PortalSession, PruneEvents,
    PrunedEvents, Published, QueueDepth, Release, ReplayMissing, ReplayPage, RetryRequest,
    StoreResult, WebhookFlow,
};
use super::{BatchOutcome, NewTask, PortalTokens, RequeueBatch, TaskLease};
use crate::domain::{
    Account, AccountId, ApiKeyId, Attempt, Delivery, DeliveryId, Event, EventId, Job, JobPatch,
    RequeueFilter, SigningSecret, Task, TaskId, Timestamp, Webhook, WebhookId, WebhookStatus,
};
use async_trait::async_trait;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Accounts and their API keys.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn create_account(&self, account: &Account, key: &NewApiKey) -> StoreResult<()>;
    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>>;
    /// The live (not revoked) key with this hash.
    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<FoundKey>>;
    /// Adds a key to an existing account.
    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<()>;
    /// The account's keys, revoked ones included, newest first.
    async fn list_api_keys(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKeyInfo>>;
    /// Revokes a live key of the account; `None` if it has no such key, else the key as it is
    /// now (revoking a revoked key changes nothing).
    async fn revoke_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
        now: Timestamp,
    ) -> StoreResult<Option<ApiKeyInfo>>;
    /// Notes that a key was used at `at` (callers limit how often).
    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<()>;
    /// The account's signing secret (for its callback URL and jobs' own webhooks), made on
    /// first use.
    async fn account_signing_secret(&self, account: &AccountId) -> StoreResult<SigningSecret>;
    /// Marks the account for erasure, in one transaction: from then on it is not found (nor
    /// listed, nor published to), its keys are revoked, and its webhooks are deleted and
    /// disabled, so no claim takes their deliveries; the eraser deletes its rows
    /// ([`Retention::erase_batch`]).
    async fn begin_erasure(&self, id: &AccountId, now: Timestamp) -> StoreResult<ErasureMark>;
}

/// Webhooks: subscriptions, an account's callback URL, jobs' own.
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    /// The webhook's attempt figures from the minute of `since` on ([`super::stats`]).
    async fn webhook_stats(&self, id: &WebhookId, since: Timestamp) -> StoreResult<AttemptStats>;
    async fn insert_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    /// The account's callback-URL webhook, if it has one.
    async fn callback_webhook(&self, account: &AccountId) -> StoreResult<Option<Webhook>>;
    /// Sets the account's callback URL: the existing callback webhook gets the new URL, signing
    /// mode, format and secrets (current and previous), or `webhook` is stored. Returns the
    /// callback webhook.
    async fn set_callback_webhook(&self, webhook: &Webhook) -> StoreResult<Webhook>;
    /// Enables or disables a webhook; either clears its failure record and closes its circuit.
    async fn set_webhook_status(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        status: WebhookStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>>;
    async fn get_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
    ) -> StoreResult<Option<Webhook>>;
    /// The account's webhooks but jobs' own, newest first.
    async fn list_webhooks(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<Webhook>>;
    /// Saves every mutable field; false when it no longer exists.
    async fn update_webhook(&self, webhook: &Webhook) -> StoreResult<bool>;
    /// Deletes it and cancels its pending deliveries; false when not found.
    async fn delete_webhook(
        &self,
        account: Option<&AccountId>,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Its flow control at `now`: state, pending deliveries, next attempt.
    async fn webhook_flow(
        &self,
        id: &WebhookId,
        now: Timestamp,
    ) -> StoreResult<Option<WebhookFlow>>;
}

/// The listener webhooks of `herald listen --forward-to` streams: each is held by the node whose
/// stream it lives on, until a lease that node renews; only that node claims its deliveries
/// (see [`super::ClaimRequest::node`]). Closing a stream deletes its webhook
/// ([`Webhooks::delete_webhook`]); a lapsed lease is retention's ([`Retention`]).
#[async_trait]
pub trait Listeners: Send + Sync + 'static {
    /// Stores a new listener webhook, held by `node` until `until`.
    async fn open_listener(
        &self,
        webhook: &Webhook,
        node: &str,
        until: Timestamp,
    ) -> StoreResult<()>;
    /// Takes the account's listener webhook `id` over for `node` until `until` (a CLI that
    /// reconnects), and makes its pending deliveries due at `now`, so what waited for a listener
    /// is retried at once. `None` when it is gone.
    async fn resume_listener(
        &self,
        account: &AccountId,
        id: &WebhookId,
        node: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Option<Webhook>>;
    /// Extends to `until` the leases of those of `ids` that `node` still holds, and returns
    /// them: a webhook missing from the answer was deleted or taken over by another node.
    async fn renew_listeners(
        &self,
        ids: &[WebhookId],
        node: &str,
        until: Timestamp,
    ) -> StoreResult<Vec<WebhookId>>;
}

/// Jobs, whose status changes publish events.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Stores a new job (and its own webhook) and publishes its `queued` event, atomically.
    async fn create_job(&self, job: &Job, webhook: Option<&Webhook>) -> StoreResult<JobCreated>;
    async fn get_job(&self, account: Option<&AccountId>, id: &str) -> StoreResult<Option<Job>>;
    /// Applies a change under a row lock; a status change publishes its event in the same
    /// transaction, so a job has exactly one terminal event however many updates race.
    async fn update_job(
        &self,
        account: Option<&AccountId>,
        id: &str,
        patch: &JobPatch,
        now: Timestamp,
    ) -> StoreResult<JobUpdate>;
    /// The account's jobs, newest first. Job ids are the provider's own, so they do not sort by
    /// time: the cursor is [`super::JobCursor`]'s text (creation time and id).
    async fn list_jobs(&self, account: &AccountId, page: &PageRequest) -> StoreResult<Page<Job>>;
}

/// The customer portal's one-time links and the sessions they open (`portal/`). Tokens are
/// stored as their SHA-256 only.
#[async_trait]
pub trait PortalSessions: Send + Sync + 'static {
    /// Stores a new link (the janitor deletes expired ones: [`Retention::prune_portal`]).
    async fn create_portal_link(&self, link: &NewPortalLink) -> StoreResult<()>;
    /// Opens the link with this hash, once: if it is unused and unexpired at
    /// `session.created_at`, marks it used and stores `session` for its account, atomically, so
    /// two requests with one link open one session.
    async fn redeem_portal_link(
        &self,
        hash: &str,
        session: &NewPortalSession,
    ) -> StoreResult<LinkRedeemed>;
    /// The session with this hash, if it has not expired at `now`.
    async fn find_portal_session(
        &self,
        hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<PortalSession>>;
    /// Ends a session (signing out).
    async fn end_portal_session(&self, hash: &str) -> StoreResult<()>;
    /// What opening the link with this hash at `now` would do (`Opened`: it would open), and
    /// changes nothing: the link's page says at once that it is used or expired.
    async fn peek_portal_link(&self, hash: &str, now: Timestamp) -> StoreResult<LinkRedeemed>;
}

/// Publishing events: each is stored with one pending delivery per matching active webhook.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes several events in one transaction; each has its own result (one refused for
    /// its idempotency key does not stop the others), and none is acknowledged before the commit.
    async fn publish_events(
        &self,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<StoreResult<Published>>>;

    /// Stores the event and its deliveries, atomically.
    async fn publish_event(&self, event: NewEvent) -> StoreResult<Published> {
        let mut results = self.publish_events(vec![event]).await?;
        results.pop().expect("publish_events answers every event")
    }
}

/// Published events, read back.
#[async_trait]
pub trait Events: Send + Sync + 'static {
    async fn get_event(
        &self,
        account: Option<&AccountId>,
        id: &EventId,
    ) -> StoreResult<Option<Event>>;
    /// Newest first.
    async fn list_events(&self, query: &EventQuery, page: &PageRequest)
    -> StoreResult<Page<Event>>;
}

/// Deliveries and their attempts, as the API shows them.
#[async_trait]
pub trait Deliveries: Send + Sync + 'static {
    async fn get_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
    ) -> StoreResult<Option<Delivery>>;
    /// Newest first.
    async fn list_deliveries(
        &self,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    async fn list_attempts(&self, delivery: &DeliveryId) -> StoreResult<Vec<Attempt>>;
    /// Makes the delivery due now, whatever its state, unless its webhook is gone.
    async fn retry_delivery(
        &self,
        account: Option<&AccountId>,
        id: &DeliveryId,
        now: Timestamp,
    ) -> StoreResult<RetryRequest>;
    /// One page of replaying what a webhook missed ([`ReplayMissing`]); each event gets at
    /// most one delivery to the webhook however often this runs, also at once on several nodes.
    async fn replay_missing(&self, request: &ReplayMissing) -> StoreResult<ReplayPage>;
}

/// Background tasks, as the API starts and shows them (the runner's side is [`TaskQueue`]).
#[async_trait]
pub trait Tasks: Send + Sync + 'static {
    /// How many deliveries `filter` takes now: a dry run's answer, a new task's `counted`.
    async fn count_requeueable(&self, filter: &RequeueFilter) -> StoreResult<u64>;
    /// Stores a new task, queued.
    async fn create_task(&self, task: &NewTask) -> StoreResult<Task>;
    async fn get_task(&self, account: Option<&AccountId>, id: &TaskId)
    -> StoreResult<Option<Task>>;
    /// Newest first.
    async fn list_tasks(
        &self,
        account: Option<&AccountId>,
        page: &PageRequest,
    ) -> StoreResult<Page<Task>>;
}

/// Background tasks, as the runner on each node works them ([`crate::tasks`]): one runner holds
/// a task at a time, under a lease it renews; a task whose lease lapsed is taken up again where
/// its last batch left it.
#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Leases the oldest runnable task (queued, or running under a lapsed lease), if any.
    async fn lease_task(&self, lease: &TaskLease) -> StoreResult<Option<Task>>;
    /// One batch, in one transaction: if the lease is still `batch.token`, re-queues the next
    /// deliveries the filter takes after the task's cursor (pending and due now, same ids), and
    /// moves the cursor and `done` past them; a short batch finishes the task.
    async fn requeue_batch(&self, batch: &RequeueBatch) -> StoreResult<BatchOutcome>;
    /// Counts, up to `limit`, the deliveries in the filter's scope waiting for a claim now.
    async fn due_backlog(
        &self,
        filter: &RequeueFilter,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<u64>;
    /// Extends the lease `token` to `until`; false when the task is no longer under it.
    async fn renew_task(
        &self,
        id: &TaskId,
        token: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Stops the task under the lease `token` for good, with `error`; false when it is no
    /// longer under it.
    async fn fail_task(
        &self,
        id: &TaskId,
        token: &str,
        error: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

/// The delivery queue, as the dispatcher works it: claim with a lease, record the outcome,
/// give back what it will not attempt.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Leases up to `limit` due deliveries, oldest due first, within the per-webhook cap.
    async fn claim_due(&self, request: &ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        Ok(self.claim(request).await?.deliveries)
    }
    /// [`Queue::claim_due`], within each webhook's flow control (paused, rate limit, circuit),
    /// also telling when a webhook it left out or cut short may take deliveries again.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Claim>;
    /// Writes finished attempts; an attempt whose lease was lost is kept but changes nothing.
    /// Keeps each webhook's failure record, disables webhooks that answered 410 or have failed
    /// for `health.disable_after`, and publishes `webhook.disabled` for them.
    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        health: &HealthPolicy,
    ) -> StoreResult<()>;
    /// The most results to send [`Queue::record_attempts`] at once when retries are among them.
    /// A backend with one writer (SQLite) says a few: a publish waits for the write in hand, and
    /// a retry backlog's results would otherwise come in hundreds (issue 18: fresh deliveries
    /// first). The others write results beside publishes and take any number.
    fn retry_records_per_write(&self) -> usize {
        usize::MAX
    }
    /// Gives leases back so the deliveries are due again at once.
    async fn release(&self, releases: &[Release]) -> StoreResult<()>;
    /// After a claim that found fewer than it asked: which of the webhooks in `full_lanes` (those
    /// the per-webhook cap stopped, less the ones the claim left closed) have due work no lease
    /// holds, if they are unordered, not paused and their circuits closed; and when to look
    /// again: the first such delivery, or the next to fall due after now
    /// ([`super::next_due_sql`]).
    async fn next_due(&self, full_lanes: &[WebhookId]) -> StoreResult<NextDue>;

    /// Calls `on_work` whenever another process commits new due work, until `shutdown`.
    /// Backends shared by several processes implement it (PostgreSQL: LISTEN/NOTIFY); for a
    /// store only this process writes, the in-process waker already covers it.
    fn watch_for_work(&self, on_work: Arc<dyn Fn() + Send + Sync>, shutdown: CancellationToken) {
        let _ = (on_work, shutdown);
    }

    /// Lets publishing hand new deliveries straight to this node's dispatcher, leased to it for
    /// `lease`, so they need no claim. A backend that does not implement it leaves them all to
    /// the claims.
    fn set_intake(&self, intake: Arc<dyn Intake>, lease: std::time::Duration) {
        let _ = (intake, lease);
    }
}

/// The dispatcher's side of a hand-over from publishing (see [`Queue::set_intake`]).
pub trait Intake: Send + Sync {
    /// Reserves room for one new delivery to `webhook`; false when its lane or the node is full
    /// (the delivery is then left to the claims).
    fn reserve(&self, webhook: &WebhookId) -> bool;
    /// Hands over reserved deliveries, committed and leased until `lease_until`.
    fn hand_over(
        &self,
        claims: Vec<ClaimedDelivery>,
        claimed_at: Timestamp,
        lease_until: Timestamp,
    );
    /// Gives back reservations whose deliveries were not committed.
    fn cancel(&self, webhooks: &[WebhookId]);
}

/// Retention, for the janitor. Each call is one short transaction, so publishes and the
/// dispatcher's writes go on between batches.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Deletes the old, finished events of one batch, with their deliveries and attempts.
    /// Pending deliveries (retrying, or in flight) keep their events.
    async fn prune_events(&self, batch: &PruneEvents) -> StoreResult<PrunedEvents>;
    /// Deletes up to `limit` jobs that finished before `finished_before`, with their own
    /// webhooks, once those have no deliveries left. Returns how many jobs went.
    async fn prune_jobs(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Frees up to `limit` idempotency keys of events published before `before` (expired keys,
    /// which publishing already ignores). Returns how many.
    async fn forget_idempotency_keys(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Deletes up to `limit` rows of endpoint figures of minutes before `before`. Returns how
    /// many.
    async fn prune_stats(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Deletes up to `limit` background tasks that finished before `finished_before` (running
    /// and queued ones stay). Returns how many.
    async fn prune_tasks(&self, finished_before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Deletes up to `limit` listener webhooks whose lease lapsed before `now` (their node died,
    /// or their CLI did not come back), cancelling their pending deliveries, as a delete does.
    /// Returns how many.
    async fn remove_lapsed_listeners(&self, now: Timestamp, limit: usize) -> StoreResult<u64>;
    /// The accounts marked for erasure ([`Accounts::begin_erasure`]), the oldest mark first.
    async fn accounts_being_erased(&self) -> StoreResult<Vec<AccountId>>;
    /// Deletes up to `limit` rows of `step` of an account being erased, in one short
    /// transaction; deliveries whose lease runs past `now` are left for a later batch (see
    /// [`super::erasure`]). `None` when another node is erasing right now (PostgreSQL).
    async fn erase_batch(
        &self,
        account: &AccountId,
        step: ErasureStep,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Option<ErasedRows>>;
    /// Deletes the account row of an account being erased once no row of any
    /// [`ErasureStep`] is left; true when it is gone (or was already).
    async fn finish_erasure(&self, account: &AccountId) -> StoreResult<bool>;

    /// Calls `on_mark` whenever another process marks an account for erasure, until
    /// `shutdown`. Backends shared by several processes implement it (PostgreSQL: LISTEN);
    /// the process that marks one learns of it in memory.
    fn watch_for_erasures(
        &self,
        on_mark: Arc<dyn Fn() + Send + Sync>,
        shutdown: CancellationToken,
    ) {
        let _ = (on_mark, shutdown);
    }
    /// Deletes up to `limit` portal links or sessions that expired before `before`. Returns how
    /// many.
    async fn prune_portal(
        &self,
        tokens: PortalTokens,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64>;
}

/// The queue gauges of `/metrics`.
#[async_trait]
pub trait QueueGauges: Send + Sync + 'static {
    /// Counts the pending deliveries that are due (and not leased) and those scheduled later.
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth>;
    /// The flow control of the `limit` webhooks with the most pending deliveries.
    async fn busiest_webhooks(&self, now: Timestamp, limit: usize)
    -> StoreResult<Vec<WebhookFlow>>;
}

/// What the API uses: its resources, publishing, readiness, the listener streams, tasks, and the
/// portal's sessions.
pub trait ApiStore:
    Accounts
    + Webhooks
    + Jobs
    + Publisher
    + Events
    + Deliveries
    + Readiness
    + Listeners
    + Tasks
    + PortalSessions
{
}

impl<T> ApiStore for T where
    T: Accounts
        + Webhooks
        + Jobs
        + Publisher
        + Events
        + Deliveries
        + Readiness
        + Listeners
        + Tasks
        + PortalSessions
        + ?Sized
{
}

/// The operator's webhook ([`super::operator`]), set at start from the configuration.
#[async_trait]
pub trait OperatorWebhook: Send + Sync + 'static {
    /// Makes the hidden operator account and its webhook, or brings the webhook in line with
    /// `webhook` (URL, secret, retry policy; active again, undeleted). `None` (no `[operator]`)
    /// deletes the webhook, cancelling its pending deliveries; nothing when there is none.
    async fn set_operator_webhook(
        &self,
        webhook: Option<&Webhook>,
        now: Timestamp,
    ) -> StoreResult<()>;
}

/// Whether the store can serve requests now (`/readyz`).
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// The database answers, every migration this build knows is applied, and (SQLite) the
    /// writer thread takes writes; else what is not so, in words fit for an unauthenticated
    /// answer (the cause itself is logged).
    async fn check_ready(&self) -> Result<(), String>;
}

/// The whole store, as [`super::open`] returns it: each part goes to the caller that uses it
/// (an `Arc<dyn Store>` coerces to an `Arc` of any of its traits).
pub trait Store: ApiStore + Queue + Retention + QueueGauges + TaskQueue + OperatorWebhook {}

impl<T> Store for T where
    T: ApiStore + Queue + Retention + QueueGauges + TaskQueue + OperatorWebhook + ?Sized
{
}
