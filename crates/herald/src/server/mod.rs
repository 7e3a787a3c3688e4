//! The HTTP front: accepts connections for the API within limits, so that a flood of
//! connections (idle, or sending their request slowly) cannot take the server's file
//! descriptors, its memory or its store's connections.
//!
//! - At most [`Limits::max_connections`] connections are held; at the cap a newcomer closes the
//!   longest-open connection that serves no request ([`connections`]).
//! - A connection must send a complete request head within [`Limits::header_timeout`] of
//!   opening, and of its previous answer when kept alive (hyper's header read timeout).
//! - Request bodies have their own deadline, enforced where the API reads them.
//! - hyper's own rejections are answered in the API's JSON error shape ([`json_errors`]).

mod connections;
mod json_errors;

use axum::Router;
use connections::Connections;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use json_errors::JsonErrors;
use std::pin::pin;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Most request headers a request may have (beyond: 431).
const MAX_HEADERS: usize = 100;

/// Files kept for everything but the API's connections: the store's pool and files, the
/// dispatcher's outbound connections, logs.
fn files_reserved(database_pool: u32, workers: usize) -> u64 {
    256 + u64::from(database_pool) + 2 * workers as u64
}

/// How the API's connections are bounded.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Limits {
    /// Raises the soft open-file limit as far as the hard limit allows, lowers
    /// `max_connections` to leave room for the rest of the server, and logs what it runs with.
    pub fn fit_to_file_limit(mut self, database_pool: u32, workers: usize) -> Self {
        let reserved = files_reserved(database_pool, workers);
        match raise_file_limit() {
            Some(files) => {
                let room = files.saturating_sub(reserved).max(1);
                let fitted = self
                    .max_connections
                    .min(usize::try_from(room).unwrap_or(usize::MAX));
                if fitted < self.max_connections {
                    warn!(
                        configured = self.max_connections,
                        open_files_limit = files,
                        "api.max_connections lowered to fit the open-file limit (raise the hard limit, ulimit -Hn, for more)"
                    );
                }
                self.max_connections = fitted;
                info!(
                    open_files_limit = files,
                    max_connections = self.max_connections,
                    header_timeout = ?self.header_timeout,
                    "API connection limits"
                );
            }
            None => info!(
                max_connections = self.max_connections,
                header_timeout = ?self.header_timeout,
                "API connection limits (the open-file limit could not be read)"
            ),
        }
        self
    }
}

/// The soft open-file limit after raising it to the hard one where that is higher.
fn raise_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(files) => Some(files),
            Err(e) => {
                warn!(error = %e, "could not raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE)
                    .ok()
                    .map(|(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Serves `app` on `listener` until `shutdown` fires, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let table = Connections::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS);
    let tasks = TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_errors.report(&e, table.open()).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(admitted) = table.admit() else {
            tasks.spawn(turn_away(stream));
            continue;
        };
        let slot = admitted.handle();
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = slot.busy();
            let app = app.clone();
            async move {
                let answer = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(busy);
                answer
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(JsonErrors::new(stream)), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut connection = pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, "connection ended with an error");
                    }
                }
                () = admitted.evicted() => debug!("connection closed for a newer one"),
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Answers a connection that found every place taken by a request in progress: a 503 in the
/// API's error shape, then close.
async fn turn_away(mut stream: TcpStream) {
    let body = r#"{"error":{"code":"too_many_connections","message":"the server holds as many connections as it may, each serving a request; retry shortly"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Accept failures: a client that gave up before its connection was taken is routine; running
/// out of file descriptors is not, and is logged (at most once a second) while it lasts.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<tokio::time::Instant>,
}

impl AcceptErrors {
    async fn report(&mut self, e: &std::io::Error, open: usize) {
        use std::io::ErrorKind::*;
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
        ) {
            return;
        }
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_logged = Some(now);
            warn!(error = %e, open_connections = open, "accepting a connection failed; retrying");
        }
        // Out of descriptors: give closing connections a moment instead of spinning.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
