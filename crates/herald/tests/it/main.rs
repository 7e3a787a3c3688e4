//! Herald's integration tests, as one test binary (one link instead of one per file): each
//! module drives the real server (in this process or as the built binary) against real
//! receivers, on SQLite and PostgreSQL. `logs.rs` stays a binary of its own, as it installs the
//! process-wide log subscriber it inspects.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod api_keys;
mod bad_input;
mod batch;
mod cli;
mod contracts;
mod crash;
mod delivery;
mod erasure;
mod event_schemas;
mod flood;
mod flow;
mod flow_circuit;
mod flow_nodes;
mod fresh_first;
mod health;
mod hostile;
mod jitter;
mod jobs;
mod lifecycle;
mod listen_forward;
mod metrics;
mod multinode;
mod openapi;
mod operator;
mod ordering;
mod pg_outage;
mod portal;
mod portal_browser;
mod portal_keys;
mod portal_pages;
mod portal_recover;
mod private_keys;
mod rate_limit;
mod readiness;
mod readme;
mod recover;
mod refill;
mod replay_missing;
mod retention;
mod secrets_at_rest;
mod signing;
mod ssrf;
mod stats;
mod store_contract;
mod tenancy;
mod trigger_cli;
mod verify_cli;
