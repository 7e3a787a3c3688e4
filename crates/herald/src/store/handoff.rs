//! Handing new deliveries from a publish straight to this node's dispatcher, leased to it, so
//! they need no claim. Should the node die first, their lease runs out and any node claims them.

use super::{ClaimedDelivery, Intake};
use crate::domain::{DeliveryId, Event, Timestamp, Webhook, WebhookId};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Where publishing hands new deliveries to this node's dispatcher, once the dispatcher has set
/// it ([`super::Queue::set_intake`]), and the lease they get.
#[derive(Clone, Default)]
pub(crate) struct IntakeSlot(Arc<OnceLock<(Arc<dyn Intake>, Duration)>>);

impl IntakeSlot {
    /// Sets the intake; the first one set stays.
    pub fn set(&self, intake: Arc<dyn Intake>, lease: Duration) {
        let _ = self.0.set((intake, lease));
    }

    /// A hand-off for one publish transaction, once there is an intake.
    pub fn handoff(&self) -> Option<Handoff> {
        self.0
            .get()
            .map(|(intake, lease)| Handoff::new(intake.clone(), Timestamp::now(), *lease))
    }
}

/// The deliveries one publish transaction hands to the dispatcher, all under one lease. Dropped
/// without [`Handoff::finish`] (the transaction failed), it gives the reservations back.
pub(crate) struct Handoff {
    intake: Arc<dyn Intake>,
    pub lease: String,
    pub claimed_at: Timestamp,
    pub lease_until: Timestamp,
    reserved: Vec<WebhookId>,
    claims: Vec<ClaimedDelivery>,
}

impl Handoff {
    pub fn new(intake: Arc<dyn Intake>, now: Timestamp, lease: std::time::Duration) -> Self {
        Self {
            intake,
            lease: uuid::Uuid::new_v4().simple().to_string(),
            claimed_at: now,
            lease_until: now.plus(lease),
            reserved: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// Whether the delivery about to be written to `webhook` goes to the dispatcher.
    pub fn reserve(&mut self, webhook: &WebhookId) -> bool {
        let ok = self.intake.reserve(webhook);
        if ok {
            self.reserved.push(webhook.clone());
        }
        ok
    }

    /// The reserved delivery, written with this hand-off's lease.
    pub fn add(&mut self, delivery_id: DeliveryId, event: Event, webhook: Webhook) {
        self.claims.push(ClaimedDelivery {
            delivery_id,
            lease: self.lease.clone(),
            attempt_number: 1,
            event,
            webhook,
        });
    }

    /// After the commit: hands the deliveries over.
    pub fn finish(mut self) {
        self.reserved.clear();
        let claims = std::mem::take(&mut self.claims);
        if !claims.is_empty() {
            self.intake
                .hand_over(claims, self.claimed_at, self.lease_until);
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if !self.reserved.is_empty() {
            self.intake.cancel(&self.reserved);
        }
    }
}
