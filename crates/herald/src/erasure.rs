//! Erasure: what follows `DELETE /v1/accounts/{id}`, on every node.
//!
//! The DELETE marks the account in the store in one short transaction
//! ([`crate::store::Accounts::begin_erasure`]): from its commit on the account is gone for the
//! API, its keys are refused, and no claim takes its deliveries. Two things remain, and this
//! module does them:
//!
//! - **This node's memory** ([`Erasures`]): deliveries of the account that the dispatcher holds
//!   (claimed ahead, handed over by a publish) must not go out, and attempts of them under way
//!   are cut off; the API's cache of known accounts must forget it. The node that takes the
//!   DELETE marks the account here before the store does; every other node learns of it from
//!   the store (PostgreSQL: `NOTIFY`, and each eraser pass reads the marks again).
//! - **The rows** ([`Eraser`]): deleted in batches, each one short transaction, children first
//!   ([`crate::store::ErasureStep`]), with a pause after each batch as long as the batch took
//!   (as the janitor does); a batch is at most `retention.batch` rows, fewer when batches take
//!   longer than [`BATCH_TIME`], so other accounts' publishes wait for a few milliseconds at
//!   most; the account row goes last, once nothing refers to it. The eraser is woken
//!   at once by a mark, and the mark is durable: an erasure cut short by a crash or a shutdown
//!   goes on at the next start. On PostgreSQL one node erases at a time (an advisory lock).

use crate::api::KnownAccounts;
use crate::config::Settings;
use crate::domain::{AccountId, Timestamp};
use crate::janitor::pause;
use crate::store::{ErasedRows, ErasureStep, Retention, StoreResult};
use crate::telemetry::Metrics;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long one batch should hold the store: on SQLite a publish waits for the batch in hand,
/// so a batch's time is what erasure can add to another account's publish.
const BATCH_TIME: Duration = Duration::from_millis(5);

/// The fewest rows a batch deletes, however slow the store: on PostgreSQL a batch's time is
/// mostly its round trips, which fewer rows do not shorten.
const MIN_BATCH: usize = 100;

/// The size of the next batch: half when the last one took longer than [`BATCH_TIME`], twice
/// when it took less than half of it, within [`MIN_BATCH`] and `max` (`retention.batch`).
fn next_batch_size(size: usize, took: Duration, max: usize) -> usize {
    if took > BATCH_TIME {
        (size / 2).max(MIN_BATCH.min(max))
    } else if took < BATCH_TIME / 2 {
        (size * 2).min(max)
    } else {
        size
    }
}

/// How soon an unfinished erasure is taken up again: its last deliveries were under a lease
/// (an attempt ending, a lease being given back), or another node held the lock.
const RETRY: Duration = Duration::from_secs(1);

/// The accounts this node knows to be erased, or being erased.
pub struct Erasures {
    accounts: Mutex<HashSet<AccountId>>,
    /// Whether `accounts` holds any: the dispatcher asks on every attempt.
    any: AtomicBool,
    /// Moves on at every new mark, for the attempts under way ([`Erasures::marked`]).
    marks: watch::Sender<u64>,
    /// Wakes the eraser.
    wake: Notify,
    known: Arc<KnownAccounts>,
}

impl Erasures {
    /// Most accounts remembered; past that the set starts again with the accounts the store
    /// still has marked (an erased account's rows are gone, so forgetting it is safe).
    const MAX: usize = 10_000;

    /// A register that purges `known` (the API's cache) of each account it marks.
    pub fn new(known: Arc<KnownAccounts>) -> Self {
        Self {
            accounts: Mutex::default(),
            any: AtomicBool::new(false),
            marks: watch::Sender::new(0),
            wake: Notify::new(),
            known,
        }
    }

    /// Notes that `account` is being erased: the API's cache forgets it, and attempts of its
    /// deliveries stop. Returns whether it was new here.
    pub fn mark(&self, account: &AccountId) -> bool {
        self.known.forget(account);
        let mut accounts = self.accounts.lock().expect("erasures lock");
        if accounts.contains(account) {
            return false;
        }
        if accounts.len() >= Self::MAX {
            accounts.clear();
        }
        accounts.insert(account.clone());
        self.any.store(true, Ordering::Release);
        drop(accounts);
        self.marks.send_modify(|n| *n += 1);
        true
    }

    /// Takes back a mark whose store write failed (the account was not marked after all).
    pub fn unmark(&self, account: &AccountId) {
        let mut accounts = self.accounts.lock().expect("erasures lock");
        accounts.remove(account);
        self.any.store(!accounts.is_empty(), Ordering::Release);
    }

