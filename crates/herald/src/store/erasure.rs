//! Erasing an account: what both backends share. `DELETE /v1/accounts/{id}` marks the account
//! ([`super::Accounts::begin_erasure`]: its `erasing_since`, its keys revoked, its webhooks
//! deleted and disabled, so no claim takes their deliveries); the eraser (`crate::erasure`) then
//! deletes its rows in batches, one [`ErasureStep`] at a time, children before parents, and the
//! account row last ([`super::Retention::finish_erasure`]), once nothing of it is left.
//!
//! A delivery under a lease (an attempt in flight, or held by a node's dispatcher) is left for a
//! later batch: its result, or the lease given back, comes first, so an attempt's row never
//! refers to a delivery already gone. Rows made after the mark by a request that raced it (a
//! publish that had passed its account check) are found by the next pass, since the account row
//! goes only when no row of any step refers to it.

use super::NewEvent;
use crate::domain::AccountId;
use std::collections::HashSet;

/// One kind of an account's rows, in the order they are erased: each step's rows refer only to
/// rows of later steps, so a batch never leaves a dangling reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureStep {
    /// Deliveries not under a lease, with their attempts.
    Deliveries,
    /// Events with no delivery left.
    Events,
    Jobs,
    /// Endpoint figures of the account's webhooks (`webhook_stats`).
    StatsRows,
    /// Webhooks (every kind) with no delivery and no figures left.
    Webhooks,
    ApiKeys,
}

impl ErasureStep {
    /// Every step, in order.
    pub const ALL: [Self; 6] = [
        Self::Deliveries,
        Self::Events,
        Self::Jobs,
        Self::StatsRows,
        Self::Webhooks,
        Self::ApiKeys,
    ];

    /// The kind of row, as `herald_erased_total{kind}` and the log name it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deliveries => "deliveries",
            Self::Events => "events",
            Self::Jobs => "jobs",
            Self::StatsRows => "stats_rows",
            Self::Webhooks => "webhooks",
            Self::ApiKeys => "api_keys",
        }
    }
}

/// What marking an account for erasure found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureMark {
    /// Marked now.
    Marked,
    /// Marked before: its erasure is under way, or done but for the account row.
    AlreadyMarked,
    NoSuchAccount,
}

/// What one batch of an [`ErasureStep`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErasedRows {
    /// Rows of the step's kind.
    pub rows: u64,
    /// Attempts deleted with their deliveries ([`ErasureStep::Deliveries`] only).
    pub attempts: u64,
}

/// The accounts of `events` being erased, out of `erasing` (as the store read them in the
/// publish's transaction): their events are refused as of an unknown account.
pub(crate) fn refused(events: &[&NewEvent], erasing: &HashSet<String>) -> Vec<bool> {
    events
        .iter()
        .map(|e| erasing.contains(e.account.as_str()))
        .collect()
}

/// The distinct accounts of `events`, sorted.
pub(crate) fn accounts_of<'a>(events: &[&'a NewEvent]) -> Vec<&'a str> {
    let mut accounts: Vec<&str> = events.iter().map(|e| e.account.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// Parses the ids the store lists as being erased.
pub(crate) fn account_ids(ids: Vec<String>) -> Vec<AccountId> {
    ids.into_iter().map(AccountId::from_trusted).collect()
}

/// Tables that hold only a few rows per account and that nothing else refers to: a mark deletes
/// the account's rows of them at once (its portal links and sessions stop working, its tasks
/// stop re-queueing), and the account row goes in one transaction with any that a request
/// racing the mark made since.
pub(crate) const SMALL_TABLES: [&str; 3] = ["tasks", "portal_links", "portal_sessions"];

/// Why a marked webhook is disabled, as its `disabled_reason` says.
pub(crate) const DISABLED_REASON: &str = "account erased";
