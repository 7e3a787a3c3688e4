//! One `herald listen` stream, once upgraded: sends the relayed attempts down the WebSocket,
//! hands the CLI's answers back to the waiting attempts, and decides, when the stream ends, what
//! becomes of its webhook: deleted when the CLI closed the stream (Ctrl-C), kept for the CLI to
//! come back to (until its lease lapses) when the stream broke or the server is going away.

use crate::dispatch::listeners::{RelayAnswer, StreamHandle};
use crate::domain::{AccountId, Timestamp};
use crate::listen::protocol::{self, ClientMessage, Delivery, Ready, ServerMessage};
use crate::store::ApiStore;
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// How often the server pings the CLI; a CLI silent for [`SILENCE_LIMIT`] pings is taken for
/// gone (a half-open connection: a laptop that went to sleep, a cut link).
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: u32 = 3;

/// How long the server waits for the CLI's half of a closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a stream ended.
#[derive(Debug)]
enum End {
    /// The CLI closed it: the listener is done.
    ClosedByClient,
    /// It broke off: the CLI may come back within the lease.
    Lost(&'static str),
    /// The webhook was deleted, or another stream took it over.
    Revoked,
    /// This server is shutting down.
    ServerClosing,
}

/// Serves the stream until it ends, then deletes its webhook if the CLI closed it.
pub(super) async fn serve(
    mut socket: WebSocket,
    mut handle: StreamHandle,
    ready: Ready,
    store: Arc<dyn ApiStore>,
    account: AccountId,
) {
    let span = info_span!("listen", webhook_id = %handle.webhook, account_id = %account);
    async move {
        let end = run(&mut socket, &mut handle, ready).await;
        let webhook = handle.webhook.clone();
        // Out of the registry first: attempts from now on find no stream and are retried.
        handle.unregister();
        match end {
            End::ClosedByClient => {
                let deleted = store
                    .delete_webhook(Some(&account), &webhook, Timestamp::now())
                    .await;
                match deleted {
                    Ok(_) => info!("listener stream closed by the CLI; its webhook is deleted"),
                    Err(e) => warn!(error = %e,
                        "listener stream closed, but deleting its webhook failed; it goes when its lease lapses"),
                }
            }
            End::Lost(why) => info!(
                why,
                "listener stream lost; its webhook waits for the CLI until its lease lapses"
            ),
            End::Revoked => info!("listener stream closed: its webhook was deleted or taken over"),
            End::ServerClosing => info!("listener stream closed: the server is shutting down"),
        }
        // The store goes before the handle: a shutdown waits for the handles, and a SQLite
        // store must be let go of by then for the next start to open it.
        drop(store);
        drop(handle);
    }
    .instrument(span)
    .await
}

async fn run(socket: &mut WebSocket, handle: &mut StreamHandle, ready: Ready) -> End {
    if send(socket, &ServerMessage::Ready(ready)).await.is_err() {
        return End::Lost("the connection failed before the stream started");
    }
    let mut waiting: HashMap<u64, oneshot::Sender<RelayAnswer>> = HashMap::new();
    let mut next_id = 0u64;
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            relay = handle.relays.recv() => {
                let Some(relay) = relay else { return End::ServerClosing };
                next_id += 1;
                let r = relay.request;
                let delivery = Delivery {
                    id: next_id,
                    delivery_id: r.delivery_id,
                    event_type: r.event_type,
                    attempt: r.attempt,
                    headers: r.headers,
                    body: r.body,
                    timeout_ms: r.timeout.as_millis() as u64,
                };
                if send(socket, &ServerMessage::Delivery(delivery)).await.is_err() {
                    return End::Lost("sending a delivery failed");
                }
                waiting.insert(next_id, relay.reply);
            }
            message = socket.recv() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Result(result)) => {
                            if let Some(reply) = waiting.remove(&result.id) {
                                // The attempt may have given up waiting; then the answer is moot.
                                let _ = reply.send(result);
                            }
                        }
                        Err(_) => {
                            close(socket, close_code::INVALID, "not a message of the listen protocol").await;
                            return End::Lost("the CLI sent a message outside the protocol");
                        }
                    },
                    Some(Ok(Message::Close(_))) => {
                        finish_close(socket).await;
                        return End::ClosedByClient;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        close(socket, close_code::UNSUPPORTED, "the listen protocol is text").await;
                        return End::Lost("the CLI sent a binary message");
                    }
                    Some(Err(_)) | None => return End::Lost("the connection dropped"),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PING_EVERY * SILENCE_LIMIT {
                    return End::Lost("the CLI stopped answering pings");
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return End::Lost("the connection dropped");
                }
                // Attempts that stopped waiting (timed out) need no answer kept for them.
                waiting.retain(|_, reply| !reply.is_closed());
            }
            _ = handle.revoked.cancelled() => {
                close(socket, protocol::CLOSE_REVOKED, "the listener webhook was deleted or taken over").await;
                return End::Revoked;
            }
            _ = handle.closing.cancelled() => {
                close(socket, close_code::AWAY, "the server is shutting down").await;
                return End::ServerClosing;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).expect("messages serialize");
    socket.send(Message::Text(text.into())).await
}

/// Sends a close frame and waits (briefly) for the CLI's.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        finish_close(socket).await;
    }
}

/// Reads on until the connection ends, so the close handshake completes (tungstenite answers
/// the CLI's close frame as it reads).
async fn finish_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
