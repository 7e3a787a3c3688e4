//! A webhook slowed down here: a receiver's pause, and the circuit this node opens after
//! `circuit_after` failures in a row (the module's doc has the rules; the store's gates hold
//! them on every node, docs/architecture.md §14).

use super::{Held, Lanes, release_of};
use crate::domain::{Timestamp, WebhookId};
use crate::store::Release;
use std::time::Duration;

impl Lanes {
    /// The receiver of `webhook` asked it to wait until `until`: its waiting deliveries go back
    /// ([`Lanes::take_given_back`]), and until [`Lanes::resume`] lets it go on, so does what is
    /// claimed or handed over for it. Attempts already under way finish.
    pub fn pause(&mut self, webhook: &WebhookId, until: Timestamp) {
        let at = self.paused.entry(webhook.clone()).or_insert(until);
        *at = (*at).max(until);
        self.give_back_waiting(webhook);
    }

    fn give_back_waiting(&mut self, webhook: &WebhookId) {
        let Some(lane) = self.by_webhook.get_mut(webhook) else {
            return;
        };
        let waiting: Vec<Held> = lane.waiting.drain(..).collect();
        self.held -= waiting.len();
        self.given_back
            .extend(waiting.into_iter().map(|h| release_of(h.claim)));
        if lane.held() == 0 {
            self.by_webhook.remove(webhook);
        }
    }

    /// Opens circuits after `after` failed attempts in a row (0: never), probed every
    /// `probe_interval`.
    pub fn with_circuit(mut self, after: u32, probe_interval: Duration) -> Self {
        self.circuit_after = after;
        self.probe_interval = probe_interval;
        self
    }

    /// An attempt to `webhook` succeeded or failed, seen at `now`. At `circuit_after` failures
    /// in a row it is paused here for a probe interval ([`Lanes::pause`]: what it holds goes
    /// back, and so does what a claim under way brings, until the store's circuit, written a
    /// moment later, sends the first probe), and it takes no hand-overs until a success.
    pub fn attempted(&mut self, webhook: &WebhookId, succeeded: bool, now: Timestamp) {
        if succeeded || self.circuit_after == 0 {
            self.failures.remove(webhook);
            return;
        }
        let n = self.failures.entry(webhook.clone()).or_default();
        *n += 1;
        if *n == self.circuit_after {
            self.pause(webhook, now.plus(self.probe_interval));
        }
    }

    pub(super) fn circuit_open(&self, webhook: &WebhookId) -> bool {
        self.circuit_after > 0
            && self
                .failures
                .get(webhook)
                .is_some_and(|n| *n >= self.circuit_after)
    }

    /// Ends the pauses that are over at `now`.
    pub fn resume(&mut self, now: Timestamp) {
        self.paused.retain(|_, until| *until > now);
    }

    /// The leases of deliveries of paused webhooks, to give back.
    pub fn take_given_back(&mut self) -> Vec<Release> {
        std::mem::take(&mut self.given_back)
    }
}
