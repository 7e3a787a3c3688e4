//! The `herald listen --forward-to` streams this node holds: a registry from listener webhook to
//! stream, through which the sender relays a listener webhook's attempts instead of making an
//! HTTP request, and the task that renews those webhooks' leases while their streams live.
//!
//! The registry is node-local on purpose: only the node holding a stream can send down it, and
//! the store lets only that node claim the webhook's deliveries (`listener_node`). An attempt
//! that finds no stream here (it broke, and the CLI has not come back yet) fails as an
//! unreachable endpoint does, and is retried by the webhook's policy.

use crate::domain::{AccountId, WebhookId};
use crate::store::Listeners;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Attempts that may wait for a stream's task to send them.
const RELAYS_QUEUED: usize = 64;

/// How long shutdown waits for the streams to say goodbye.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One attempt to send down a stream, as the HTTP request it stands for.
#[derive(Clone, Debug)]
pub struct RelayRequest {
    pub delivery_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub timeout: Duration,
}

/// What the CLI reported for one relayed attempt.
pub type RelayAnswer = crate::listen::protocol::DeliveryResult;

/// An attempt handed to a stream's task, and where its answer goes.
pub struct Relay {
    pub request: RelayRequest,
    pub reply: oneshot::Sender<RelayAnswer>,
}

/// Why a relayed attempt got no answer from the CLI.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no `herald listen` stream for this webhook is connected to node {0}")]
    NoStream(String),
    #[error("the `herald listen` stream closed before the CLI answered")]
    StreamClosed,
    #[error("the `herald listen` CLI did not answer within {0:?}")]
    TimedOut(Duration),
}

struct Registered {
    generation: u64,
    account: AccountId,
    relays: mpsc::Sender<Relay>,
    revoked: CancellationToken,
}

/// The streams of this node.
pub struct ListenerHub {
    node: String,
    streams: Mutex<HashMap<WebhookId, Registered>>,
    generations: AtomicU64,
    /// Fired at shutdown, once the dispatcher is done: every stream closes ("going away").
    closing: CancellationToken,
    tasks: TaskTracker,
}

