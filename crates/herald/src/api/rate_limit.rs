//! Per-credential request rate limits (429 `rate_limited`).
//!
//! One token bucket per API key and one for the admin token, held in this node's memory: with N
//! nodes behind a load balancer a key may get up to N times its limit. Buckets are looked at
//! only after a caller has authenticated, so a flood of bad credentials costs 401s, not memory.
//! A bucket left alone until it is full again is forgotten: a fresh one would answer the same.

use crate::config::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whose bucket a request takes from.
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
    /// Over the limit; a token is back after this long.
    Limited {
        retry_after: Duration,
    },
}

/// How often idle buckets are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct RateLimiter {
    keys: RateLimit,
    admin: RateLimit,
    state: Mutex<Buckets>,
}

struct Buckets {
    by_credential: HashMap<Credential, Bucket>,
    swept: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(keys: RateLimit, admin: RateLimit) -> Self {
        Self {
            keys,
            admin,
            state: Mutex::new(Buckets {
                by_credential: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Takes one token from `who`'s bucket at `now`, if it has one.
    pub fn check(&self, who: &Credential, now: Instant) -> Verdict {
        let limit = match who {
            Credential::Admin => self.admin,
            Credential::Key(_) => self.keys,
        };
        if limit.is_unlimited() {
            return Verdict::Allowed;
        }
        let rate = f64::from(limit.per_second);
        let burst = f64::from(limit.burst());
        let mut state = self.state.lock().expect("rate limiter lock");
        if now.saturating_duration_since(state.swept) >= SWEEP_EVERY {
            state.swept = now;
            let (keys, admin) = (self.keys, self.admin);
            state.by_credential.retain(|c, b| {
                let limit = if *c == Credential::Admin { admin } else { keys };
                !is_full(b, limit, now)
            });
        }
        let bucket = state.by_credential.entry(who.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Allowed
        } else {
            Verdict::Limited {
                retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rate),
            }
        }
    }

    /// Buckets held right now.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .expect("rate limiter lock")
            .by_credential
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the bucket would be full by `now`, so forgetting it changes nothing.
fn is_full(bucket: &Bucket, limit: RateLimit, now: Instant) -> bool {
    let refill =
        now.saturating_duration_since(bucket.at).as_secs_f64() * f64::from(limit.per_second);
    limit.is_unlimited() || bucket.tokens + refill >= f64::from(limit.burst())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst: Some(burst),
        }
    }

    fn key(name: &str) -> Credential {
        Credential::Key(name.into())
    }

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let l = RateLimiter::new(limit(5, 3), RateLimit::UNLIMITED);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(&key("a"), t0), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = l.check(&key("a"), t0) else {
            panic!("the fourth request at once is over the burst");
        };
        assert_eq!(retry_after, Duration::from_millis(200));
        // Another key, and the admin token, have their own buckets.
        assert_eq!(l.check(&key("b"), t0), Verdict::Allowed);
        assert_eq!(l.check(&Credential::Admin, t0), Verdict::Allowed);
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(l.check(&key("a"), t1), Verdict::Allowed);
        assert!(matches!(l.check(&key("a"), t1), Verdict::Limited { .. }));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.check(&key("a"), t2), Verdict::Allowed);
        }
        assert!(matches!(l.check(&key("a"), t2), Verdict::Limited { .. }));
    }

    #[test]
    fn unlimited_credentials_take_no_bucket() {
        let l = RateLimiter::new(RateLimit::UNLIMITED, RateLimit::UNLIMITED);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.check(&key("a"), t0), Verdict::Allowed);
            assert_eq!(l.check(&Credential::Admin, t0), Verdict::Allowed);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let l = RateLimiter::new(limit(10, 10), limit(1, 1));
        let t0 = Instant::now();
        for i in 0..1000 {
            l.check(&key(&i.to_string()), t0);
        }
        l.check(&Credential::Admin, t0);
        assert_eq!(l.len(), 1001);
        // Ten seconds on, every bucket has refilled: the sweep drops them all but the one in use.
        let t1 = t0 + SWEEP_EVERY;
        assert_eq!(l.check(&key("busy"), t1), Verdict::Allowed);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_bucket_still_refilling_is_kept() {
        let l = RateLimiter::new(limit(1, 100), RateLimit::UNLIMITED);
        let t0 = Instant::now();
        for _ in 0..100 {
            l.check(&key("a"), t0);
        }
        let t1 = t0 + SWEEP_EVERY;
        l.check(&key("b"), t1);
        assert_eq!(
            l.len(),
            2,
            "key a has 10 of 100 tokens back; forgetting it would reset it"
        );
    }
}
