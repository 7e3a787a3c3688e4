//! The `herald` command line. It parses arguments and hands over to the library.

use clap::{Parser, Subcommand};
use herald::app::Herald;
use herald::config::{ServeArgs, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A self-hosted webhook delivery server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the HTTP API and the delivery dispatcher.
    Serve(ServeArgs),
    /// Forward an account's deliveries to a local URL over a stream from the server
    /// (--forward-to), or run a local receiver that prints the webhooks it gets.
    Listen(Box<herald::listen::ListenArgs>),
    /// Print a new random key for HERALD_SECRETS_KEY (encrypts webhook secrets at rest).
    GenSecretsKey,
    /// Send a test event of a catalog type (its example, or --data) to the account's webhooks.
    Trigger(herald::cli::trigger::TriggerArgs),
    /// Verify a captured delivery's signature offline (body on standard input) and say why not.
    Verify(herald::cli::verify::VerifyArgs),
    /// Re-queue a webhook's failed deliveries of a span of time, and follow the task to its end.
    Recover(herald::cli::recover::RecoverArgs),
}

/// mimalloc instead of glibc's malloc: Herald makes and frees many short-lived buffers (requests,
/// rows, JSON), and glibc's allocator showed high in the e2e profile (docs/BENCHMARKS.md, pass 6).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(&args)?;
            let server = Herald::build(settings).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(
                shutdown.clone(),
                "shutting down: no new claims; finishing attempts in flight",
            ));
            server.run(shutdown).await
        }
        Command::GenSecretsKey => {
            println!(
                "{}",
                herald::store::seal::SecretsKey::generate().to_base64()
            );
            Ok(())
        }
        Command::Listen(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone(), "receiver stopping"));
            herald::listen::run(*args, shutdown).await
        }
        Command::Trigger(args) => herald::cli::finish(herald::cli::trigger::run(args).await),
        Command::Verify(args) => herald::cli::finish(herald::cli::verify::run(args)),
        Command::Recover(args) => herald::cli::finish(herald::cli::recover::run(args).await),
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM, saying `what` happens next.
async fn signal_shutdown(token: CancellationToken, what: &'static str) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("{what}");
    token.cancel();
}
