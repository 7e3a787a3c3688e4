//! User tools besides `serve` and `listen`: `herald trigger` (a test send of any catalog event
//! to the account's webhooks), `herald verify` (why a captured delivery's signature does or
//! does not verify) and `herald recover` (re-queue a webhook's failed deliveries, with a
//! progress bar). `main.rs` only parses their flags and calls `run`; `client` is the API client
//! they share.

mod client;
mod diagnose;
pub mod recover;
pub mod trigger;
pub mod verify;

/// Ends a tool's run: on an error, its message (with its causes) on standard error and exit
/// status 1, without the backtrace `main` returning an error would print under `RUST_BACKTRACE`.
pub fn finish(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