    pub fn contains(&self, account: &AccountId) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .accounts
                .lock()
                .expect("erasures lock")
                .contains(account)
    }

    /// Resolves once `account` is marked (at once if it is already).
    pub async fn marked(&self, account: &AccountId) {
        let mut marks = self.marks.subscribe();
        loop {
            if self.contains(account) {
                return;
            }
            if marks.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Wakes the eraser: an account was marked.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What one erasure pass left.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    Nothing,
    /// Rows under a lease, another node erasing, or a shutdown: try again soon.
    Some,
}

/// The eraser: deletes the rows of every marked account, in batches.
pub struct Eraser {
    store: Arc<dyn Retention>,
    erasures: Arc<Erasures>,
    metrics: Arc<Metrics>,
    batch: usize,
    /// How often the marks are read without a wake-up (a missed notification, a node's crash).
    interval: Duration,
}

impl Eraser {
    pub fn new(
        store: Arc<dyn Retention>,
        erasures: Arc<Erasures>,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            erasures,
            metrics,
            batch: settings.retention.batch,
            interval: settings.retention.interval.0,
        }
    }

    /// Erases what is marked, at start (an erasure a crash cut short) and whenever woken, until
    /// `shutdown`; a pass in progress stops after the batch in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        let erasures = self.erasures.clone();
        self.store
            .watch_for_erasures(Arc::new(move || erasures.wake()), shutdown.clone());
        let (mut wait, mut failures) = (Duration::ZERO, 0u32);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.erasures.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            let pass = self.pass(&shutdown).await;
            failures = if pass.is_err() { failures + 1 } else { 0 };
            wait = match pass {
                Ok(Left::Nothing) => self.interval,
                Ok(Left::Some) => RETRY,
                // Waits twice as long after each failure in a row (a database down for a
                // while), up to the interval.
                Err(e) => {
                    let wait = (RETRY * (1u32 << failures.min(8))).min(self.interval.max(RETRY));
                    warn!(error = %e, retry_in = ?wait, "erasure pass failed");
                    wait
                }
            };
        }
    }

    /// Reads the marks (so this node's memory knows them all) and erases each marked account.
    async fn pass(&self, shutdown: &CancellationToken) -> StoreResult<Left> {
        let marked = self.store.accounts_being_erased().await?;
        for account in &marked {
            self.erasures.mark(account);
        }
        let mut left = Left::Nothing;
        for account in &marked {
            if self.erase(account, shutdown).await? == Left::Some {
                left = Left::Some;
            }
            if shutdown.is_cancelled() {
                return Ok(Left::Some);
            }
        }
        Ok(left)
    }

    /// Deletes the account's rows step by step, then the account.
    async fn erase(&self, account: &AccountId, shutdown: &CancellationToken) -> StoreResult<Left> {
        let started = Instant::now();
        let mut total = ErasedRows::default();
        let mut size = self.batch;
        for step in ErasureStep::ALL {
            loop {
                let batch_started = Instant::now();
                let erased = self
                    .store
                    .erase_batch(account, step, Timestamp::now(), size)
                    .await?;
                let Some(erased) = erased else {
                    debug!(account_id = %account, "another node is erasing; leaving it to it");
                    return Ok(Left::Some);
                };
                self.metrics.erased(step.kind(), erased.rows);
                self.metrics.erased("attempts", erased.attempts);
                total.rows += erased.rows;
                total.attempts += erased.attempts;
                if erased.rows < size as u64 {
                    break;
                }
                let took = batch_started.elapsed();
                size = next_batch_size(size, took, self.batch);
                if !pause(took, shutdown).await {
                    return Ok(Left::Some);
                }
            }
        }
        let took_ms = started.elapsed().as_millis() as u64;
        if self.store.finish_erasure(account).await? {
            self.metrics.erased("accounts", 1);
            info!(account_id = %account, rows = total.rows, attempts = total.attempts, took_ms,
                "account erased");
            Ok(Left::Nothing)
        } else {
            debug!(account_id = %account, rows = total.rows, attempts = total.attempts, took_ms,
                "erasing account: rows under a lease are left for the next pass");
            Ok(Left::Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_when_slow_and_grow_back_when_quick_within_their_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(next_batch_size(500, ms(40), 500), 250);
        assert_eq!(next_batch_size(150, ms(40), 500), 100);
        assert_eq!(next_batch_size(250, ms(1), 500), 500);
        assert_eq!(next_batch_size(400, ms(0), 500), 500);
        assert_eq!(next_batch_size(100, ms(4), 500), 100);
        assert_eq!(next_batch_size(5, ms(40), 5), 5, "never above the setting");
    }
}
