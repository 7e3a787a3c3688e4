//! `herald listen` without `--forward-to`: a receiver for local development. It prints every
//! webhook it gets and, given the webhook's secret, checks the signature. The server must reach
//! it (`--dev`, or a tunnel): this is for providers trying Herald on their own machine.

use super::ListenArgs;
use crate::domain::SigningSecret;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

struct Receiver {
    secret: Option<SigningSecret>,
    status: StatusCode,
}

pub async fn run(args: ListenArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(SigningSecret::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let status = StatusCode::from_u16(args.status)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "Listening for webhooks on http://{} (answering {status})",
        listener.local_addr()?
    );
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(Arc::new(Receiver { secret, status }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let signature = match &r.secret {
        None => "not checked (pass --secret)",
        Some(secret) => {
            let ts = h("webhook-timestamp").parse().unwrap_or(0);
            if secret.verify(h("webhook-id"), ts, &body, h("webhook-signature")) {
                "valid"
            } else {
                "INVALID"
            }
        }
    };
    println!(
        "{method} {uri}  webhook-id={}  type={}  attempt={}  signature {signature}\n{}\n",
        h("webhook-id"),
        h("herald-event-type"),
        h("herald-attempt"),
        String::from_utf8_lossy(&body)
    );
    r.status
}
