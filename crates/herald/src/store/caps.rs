//! The per-webhook cap of a claim: no webhook gets more than `per_webhook_cap` deliveries in
//! flight on one node, so one slow endpoint cannot take every worker. Both backends claim with
//! these rules.

use super::ClaimRequest;
use crate::domain::WebhookId;
use std::collections::HashMap;

/// Chooses, from due candidates `(delivery, webhook)` in due order, those that fit the
/// per-webhook cap (counting what is already in flight), up to the limit. Both backends claim
/// with it.
pub(crate) fn pick_within_caps(candidates: &[(String, String)], req: &ClaimRequest) -> Vec<String> {
    pick_more(candidates, req, &[])
}

/// As [`pick_within_caps`], counting `already` (picked before) against the caps and the limit;
/// returns only the new picks.
pub(crate) fn pick_more(
    candidates: &[(String, String)],
    req: &ClaimRequest,
    already: &[(String, String)],
) -> Vec<String> {
    let mut used: HashMap<&str, usize> = HashMap::new();
    for (_, webhook) in already {
        *used.entry(webhook.as_str()).or_insert_with(|| {
            req.in_flight
                .get(&WebhookId::from_trusted(webhook.clone()))
                .copied()
                .unwrap_or(0)
        }) += 1;
    }
    let taken: std::collections::HashSet<&str> = already.iter().map(|(d, _)| d.as_str()).collect();
    let mut picked = Vec::new();
    for (delivery, webhook) in candidates {
        if already.len() + picked.len() == req.limit {
            break;
        }
        if taken.contains(delivery.as_str()) {
            continue;
        }
        let n = used.entry(webhook.as_str()).or_insert_with(|| {
            req.in_flight
                .get(&WebhookId::from_trusted(webhook.clone()))
                .copied()
                .unwrap_or(0)
        });
        if *n < req.per_webhook_cap {
            *n += 1;
            picked.push(delivery.clone());
        }
    }
    picked
}

/// Webhooks at their cap, to leave out of a claim's candidates.
pub(crate) fn saturated_webhooks(req: &ClaimRequest) -> Vec<String> {
    req.in_flight
        .iter()
        .filter(|(_, n)| **n >= req.per_webhook_cap)
        .map(|(w, _)| w.to_string())
        .collect()
}
