//! Herald: a self-hosted webhook delivery server.
//!
//! The parts (docs/architecture.md §3): [`config`] (typed settings), [`domain`] (pure rules),
//! [`store`] (durable state), [`dispatch`] (claim → sign → send → record), [`api`] (the HTTP
//! interface) behind [`server`] (connections within limits), [`janitor`] (retention),
//! [`erasure`] (deleting an account and everything of it) and [`tasks`] (background tasks: bulk
//! re-queues), tied together by [`app`]; [`telemetry`] counts what they do; [`schemas`] checks event data against
//! the catalog's JSON Schemas. [`listen`] is the `herald listen` command and its stream's
//! protocol; [`cli`] holds the other user tools, `herald trigger` and `herald verify`; [`portal`]
//! is the customer portal's web pages.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod erasure;
pub mod janitor;
pub mod listen;
pub mod portal;
pub mod schemas;
pub mod server;
pub mod store;
pub mod tasks;
pub mod telemetry;

/// The domain is a crate of its own (`herald-domain`), so the fuzz targets build without the
/// server; re-exported here so the server's parts keep naming it `crate::domain`.
pub use herald_domain as domain;

/// Installs the TLS crypto provider (ring) for outbound HTTPS. Idempotent; call before building
/// any HTTP client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
