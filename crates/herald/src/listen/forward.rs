//! `herald listen --forward-to URL`: opens a stream to the server (`GET /v1/listen`, a WebSocket
//! under the account's API key), prints the ephemeral webhook's signing secret, and posts every
//! delivery that comes down the stream to the local URL exactly as the server would have (same
//! body, same headers, same signature), printing one line per delivery and sending the local
//! answer back as the attempt's result.
//!
//! Ctrl-C closes the stream, which deletes the webhook. A stream that breaks off is opened again
//! (`?resume=`), so the webhook, its secret and its pending deliveries carry on; if the webhook
//! expired meanwhile, a new one is made and its new secret printed.

use super::protocol::{self, ClientMessage, Delivery, DeliveryResult, Ready, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use reqwest::header;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

type Stream = WebSocketStream<reqwest::Upgraded>;

/// Bytes of the local answer sent back (the server keeps at most its capture limit anyway).
const ANSWER_BYTES: usize = 4096;

/// Longest wait between two tries to reach the server.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long the server has to send its first message, and to answer a close.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What `herald listen --forward-to` was asked to do.
pub struct Options {
    pub api: url::Url,
    pub key: String,
    pub account: Option<String>,
    pub events: Option<String>,
    pub forward_to: url::Url,
    /// A listener webhook to take up rather than make a new one.
    pub resume: Option<String>,
}

/// Why a stream could not be opened.
enum Refused {
    /// The server cannot be reached, or is not ready: try again.
    Transient(String),
    /// The listener to resume is gone (its lease lapsed): open a new one.
    Gone,
    /// The server said no (credentials, arguments): stop.
    Fatal(String),
}

/// How a stream ended.
enum End {
    /// Ctrl-C: the stream was closed, and its webhook deleted.
    Stopped,
    /// The server ended it for good (the webhook was deleted or taken over).
    Revoked(String),
    /// It broke off: reconnect.
    Lost(String),
}

pub async fn run(options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::install_tls_provider();
    // HTTP/1.1: the WebSocket handshake is an HTTP/1.1 upgrade.
    let server = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    // As the server's own client: no redirects followed.
    let local = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut resume: Option<String> = options.resume.clone();
    let mut first = true;
    let mut backoff = Duration::ZERO;
    loop {
        let opened = tokio::select! {
            opened = open(&server, &options, resume.as_deref()) => opened,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let stream = match opened {
            Ok(stream) => stream,
            Err(Refused::Fatal(message)) => anyhow::bail!(message),
            Err(Refused::Gone) => {
                eprintln!(
                    "The listener expired while disconnected; opening a new one, with a new secret."
                );
                resume = None;
                continue;
            }
            Err(Refused::Transient(message)) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                eprintln!(
                    "Cannot reach {}: {message}; retrying in {}s",
                    options.api,
                    backoff.as_secs()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        };
        backoff = Duration::ZERO;
        match session(stream, &local, &options, &mut resume, &mut first, &shutdown).await? {
            End::Stopped => return Ok(()),
            End::Revoked(reason) => anyhow::bail!("the server ended the stream: {reason}"),
            End::Lost(reason) => eprintln!("Lost the stream ({reason}); reconnecting…"),
        }
    }
}

/// The URL of `GET /v1/listen` on the server, with its query.
fn listen_url(options: &Options, resume: Option<&str>) -> url::Url {
    let mut url = options.api.clone();
    let path = format!("{}/v1/listen", url.path().trim_end_matches('/'));
    url.set_path(&path);
    {
        let mut query = url.query_pairs_mut();
        if let Some(account) = &options.account {
            query.append_pair("account", account);
        }
        match resume {
            Some(id) => {
                query.append_pair("resume", id);
            }
            None => {
                if let Some(events) = &options.events {
                    query.append_pair("events", events);
                }
            }
        }
    }
    url
}

/// Opens the stream: the WebSocket handshake, over reqwest (so `https://` servers and proxies
/// work as for any request).
async fn open(
    server: &reqwest::Client,
    options: &Options,
    resume: Option<&str>,
) -> Result<Stream, Refused> {
    let key = generate_key();
    let answer = server
        .get(listen_url(options, resume))
        .bearer_auth(&options.key)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .send()
        .await
        .map_err(|e| Refused::Transient(error_chain(&e)))?;
    let status = answer.status();
    if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no explanation given")
            .to_owned();
        return Err(match status.as_u16() {
            404 if resume.is_some() => Refused::Gone,
            429 | 500..=599 => Refused::Transient(format!("{status}: {message}")),
            _ => Refused::Fatal(format!(
                "the server refused the stream ({status}): {message}"
            )),
        });
    }
    let accepted = answer
        .headers()
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
    if !accepted {
        return Err(Refused::Fatal(
            "the server's answer is not a WebSocket handshake (is --api a Herald server?)".into(),
        ));
    }
    let upgraded = answer
        .upgrade()
        .await
        .map_err(|e| Refused::Transient(error_chain(&e)))?;
    Ok(WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await)
}

/// Runs one stream until it ends: forwards each delivery and sends its result back.
async fn session(
    mut stream: Stream,
    local: &reqwest::Client,
    options: &Options,
    resume: &mut Option<String>,
    first: &mut bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<End> {
    let ready = match tokio::time::timeout(HANDSHAKE_WAIT, first_message(&mut stream)).await {
        Ok(Ok(ready)) => ready,
        Ok(Err(reason)) => return Ok(End::Lost(reason)),
        Err(_) => return Ok(End::Lost("the server sent nothing".into())),
    };
    announce(&ready, *first, options);
    *first = false;
    *resume = Some(ready.webhook_id.clone());
    let (results, mut finished) = mpsc::unbounded_channel::<DeliveryResult>();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Delivery(delivery)) => {
                        let (local, to, results) = (local.clone(), options.forward_to.clone(), results.clone());
                        tokio::spawn(async move {
                            let _ = results.send(forward(&local, to, delivery).await);
                        });
                    }
                    Ok(ServerMessage::Ready(_)) => {}
                    Err(e) => eprintln!("Ignoring a message this herald does not understand: {e}"),
                },
                Some(Ok(Message::Close(frame))) => return Ok(closed_by_server(frame)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(End::Lost(e.to_string())),
                None => return Ok(End::Lost("the connection closed".into())),
            },
            Some(result) = finished.recv() => {
                let text = serde_json::to_string(&ClientMessage::Result(result)).expect("results serialize");
                if let Err(e) = stream.send(Message::Text(text.into())).await {
                    return Ok(End::Lost(e.to_string()));
                }
            }
            _ = shutdown.cancelled() => {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "herald listen stopped".into() };
                let closed = tokio::time::timeout(CLOSE_WAIT, async {
                    stream.send(Message::Close(Some(frame))).await?;
                    while stream.next().await.transpose()?.is_some() {}
                    Ok::<_, tokio_tungstenite::tungstenite::Error>(())
                })
                .await;
                match closed {
                    Ok(Ok(())) | Ok(Err(_)) => println!("Stopped; the listener webhook is deleted."),
                    Err(_) => println!("Stopped (the server did not confirm; the listener webhook expires on its own)."),
                }
                return Ok(End::Stopped);
            }
        }
    }
}

