//! `herald listen`: a receiver for local development. It prints every webhook it gets and, given
//! the webhook's secret, checks the signature, so nobody needs a public tunnel to try Herald.

use crate::domain::SigningSecret;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The webhook's signing secret (whsec_…), to check each signature.
    #[arg(long, env = "HERALD_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Status code to answer with (try 500 to watch the retries).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
}

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
