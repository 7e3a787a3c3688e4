//! Per-credential request rate limits (429 `rate_limited`), with `governor`'s GCRA: one limit
//! per API key (keyed by the hash it is stored under) and one for the admin token.
//!
//! The limits live in this node's memory: with N nodes behind a load balancer a key may get up
//! to N times its limit (the README says so). A key is looked at only after it authenticated,
//! so a flood of bad credentials costs 401s, not memory; a key's state that has come back to
//! "fresh" is forgotten now and then ([`governor::RateLimiter::retain_recent`]), since a fresh
//! one would answer the same.

use crate::config::RateLimit;
use governor::clock::{Clock, MonotonicClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

/// Whose limit a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Credential {
    Admin,
    /// An API key, by the hash it is stored under.
    Key(Box<str>),
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; the next request is allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

/// How often keys back at a fresh state are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

type Keyed<C> = governor::RateLimiter<
    Box<str>,
    HashMapStateStore<Box<str>>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;
type Direct<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The node's limits. `C` is the clock: the monotonic one in the server, a fake one in tests.
pub struct RateLimiter<C: Clock = MonotonicClock> {
    /// `None`: unlimited (no state is kept at all).
    keys: Option<Keyed<C>>,
    admin: Option<Direct<C>>,
    clock: C,
    swept: Mutex<C::Instant>,
}

impl RateLimiter {
    pub fn new(keys: RateLimit, admin: RateLimit) -> Self {
        Self::with_clock(keys, admin, MonotonicClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(keys: RateLimit, admin: RateLimit, clock: C) -> Self {
        Self {
            keys: quota(keys).map(|q| governor::RateLimiter::hashmap_with_clock(q, clock.clone())),
            admin: quota(admin).map(|q| governor::RateLimiter::direct_with_clock(q, clock.clone())),
            swept: Mutex::new(clock.now()),
            clock,
        }
    }

    /// Counts one request of `who` now, if its limit allows it.
    pub fn check(&self, who: &Credential) -> Verdict {
        let answer = match who {
            Credential::Admin => match &self.admin {
                Some(limiter) => limiter.check(),
                None => return Verdict::Allowed,
            },
            Credential::Key(hash) => match &self.keys {
                Some(limiter) => {
                    self.sweep(limiter);
                    limiter.check_key(hash)
                }
                None => return Verdict::Allowed,
            },
        };
        match answer {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => Verdict::Limited {
                retry_after: self.wait(&not_until),
            },
        }
    }

    fn wait(&self, not_until: &NotUntil<C::Instant>) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// Forgets the keys back at a fresh state, at most every [`SWEEP_EVERY`].
    fn sweep(&self, limiter: &Keyed<C>) {
        let now = self.clock.now();
        let mut swept = self.swept.lock().expect("rate limiter sweep lock");
        if Duration::from(now.duration_since(*swept)) >= SWEEP_EVERY {
            *swept = now;
            drop(swept);
            limiter.retain_recent();
        }
    }

    /// API keys with state held right now.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `per_second` on average, up to `burst` at once; `None` when unlimited.
fn quota(limit: RateLimit) -> Option<Quota> {
    let per_second = NonZeroU32::new(limit.per_second)?;
    let burst = NonZeroU32::new(limit.burst()).unwrap_or(per_second);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst: Some(burst),
        }
    }

    fn key(name: &str) -> Credential {
        Credential::Key(name.into())
    }

    fn limiter(
        keys: RateLimit,
        admin: RateLimit,
    ) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(keys, admin, clock.clone()), clock)
    }

    #[test]
    fn a_burst_then_one_request_per_interval() {
        let (l, clock) = limiter(limit(5, 3), RateLimit::UNLIMITED);
        for _ in 0..3 {
            assert_eq!(l.check(&key("a")), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = l.check(&key("a")) else {
            panic!("the fourth request at once is over the burst");
        };
        assert_eq!(retry_after, Duration::from_millis(200));
        // Another key, and the admin token, have their own limits.
        assert_eq!(l.check(&key("b")), Verdict::Allowed);
        assert_eq!(l.check(&Credential::Admin), Verdict::Allowed);
        clock.advance(Duration::from_millis(200));
        assert_eq!(l.check(&key("a")), Verdict::Allowed);
        assert!(matches!(l.check(&key("a")), Verdict::Limited { .. }));
        // A long pause gives back only the burst.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(l.check(&key("a")), Verdict::Allowed);
        }
        assert!(matches!(l.check(&key("a")), Verdict::Limited { .. }));
    }

    #[test]
    fn the_admin_token_has_its_own_limit() {
        let (l, _clock) = limiter(RateLimit::UNLIMITED, limit(1, 2));
        assert_eq!(l.check(&Credential::Admin), Verdict::Allowed);
        assert_eq!(l.check(&Credential::Admin), Verdict::Allowed);
        assert_eq!(
            l.check(&Credential::Admin),
            Verdict::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(l.check(&key("a")), Verdict::Allowed);
    }

    #[test]
    fn unlimited_credentials_keep_no_state() {
        let (l, _clock) = limiter(RateLimit::UNLIMITED, RateLimit::UNLIMITED);
        for _ in 0..10_000 {
            assert_eq!(l.check(&key("a")), Verdict::Allowed);
            assert_eq!(l.check(&Credential::Admin), Verdict::Allowed);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn keys_back_at_a_fresh_state_are_forgotten() {
        let (l, clock) = limiter(limit(10, 10), limit(1, 1));
        for i in 0..1000 {
            l.check(&key(&i.to_string()));
        }
        assert_eq!(l.len(), 1000);
        // Ten seconds on, every key is back at a fresh state: the sweep drops them all but the
        // one in use.
        clock.advance(SWEEP_EVERY);
        assert_eq!(l.check(&key("busy")), Verdict::Allowed);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_key_still_recovering_is_kept() {
        let (l, clock) = limiter(limit(1, 100), RateLimit::UNLIMITED);
        for _ in 0..100 {
            l.check(&key("a"));
        }
        clock.advance(SWEEP_EVERY);
        l.check(&key("b"));
        assert_eq!(
            l.len(),
            2,
            "key a has 10 of its 100 back; forgetting it would reset it"
        );
    }
}