/// The server's first message, [`Ready`].
async fn first_message(stream: &mut Stream) -> Result<Ready, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Ready(ready)) => Ok(ready),
                    _ => Err("the server's first message was not `ready`".into()),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match closed_by_server(frame) {
                    End::Lost(r) | End::Revoked(r) => r,
                    End::Stopped => "closed".into(),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the connection closed".into()),
        }
    }
}

fn closed_by_server(frame: Option<CloseFrame>) -> End {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1005, "no reason given".to_owned()));
    if code == protocol::CLOSE_REVOKED {
        End::Revoked(reason)
    } else {
        End::Lost(format!("the server closed it: {reason}"))
    }
}

/// Says the stream is up: the secret on a new listener, as `stripe listen` does.
fn announce(ready: &Ready, first: bool, options: &Options) {
    match (first, ready.resumed) {
        (false, true) => {
            println!("Reconnected; still forwarding to {}.", options.forward_to);
            return;
        }
        (false, false) => {
            println!("A new listener replaces the expired one: update your receiver's secret.")
        }
        (true, _) => {}
    }
    println!(
        "Ready! Your webhook signing secret is {} (^C to quit)",
        ready.secret
    );
    println!(
        "Forwarding {} to {} (webhook {})",
        ready.events.join(", "),
        options.forward_to,
        ready.webhook_id
    );
}

/// POSTs one delivery to the local URL, as the server would, prints a line for it, and returns
/// what the local receiver made of it.
async fn forward(local: &reqwest::Client, to: url::Url, delivery: Delivery) -> DeliveryResult {
    let started = Instant::now();
    let mut request = local
        .post(to)
        .timeout(Duration::from_millis(delivery.timeout_ms))
        .body(delivery.body.clone());
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let mut result = DeliveryResult {
        id: delivery.id,
        ..DeliveryResult::default()
    };
    match request.send().await {
        Ok(mut answer) => {
            result.status = Some(answer.status().as_u16());
            result.retry_after = answer
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            while body.len() < ANSWER_BYTES {
                match answer.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = ANSWER_BYTES - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            result.body = Some(String::from_utf8_lossy(&body).into_owned());
        }
        Err(e) => {
            result.timed_out = e.is_timeout();
            result.error = Some(error_chain(&e));
        }
    }
    let outcome = match (result.status, &result.error) {
        (Some(code), _) => format!("[{code}]"),
        (None, _) if result.timed_out => "[timed out]".to_owned(),
        (None, Some(e)) => format!("[error: {e}]"),
        (None, None) => "[no answer]".to_owned(),
    };
    let attempt = if delivery.attempt > 1 {
        format!("  (attempt {})", delivery.attempt)
    } else {
        String::new()
    };
    println!(
        "{}  {}  {}  {outcome}  {} ms{attempt}",
        crate::domain::Timestamp::now().to_rfc3339(),
        delivery.event_type,
        delivery.delivery_id,
        started.elapsed().as_millis(),
    );
    result
}

/// An error and its causes, without reqwest's URL (the local URL is the user's own, but the
/// server's may carry a path they would rather not see repeated).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        parts.push(err.to_string());
        source = err.source();
    }
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(api: &str) -> Options {
        Options {
            api: api.parse().unwrap(),
            key: "k".into(),
            account: None,
            events: Some("tts.*,stt.completed".into()),
            forward_to: "http://localhost:3000/hook".parse().unwrap(),
            resume: None,
        }
    }

    #[test]
    fn the_listen_url_keeps_a_base_path_and_carries_the_query() {
        let url = listen_url(&options("https://api.example.com/herald/"), None);
        assert_eq!(
            url.as_str(),
            "https://api.example.com/herald/v1/listen?events=tts.*%2Cstt.completed"
        );
        let url = listen_url(&options("http://127.0.0.1:8080"), Some("wh_1"));
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/listen?resume=wh_1");
    }
}
