//! Ordering per key in the claims (docs/architecture.md, "Ordering"), written once for both
//! backends: an ordered delivery (one with an `ordering_key`) is claimable only while it heads
//! its key, that is while no other pending delivery of its webhook and key
//! - has a smaller `seq` (was published before it), whether leased, due or not yet due: a head
//!   that fails waits for its retry still pending, and holds the ones behind it until it
//!   succeeds or its policy gives up (then it is `failed`, and the next one heads the key);
//! - or is in flight (leased, lease not expired): a delivery re-queued behind a later one of its
//!   key (a replay, a recovery) waits for that one to finish rather than overtake it in flight.
//!
//! So at most one delivery of a key is ever leased, and they are leased in `seq` order. An
//! unordered delivery (`ordering_key IS NULL`, every delivery of a webhook with `ordering:
//! "none"`) passes at the first test, without a look at the index: ordering off costs the claims
//! nothing. The lookup is one seek into `deliveries_pending_by_key`, which holds only pending
//! ordered deliveries.

/// The condition, over a delivery aliased `d`, that it may be claimed as far as ordering goes;
/// `now` is the placeholder (or literal) of the claim's time in milliseconds.
///
/// A `CASE`, so the tests run in this order on both backends: the unordered pass at once; a
/// delivery behind its key's head (most of an ordered backlog) fails at the first entry of the
/// index range `seq < d.seq`; only a head reads the key's later deliveries, for one in flight.
pub(crate) fn heads_its_key(now: &str) -> String {
    let same_key = "SELECT 1 FROM deliveries p
             WHERE p.webhook_id = d.webhook_id AND p.ordering_key = d.ordering_key
               AND p.status = 'pending' AND p.ordering_key IS NOT NULL";
    format!(
        "(CASE WHEN d.ordering_key IS NULL THEN 1
           WHEN EXISTS ({same_key} AND p.seq < d.seq) THEN 0
           WHEN EXISTS ({same_key} AND p.seq > d.seq AND p.locked_until > {now}) THEN 0
           ELSE 1 END) = 1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unordered_test_comes_first() {
        let sql = heads_its_key("$3");
        assert!(
            sql.starts_with("(CASE WHEN d.ordering_key IS NULL THEN 1"),
            "{sql}"
        );
        assert!(sql.contains("p.locked_until > $3"), "{sql}");
    }
}
