//! `herald listen`, in one of two modes:
//! - with `--forward-to`, for the provider's customers ([`forward`]): a stream to the server
//!   brings the account's deliveries, which the CLI posts to a local URL, so trying webhooks
//!   needs no public address, no tunnel and no `--dev` on the server;
//! - without, for providers trying Herald on their own machine ([`receiver`]): a local receiver
//!   the server delivers to.
//!
//! [`protocol`] is the stream's wire format, shared with the server's end (`api/listen.rs`).

mod forward;
pub mod protocol;
mod receiver;

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, clap::Args)]
pub struct ListenArgs {
    /// Forward the account's deliveries to this local URL, over a stream from the server (needs
    /// --api and --key). Without it, run a local receiver the server delivers to.
    #[arg(long, value_name = "URL", requires_all = ["api", "key"])]
    pub forward_to: Option<url::Url>,
    /// The Herald server's base URL (with --forward-to).
    #[arg(long, env = "HERALD_API_URL", value_name = "URL")]
    pub api: Option<url::Url>,
    /// The account's API key (with --forward-to).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// With the admin token as --key: the account to listen for.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// Event types or patterns to get, comma-separated (with --forward-to) [default: *].
    #[arg(long, value_name = "TYPES", conflicts_with = "resume")]
    pub events: Option<String>,
    /// Take up the listener webhook of a stream that broke (the `wh_…` printed at start), with
    /// its secret and the deliveries that waited for it (with --forward-to).
    #[arg(long, value_name = "WEBHOOK_ID", requires = "forward_to")]
    pub resume: Option<String>,
    /// Address to listen on (receiver mode).
    #[arg(
        long,
        default_value = "127.0.0.1:9000",
        value_name = "ADDR",
        conflicts_with = "forward_to"
    )]
    pub listen: SocketAddr,
    /// The webhook's signing secret (whsec_…), to check each signature (receiver mode).
    #[arg(
        long,
        env = "HERALD_LISTEN_SECRET",
        hide_env_values = true,
        conflicts_with = "forward_to"
    )]
    pub secret: Option<String>,
    /// Status code to answer with; try 500 to watch the retries (receiver mode).
    #[arg(long, default_value_t = 200, conflicts_with = "forward_to")]
    pub status: u16,
}

/// Runs the mode the arguments ask for until `shutdown` fires.
pub async fn run(args: ListenArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    match (&args.forward_to, &args.api, &args.key) {
        (Some(to), Some(api), Some(key)) => {
            let options = forward::Options {
                api: api.clone(),
                key: key.clone(),
                account: args.account.clone(),
                events: args.events.clone(),
                forward_to: to.clone(),
                resume: args.resume.clone(),
            };
            forward::run(options, shutdown).await
        }
        (Some(_), _, _) => anyhow::bail!("--forward-to needs --api and --key"),
        (None, _, _) => receiver::run(args, shutdown).await,
    }
}