/// A stream's side of its registration: the attempts to send, and the signals to stop. Dropped,
/// it takes the stream out of the registry, and lets a shutdown waiting for the streams go on.
pub struct StreamHandle {
    hub: Arc<ListenerHub>,
    pub webhook: WebhookId,
    generation: u64,
    pub relays: mpsc::Receiver<Relay>,
    /// The webhook was deleted, or another stream took it over.
    pub revoked: CancellationToken,
    /// The server is shutting down.
    pub closing: CancellationToken,
    _task: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl StreamHandle {
    /// Takes the stream out of the registry (unless a newer stream of the webhook replaced it):
    /// attempts from then on find no stream here.
    pub fn unregister(&self) {
        let mut streams = self.hub.lock();
        if streams
            .get(&self.webhook)
            .is_some_and(|r| r.generation == self.generation)
        {
            streams.remove(&self.webhook);
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl ListenerHub {
    pub fn new(node: String) -> Arc<Self> {
        Arc::new(Self {
            node,
            streams: Mutex::default(),
            generations: AtomicU64::new(0),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// This node's id, which listener webhooks record as their holder.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WebhookId, Registered>> {
        self.streams.lock().expect("listener registry lock")
    }

    /// Streams the account holds open on this node.
    pub fn streams_of(&self, account: &AccountId) -> usize {
        self.lock()
            .values()
            .filter(|r| r.account == *account)
            .count()
    }

    /// Registers a stream for `webhook`; one already registered for it (a CLI that came back
    /// before its old connection was found dead) is revoked.
    pub fn register(self: &Arc<Self>, account: AccountId, webhook: WebhookId) -> StreamHandle {
        let (tx, rx) = mpsc::channel(RELAYS_QUEUED);
        let revoked = CancellationToken::new();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let old = self.lock().insert(
            webhook.clone(),
            Registered {
                generation,
                account,
                relays: tx,
                revoked: revoked.clone(),
            },
        );
        if let Some(old) = old {
            old.revoked.cancel();
        }
        StreamHandle {
            hub: self.clone(),
            webhook,
            generation,
            relays: rx,
            revoked,
            closing: self.closing.clone(),
            _task: self.tasks.token(),
        }
    }

    /// Sends one attempt down the webhook's stream and waits up to `wait` for the CLI's answer.
    pub async fn relay(
        &self,
        webhook: &WebhookId,
        request: RelayRequest,
        wait: Duration,
    ) -> Result<RelayAnswer, RelayError> {
        let relays = self
            .lock()
            .get(webhook)
            .map(|r| r.relays.clone())
            .ok_or_else(|| RelayError::NoStream(self.node.clone()))?;
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            relays
                .send(Relay { request, reply })
                .await
                .map_err(|_| RelayError::StreamClosed)?;
            answer.await.map_err(|_| RelayError::StreamClosed)
        };
        tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| RelayError::TimedOut(wait))?
    }

    /// Revokes the streams of webhooks this node no longer holds.
    fn revoke_all_but(&self, asked: &[WebhookId], held: &[WebhookId]) {
        let streams = self.lock();
        for id in asked.iter().filter(|id| !held.contains(id)) {
            if let Some(r) = streams.get(id) {
                info!(webhook_id = %id, "listener webhook deleted or taken over; closing its stream");
                r.revoked.cancel();
            }
        }
    }

    /// Renews the leases of this node's listener webhooks every third of `lease` until
    /// `shutdown`; streams whose webhook is gone are closed. A renewal that fails is tried again
    /// at the next tick (two more before the lease lapses).
    pub async fn renew(
        self: Arc<Self>,
        store: Arc<dyn Listeners>,
        lease: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let ids: Vec<WebhookId> = self.lock().keys().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let until = crate::domain::Timestamp::now().plus(lease);
            match store.renew_listeners(&ids, &self.node, until).await {
                Ok(held) => self.revoke_all_but(&ids, &held),
                Err(e) => warn!(error = %e, "renewing listener leases failed; trying again"),
            }
        }
    }

    /// Closes every stream ("going away": their CLIs reconnect, to another node if there is
    /// one) and waits a little for them to say so.
    pub async fn close(&self) {
        self.closing.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.tasks.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RelayRequest {
        RelayRequest {
            delivery_id: "dlv_1".into(),
            event_type: "order.created".into(),
            attempt: 1,
            headers: Vec::new(),
            body: "{}".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn an_attempt_goes_down_the_registered_stream_and_back() {
        let hub = ListenerHub::new("n1".into());
        let webhook = WebhookId::generate();
        let mut stream = hub.register(AccountId::generate(), webhook.clone());
        let cli = tokio::spawn(async move {
            let relay = stream.relays.recv().await.unwrap();
            assert_eq!(relay.request.delivery_id, "dlv_1");
            relay
                .reply
                .send(RelayAnswer {
                    status: Some(204),
                    ..RelayAnswer::default()
                })
                .unwrap();
            stream
        });
        let answer = hub
            .relay(&webhook, request(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer.status, Some(204));
        drop(cli.await.unwrap());
        let gone = hub.relay(&webhook, request(), Duration::from_secs(5)).await;
        assert!(matches!(gone, Err(RelayError::NoStream(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn a_newer_stream_revokes_the_older_and_survives_its_drop() {
        let hub = ListenerHub::new("n1".into());
        let (account, webhook) = (AccountId::generate(), WebhookId::generate());
        let old = hub.register(account.clone(), webhook.clone());
        let new = hub.register(account.clone(), webhook.clone());
        assert!(old.revoked.is_cancelled());
        assert!(!new.revoked.is_cancelled());
        drop(old);
        assert_eq!(
            hub.streams_of(&account),
            1,
            "the newer stream stays registered"
        );
        drop(new);
        assert_eq!(hub.streams_of(&account), 0);
    }

    #[tokio::test]
    async fn a_stream_that_ends_before_answering_fails_the_attempt_at_once() {
        let hub = ListenerHub::new("n1".into());
        let webhook = WebhookId::generate();
        let mut stream = hub.register(AccountId::generate(), webhook.clone());
        let cli = tokio::spawn(async move {
            let relay = stream.relays.recv().await.unwrap();
            drop(relay);
            stream
        });
        let failed = hub.relay(&webhook, request(), Duration::from_secs(5)).await;
        assert!(
            matches!(failed, Err(RelayError::StreamClosed)),
            "{failed:?}"
        );
        drop(cli.await.unwrap());
    }
}
