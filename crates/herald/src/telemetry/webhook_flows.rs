//! Per-webhook flow-control gauges for `/metrics`: pending deliveries, state and time to the
//! next attempt of the webhooks with the most pending work (at most [`MAX_WEBHOOKS`], so the
//! series stay few however many webhooks there are).
//!
//! They are written as exposition text at each refresh rather than registered as series: a
//! webhook whose work is done drops out of the next refresh, instead of staying as a series
//! nothing updates.

use crate::domain::Timestamp;
use crate::domain::flow::FlowState;
use crate::store::WebhookFlow;
use std::fmt::Write;

/// Most webhooks shown.
pub const MAX_WEBHOOKS: usize = 50;

const STATES: [FlowState; 3] = [FlowState::Open, FlowState::Paused, FlowState::CircuitOpen];

/// The exposition text of `flows` at `now`.
pub fn render(flows: &[WebhookFlow], now: Timestamp) -> String {
    let mut out = String::new();
    if flows.is_empty() {
        return out;
    }
    out.push_str(
        "# HELP herald_webhook_pending Pending deliveries of the webhooks with the most\n\
         # TYPE herald_webhook_pending gauge\n",
    );
    for f in flows {
        let _ = writeln!(
            out,
            "herald_webhook_pending{{webhook_id=\"{}\"}} {}",
            f.webhook_id, f.pending
        );
    }
    out.push_str(
        "# HELP herald_webhook_state Flow state of those webhooks (1 for the state it is in)\n\
         # TYPE herald_webhook_state gauge\n",
    );
    for f in flows {
        for s in STATES {
            let _ = writeln!(
                out,
                "herald_webhook_state{{webhook_id=\"{}\",state=\"{}\"}} {}",
                f.webhook_id,
                s.as_str(),
                u8::from(f.state == s)
            );
        }
    }
    out.push_str(
        "# HELP herald_webhook_next_attempt_seconds Seconds until those webhooks' next attempt may go (0: now)\n\
         # TYPE herald_webhook_next_attempt_seconds gauge\n",
    );
    for f in flows {
        if let Some(at) = f.next_attempt_at {
            let _ = writeln!(
                out,
                "herald_webhook_next_attempt_seconds{{webhook_id=\"{}\"}} {}",
                f.webhook_id,
                now.until(at).as_secs_f64()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WebhookId;

    #[test]
    fn each_webhook_shows_its_pending_state_and_next_attempt() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let flows = [WebhookFlow {
            webhook_id: WebhookId::from_trusted("wh_a".to_owned()),
            state: FlowState::Paused,
            pending: 3,
            next_attempt_at: Some(now.plus(std::time::Duration::from_millis(2500))),
        }];
        let text = render(&flows, now);
        assert!(text.contains("herald_webhook_pending{webhook_id=\"wh_a\"} 3\n"));
        assert!(text.contains("herald_webhook_state{webhook_id=\"wh_a\",state=\"paused\"} 1\n"));
        assert!(text.contains("herald_webhook_state{webhook_id=\"wh_a\",state=\"open\"} 0\n"));
        assert!(text.contains("herald_webhook_next_attempt_seconds{webhook_id=\"wh_a\"} 2.5\n"));
        assert!(render(&[], now).is_empty());
    }
}
