//! The lanes behind a lock, shared by the scheduler and publishing's hand-overs.

use super::Lanes;
use crate::domain::{Timestamp, WebhookId};
use crate::store::{ClaimedDelivery, Intake};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// The lanes, shared by the scheduler and publishing's hand-overs.
pub struct SharedLanes {
    lanes: Mutex<Lanes>,
    /// Rung when publishing hands deliveries over.
    pub handed: Notify,
}

impl SharedLanes {
    pub fn new(lanes: Lanes) -> Self {
        Self {
            lanes: Mutex::new(lanes),
            handed: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().expect("lanes lock")
    }
}

impl Intake for SharedLanes {
    fn reserve(&self, webhook: &WebhookId) -> bool {
        self.lock().reserve(webhook)
    }

    fn hand_over(
        &self,
        claims: Vec<ClaimedDelivery>,
        claimed_at: Timestamp,
        lease_until: Timestamp,
    ) {
        self.lock().hand_over(claims, claimed_at, lease_until);
        self.handed.notify_one();
    }

    fn cancel(&self, webhooks: &[WebhookId]) {
        let mut lanes = self.lock();
        for webhook in webhooks {
            lanes.unreserve(webhook);
        }
    }
}
