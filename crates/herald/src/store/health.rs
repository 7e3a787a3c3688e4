//! Webhook health from attempt results: a failure record (`failing_since`) that a success
//! clears and a failure starts; the backends disable a webhook failing for too long.

use super::{AttemptRecord, NextStep};
use std::collections::HashMap;

/// How a batch of attempt results changes its webhooks' failure records (`failing_since`).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FailureRecordChanges {
    /// Webhooks with a success in the batch: their record is cleared.
    pub cleared: Vec<String>,
    /// Webhooks whose last attempts in the batch failed, with the first of those failures'
    /// start: the record starts then, unless one is already running.
    pub started: Vec<(String, i64)>,
}

/// Folds attempt results, in order, into one change per webhook: the same end state as
/// applying them one by one (a success clears the record, a failure starts one if none runs).
pub(crate) fn failure_record_changes(records: &[AttemptRecord]) -> FailureRecordChanges {
    let mut by_webhook: HashMap<&str, (bool, Option<i64>)> = HashMap::new();
    let mut order = Vec::new();
    for r in records {
        let entry = by_webhook.entry(r.webhook_id.as_str()).or_insert_with(|| {
            order.push(r.webhook_id.as_str());
            (false, None)
        });
        if r.next == NextStep::Succeeded {
            *entry = (true, None);
        } else if entry.1.is_none() {
            entry.1 = Some(r.attempt.started_at.millis());
        }
    }
    let mut changes = FailureRecordChanges::default();
    for id in order {
        let (succeeded, failing_since) = by_webhook[id];
        if succeeded {
            changes.cleared.push(id.to_owned());
        }
        if let Some(since) = failing_since {
            changes.started.push((id.to_owned(), since));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attempt, AttemptId, DeliveryId, Timestamp, WebhookId};

    fn record(webhook: &str, started: i64, next: NextStep) -> AttemptRecord {
        AttemptRecord {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::from_trusted(webhook.to_owned()),
            lease: "l".to_owned(),
            attempt: Attempt {
                id: AttemptId::generate(),
                number: 1,
                started_at: Timestamp::from_millis(started),
                duration_ms: 1,
                status_code: None,
                error_kind: None,
                error: None,
                response_body: None,
                node: None,
            },
            next,
            gone: false,
            pause_until: None,
            ordered: false,
        }
    }

    #[test]
    fn failure_records_fold_as_if_applied_one_by_one() {
        let fail = NextStep::Failed;
        let ok = NextStep::Succeeded;
        let records = [
            record("a", 1, fail),
            record("b", 2, ok),
            record("a", 3, ok),
            record("a", 4, fail),
            record("a", 5, NextStep::RetryAt(Timestamp::from_millis(9))),
            record("c", 6, fail),
            record("c", 7, fail),
            record("b", 8, ok),
        ];
        let changes = failure_record_changes(&records);
        assert_eq!(changes.cleared, ["a", "b"]);
        // a: its success at 3 clears, then the failure at 4 starts a new record; c: from 6.
        assert_eq!(changes.started, [("a".to_owned(), 4), ("c".to_owned(), 6)]);
    }
}
