//! The API's open connections: how many it may hold, and which one gives way to a new one.
//!
//! At the cap, a new connection closes the longest-open connection that has no request in
//! progress: idle keep-alive connections and connections still sending their request head (a
//! flood of them never gets as far as a request). A client that is served is never cut off for
//! a newcomer, and a newcomer is turned away only when every held connection is serving one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The table of open connections, shared by the accept loop and every connection's task.
pub struct Connections {
    cap: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Every admitted connection in order of admission, and some that have closed since
    /// (removed lazily, when they reach the front or when they outnumber the open ones).
    order: VecDeque<Arc<Slot>>,
    open: usize,
}

struct Slot {
    /// Requests of this connection being served right now.
    busy: AtomicUsize,
    /// Closed, or chosen to close: no longer counted as open.
    gone: AtomicBool,
    evict: CancellationToken,
}

/// An admitted connection's place in the table; dropping it frees the place.
pub struct Admitted {
    table: Arc<Connections>,
    slot: Arc<Slot>,
}

/// Held while a request of the connection is being served.
pub struct Busy(Arc<Slot>);

impl Connections {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                order: VecDeque::new(),
                open: 0,
            }),
        })
    }

    /// Connections counted as open.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Admits a new connection, closing the longest-open one without a request in progress
    /// if the table is full; `None` when every open connection is serving a request.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut inner = self.lock();
        if inner.open >= self.cap && !inner.evict_one() {
            return None;
        }
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        inner.open += 1;
        inner.order.push_back(slot.clone());
        Some(Admitted {
            table: self.clone(),
            slot,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("connection table lock")
    }
}

impl Inner {
    /// Closes the first connection in admission order that serves no request; busy ones go to
    /// the back. Each entry is looked at once at most.
    fn evict_one(&mut self) -> bool {
        for _ in 0..self.order.len() {
            let Some(slot) = self.order.pop_front() else {
                break;
            };
            if slot.gone.load(Ordering::Acquire) {
                continue;
            }
            if slot.busy.load(Ordering::Acquire) > 0 {
                self.order.push_back(slot);
                continue;
            }
            slot.gone.store(true, Ordering::Release);
            slot.evict.cancel();
            self.open -= 1;
            return true;
        }
        false
    }
}

impl Admitted {
    /// Fires when the table chose this connection to close for a newer one.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.slot.evict.cancelled()
    }

    /// What the connection's requests mark themselves busy with.
    pub fn handle(&self) -> SlotHandle {
        SlotHandle(self.slot.clone())
    }
}

impl Clone for Busy {
    fn clone(&self) -> Self {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if !self.slot.gone.swap(true, Ordering::AcqRel) {
            inner.open -= 1;
        }
        // Closed entries wait in the queue until they reach its front; keep them from piling up
        // when connections come and go below the cap.
        if inner.order.len() > 2 * inner.open + 64 {
            inner.order.retain(|s| !s.gone.load(Ordering::Acquire));
        }
    }
}

/// A handle on one admitted connection for its requests (cheap to clone into a service).
#[derive(Clone)]
pub struct SlotHandle(Arc<Slot>);

impl SlotHandle {
    /// Marks a request in progress until the returned guard drops.
    pub fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_evicted(a: &Admitted) -> bool {
        a.slot.evict.is_cancelled()
    }

    #[test]
    fn below_the_cap_every_connection_is_admitted() {
        let table = Connections::new(3);
        let held: Vec<_> = (0..3).map(|_| table.admit().unwrap()).collect();
        assert_eq!(table.open(), 3);
        assert!(held.iter().all(|a| !is_evicted(a)));
        drop(held);
        assert_eq!(table.open(), 0);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_gives_way() {
        let table = Connections::new(3);
        let first = table.admit().unwrap();
        let second = table.admit().unwrap();
        let third = table.admit().unwrap();
        let _busy = first.handle().busy();
        let fourth = table.admit().expect("an idle connection gives way");
        assert!(!is_evicted(&first), "a connection serving a request stays");
        assert!(is_evicted(&second), "the oldest idle one goes");
        assert!(!is_evicted(&third));
        assert!(!is_evicted(&fourth));
        assert_eq!(table.open(), 3);
        // The evicted connection's task ends later; its place is not freed twice.
        drop(second);
        assert_eq!(table.open(), 3);
    }

    #[test]
    fn a_newcomer_is_refused_only_when_every_connection_serves_a_request() {
        let table = Connections::new(2);
        let a = table.admit().unwrap();
        let b = table.admit().unwrap();
        let busy_a = a.handle().busy();
        let busy_b = b.handle().busy();
        assert!(table.admit().is_none());
        assert!(!is_evicted(&a) && !is_evicted(&b));
        drop(busy_b);
        let c = table.admit().expect("b is idle again");
        assert!(is_evicted(&b));
        assert!(!is_evicted(&c));
        drop(busy_a);
    }

    #[test]
    fn a_request_in_progress_counts_until_its_last_guard_drops() {
        let table = Connections::new(1);
        let a = table.admit().unwrap();
        let busy = a.handle().busy();
        let copy = busy.clone();
        drop(busy);
        assert!(table.admit().is_none());
        drop(copy);
        assert!(table.admit().is_some());
        assert!(is_evicted(&a));
    }

    #[test]
    fn closed_connections_do_not_pile_up_in_the_queue() {
        let table = Connections::new(10_000);
        let keep = table.admit().unwrap();
        for _ in 0..10_000 {
            drop(table.admit().unwrap());
        }
        let inner = table.lock();
        assert_eq!(inner.open, 1);
        assert!(
            inner.order.len() <= 2 * inner.open + 65,
            "{}",
            inner.order.len()
        );
        drop(inner);
        drop(keep);
    }

    #[test]
    fn eviction_follows_admission_order() {
        let table = Connections::new(3);
        let mut held: Vec<_> = (0..3).map(|_| table.admit().unwrap()).collect();
        for round in 0..6 {
            held.push(table.admit().unwrap());
            assert!(is_evicted(&held[round]), "round {round}");
            assert!(held[round + 1..].iter().all(|a| !is_evicted(a)));
        }
    }
}
