//! Which webhooks get an event: the rule both store backends apply when they write an event's
//! deliveries. The backends look up the candidates (the active webhooks of the event's account,
//! and a job's own webhook only for that job's events); this decides among them.

use crate::contract::WebhookKind;
use crate::event_type::{EventFilter, any_matches};
use crate::ids::WebhookId;

/// The job whose status change an event announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub id: String,
    /// The status is final (completed or failed): the only change the job's own webhook hears of.
    pub terminal: bool,
}

/// What of an event decides which webhooks get it.
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    pub event_type: &'a str,
    /// The job whose status change this is, if any.
    pub job: Option<&'a JobRef>,
    /// A test event's one webhook: no other gets it, whatever it subscribes to.
    pub only_webhook: Option<&'a WebhookId>,
}

impl Route<'_> {
    /// Whether the webhook `id` of the event's account, of `kind`, made for job `job_id` (a job's
    /// own webhook) and subscribed to `filters`, gets the event: a test event goes to its one
    /// webhook; a job's own webhook gets that job's terminal event and nothing else; a
    /// subscription, the callback URL, a `herald listen` stream or the operator's webhook gets what
    /// its filters match.
    pub fn reaches(
        &self,
        id: &str,
        kind: WebhookKind,
        job_id: Option<&str>,
        filters: &[EventFilter],
    ) -> bool {
        if let Some(only) = self.only_webhook {
            return only.as_str() == id;
        }
        match kind {
            WebhookKind::Job => self
                .job
                .is_some_and(|j| j.terminal && job_id == Some(j.id.as_str())),
            WebhookKind::Subscription
            | WebhookKind::Callback
            | WebhookKind::Listener
            | WebhookKind::Operator => any_matches(filters, self.event_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(patterns: &[&str]) -> Vec<EventFilter> {
        patterns
            .iter()
            .map(|p| EventFilter::parse(p).unwrap())
            .collect()
    }

    fn plain(event_type: &str) -> Route<'_> {
        Route {
            event_type,
            job: None,
            only_webhook: None,
        }
    }

    #[test]
    fn subscriptions_and_the_callback_get_what_their_filters_match() {
        let orders = filters(&["order.*", "invoice.paid"]);
        for kind in [
            WebhookKind::Subscription,
            WebhookKind::Callback,
            WebhookKind::Listener,
            WebhookKind::Operator,
        ] {
            assert!(plain("order.created").reaches("wh_a", kind, None, &orders));
            assert!(plain("invoice.paid").reaches("wh_a", kind, None, &orders));
            assert!(!plain("invoice.sent").reaches("wh_a", kind, None, &orders));
            assert!(!plain("order").reaches("wh_a", kind, None, &orders));
            assert!(!plain("order.created").reaches("wh_a", kind, None, &[]));
        }
    }

    #[test]
    fn a_jobs_own_webhook_gets_its_terminal_event_only() {
        let all = filters(&["*"]);
        let job = |id: &str, terminal| JobRef {
            id: id.to_owned(),
            terminal,
        };
        let (done, running, other) = (job("job_1", true), job("job_1", false), job("job_2", true));
        let event = |job| Route {
            event_type: "export.completed",
            job: Some(job),
            only_webhook: None,
        };
        let own = |route: Route<'_>| route.reaches("wh_j", WebhookKind::Job, Some("job_1"), &all);
        assert!(own(event(&done)));
        assert!(!own(event(&running)), "not a status change before the last");
        assert!(!own(event(&other)), "not another job's");
        assert!(!own(plain("export.completed")), "not an event of no job");
        // Subscribers get every status change their filters match.
        let sub = WebhookKind::Subscription;
        assert!(event(&running).reaches("wh_s", sub, None, &all));
    }

    #[test]
    fn a_test_event_goes_to_its_one_webhook_whatever_the_filters() {
        let target = WebhookId::from_trusted("wh_t".to_owned());
        let route = Route {
            event_type: "webhook.test",
            job: None,
            only_webhook: Some(&target),
        };
        let none = filters(&["order.*"]);
        let all = filters(&["*"]);
        assert!(route.reaches("wh_t", WebhookKind::Subscription, None, &none));
        assert!(!route.reaches("wh_other", WebhookKind::Subscription, None, &all));
        assert!(!route.reaches("wh_other", WebhookKind::Callback, None, &all));
    }
}
