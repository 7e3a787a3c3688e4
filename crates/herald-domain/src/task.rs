//! Background tasks: work too long for one request, done in batches by a runner on any node,
//! whose progress the API shows. The one kind of work so far is re-queuing deliveries that match
//! a [`RequeueFilter`]: a webhook's recovery, or the operator's bulk retry.

use super::ids::{AccountId, DeliveryId, TaskId, WebhookId};
use super::model::DeliveryStatus;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What started a task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// `POST /v1/webhooks/{id}/recover`: a webhook's failed deliveries in a span of time.
    Recover,
    /// `POST /v1/deliveries/retry`: the operator's bulk retry by filter.
    Retry,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recover => "recover",
            Self::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Recover, Self::Retry]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a task is: `queued → running → succeeded | failed`. A running task whose runner died
/// (its lease lapsed) is taken up again where it stopped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    /// Stopped for good; `error` says why.
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A task as stored.
#[derive(Clone, Debug)]
pub struct Task {
    pub id: TaskId,
    /// The account whose deliveries it touches; `None` for the operator's tasks over accounts.
    pub account: Option<AccountId>,
    pub kind: TaskKind,
    /// Its parameters, as stored (JSON; for re-queuing, a [`RequeueFilter`]).
    pub params: String,
    pub state: TaskState,
    /// How many deliveries matched when it was made.
    pub counted: u64,
    /// How many it has re-queued so far.
    pub done: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
}

/// Which deliveries a re-queue task takes: those in `status`, made in `[since, until)` (by the
/// creation time their id carries), of one account and one webhook if named. Deliveries whose
/// webhook is deleted are never taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequeueFilter {
    pub account: Option<AccountId>,
    pub webhook: Option<WebhookId>,
    /// Never `pending`: those are queued already.
    pub status: DeliveryStatus,
    pub since: Timestamp,
    pub until: Timestamp,
}

/// The stored form: times in milliseconds, so the parameters survive any time format.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    status: String,
    since_ms: i64,
    until_ms: i64,
}

impl RequeueFilter {
    /// The task parameters this filter is stored as.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&StoredFilter {
            account: self.account.as_ref().map(|a| a.as_str().to_owned()),
            webhook: self.webhook.as_ref().map(|w| w.as_str().to_owned()),
            status: self.status.as_str().to_owned(),
            since_ms: self.since.millis(),
            until_ms: self.until.millis(),
        })
        .expect("a filter serializes")
    }

    /// Reads stored parameters back; an error says what is wrong with them.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let s: StoredFilter = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let account = s
            .account
            .map(|a| AccountId::parse(&a).ok_or(format!("bad account id {a:?}")))
            .transpose()?;
        let webhook = s
            .webhook
            .map(|w| WebhookId::parse(&w).ok_or(format!("bad webhook id {w:?}")))
            .transpose()?;
        let status = DeliveryStatus::parse(&s.status)
            .filter(|s| *s != DeliveryStatus::Pending)
            .ok_or(format!("bad status {:?}", s.status))?;
        Ok(Self {
            account,
            webhook,
            status,
            since: Timestamp::from_millis(s.since_ms),
            until: Timestamp::from_millis(s.until_ms),
        })
    }

    /// The delivery ids the filter may take after `cursor` (the last one a batch handled):
    /// those above the first bound and below the second, both exclusive.
    pub fn id_range(&self, cursor: Option<&str>) -> (String, String) {
        let since = DeliveryId::bound_at(self.since);
        let lower = match cursor {
            Some(c) if c > since.as_str() => c.to_owned(),
            _ => since,
        };
        (lower, DeliveryId::bound_at(self.until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn filter() -> RequeueFilter {
        RequeueFilter {
            account: Some(AccountId::generate()),
            webhook: None,
            status: DeliveryStatus::Failed,
            since: Timestamp::now().minus(Duration::from_secs(60)),
            until: Timestamp::now(),
        }
    }

    #[test]
    fn a_filter_reads_back_as_it_was_stored() {
        let f = filter();
        assert_eq!(RequeueFilter::from_json(&f.to_json()), Ok(f));
    }

    #[test]
    fn unreadable_parameters_are_refused_with_a_reason() {
        let mut stored: serde_json::Value = serde_json::from_str(&filter().to_json()).unwrap();
        stored["status"] = "pending".into();
        let err = RequeueFilter::from_json(&stored.to_string()).unwrap_err();
        assert!(err.contains("status"), "{err}");
        assert!(RequeueFilter::from_json("{}").is_err());
    }

    #[test]
    fn the_id_range_is_the_span_of_time_and_starts_after_the_cursor() {
        let before = DeliveryId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let since = Timestamp::now();
        std::thread::sleep(Duration::from_millis(2));
        let inside = DeliveryId::generate();
        let later = DeliveryId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let until = Timestamp::now();
        std::thread::sleep(Duration::from_millis(2));
        let after = DeliveryId::generate();
        let f = RequeueFilter {
            since,
            until,
            ..filter()
        };
        let within = |(lo, hi): &(String, String), id: &DeliveryId| {
            id.as_str() > lo.as_str() && id.as_str() < hi.as_str()
        };
        let range = f.id_range(None);
        assert!(!within(&range, &before));
        assert!(within(&range, &inside) && within(&range, &later));
        assert!(!within(&range, &after));
        let resumed = f.id_range(Some(inside.as_str()));
        assert!(!within(&resumed, &inside) && within(&resumed, &later));
        // A cursor before the span does not widen it.
        assert_eq!(f.id_range(Some(before.as_str())), range);
    }
}
