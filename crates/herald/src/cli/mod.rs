//! User tools besides `serve` and `listen`: `herald trigger` (a test send of any catalog event
//! to the account's webhooks) and `herald verify` (why a captured delivery's signature does or
//! does not verify). `main.rs` only parses their flags and calls `run`.

mod diagnose;
pub mod trigger;
pub mod verify;
