//! Flow control per webhook, as pure rules: the rate limit (GCRA, its state a theoretical
//! arrival time the store keeps on the webhook's row) and the pause a receiver asks for with
//! `429`/`503` and `Retry-After`. The store and the dispatcher apply them (docs/architecture.md,
//! "Flow control"); times are milliseconds since the epoch, as the store keeps them.

use super::outcome::AttemptOutcome;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest pause a receiver's `Retry-After` can put on a whole webhook (a delivery's own
/// retry may still wait longer, up to [`super::retry::MAX_RETRY_AFTER`]).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Most deliveries per second a rate limit may allow, and the largest burst.
pub const MAX_PER_SECOND: f64 = 10_000.0;
pub const MAX_BURST: u32 = 10_000;

/// How long a receiver that answered `outcome` with `retry_after` asks the whole webhook to
/// wait: only a `429` or `503` that says how long pauses it, at most [`MAX_PAUSE`].
pub fn pause_asked(outcome: &AttemptOutcome, retry_after: Option<Duration>) -> Option<Duration> {
    match (outcome.status_code(), retry_after) {
        (Some(429 | 503), Some(wait)) if !wait.is_zero() => Some(wait.min(MAX_PAUSE)),
        _ => None,
    }
}

/// Whether a webhook's deliveries go now (docs/architecture.md, "Flow control").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Deliveries go as they fall due (at the webhook's rate, if it has one).
    Open,
    /// Its receiver asked it to wait (`429`/`503` with `Retry-After`).
    Paused,
    /// Its attempts failed too often in a row: only a probe goes now and then.
    CircuitOpen,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paused => "paused",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// At most `per_second` deliveries a second to a webhook on average, up to `burst` at once,
/// across all nodes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateLimitInput")]
pub struct RateLimit {
    /// Deliveries per second (a fraction allowed, e.g. 0.5), from 0.001 to 10,000.
    per_second: f64,
    /// Deliveries that may go at once after a quiet spell (default 1), up to 10,000.
    burst: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitInput {
    per_second: f64,
    #[serde(default = "one")]
    burst: u32,
}

fn one() -> u32 {
    1
}

impl TryFrom<RateLimitInput> for RateLimit {
    type Error = String;

    fn try_from(i: RateLimitInput) -> Result<Self, String> {
        Self::new(i.per_second, i.burst)
    }
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> Result<Self, String> {
        if !(0.001..=MAX_PER_SECOND).contains(&per_second) {
            return Err(format!(
                "rate_limit.per_second must be from 0.001 to {MAX_PER_SECOND}, not {per_second}"
            ));
        }
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(format!(
                "rate_limit.burst must be from 1 to {MAX_BURST}, not {burst}"
            ));
        }
        Ok(Self { per_second, burst })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one delivery's allowance takes to come back, in milliseconds.
    pub fn interval(&self) -> f64 {
        1000.0 / self.per_second
    }

    /// The time a whole burst's allowance takes to come back, in whole milliseconds.
    pub fn burst_ms(&self) -> i64 {
        (f64::from(self.burst) * self.interval()).ceil() as i64
    }

    /// How many deliveries may go at `now`, with the theoretical arrival time `tat` (none: the
    /// webhook has been quiet).
    pub fn allowance(&self, now: i64, tat: Option<i64>) -> u32 {
        let tat = tat.unwrap_or(now).max(now);
        let free = (now - tat) as f64 + f64::from(self.burst) * self.interval();
        // A hair of slack so that a token due exactly now counts despite rounding.
        ((free / self.interval()) + 1e-9)
            .floor()
            .clamp(0.0, f64::from(self.burst)) as u32
    }

    /// The theoretical arrival time after `n` deliveries go at `now`.
    pub fn take(&self, now: i64, tat: Option<i64>, n: u32) -> i64 {
        let tat = tat.unwrap_or(now).max(now);
        tat + (f64::from(n) * self.interval()).round() as i64
    }

    /// When the next delivery may go (`now` if one may already).
    pub fn next_at(&self, now: i64, tat: Option<i64>) -> i64 {
        let tat = tat.unwrap_or(now);
        let at = tat as f64 - f64::from(self.burst - 1) * self.interval();
        (at.ceil() as i64).max(now)
    }

    /// As the store keeps it (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a rate limit serializes")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_webhook_has_its_whole_burst_then_one_per_interval() {
        let r = RateLimit::new(50.0, 5).unwrap();
        let now = 1_000_000;
        assert_eq!(r.allowance(now, None), 5);
        let tat = r.take(now, None, 5);
        assert_eq!(tat, now + 100);
        assert_eq!(r.allowance(now, Some(tat)), 0);
        assert_eq!(r.next_at(now, Some(tat)), now + 20);
        assert_eq!(r.allowance(now + 19, Some(tat)), 0);
        assert_eq!(r.allowance(now + 20, Some(tat)), 1);
        assert_eq!(r.allowance(now + 40, Some(tat)), 2);
        // A long quiet spell gives back no more than the burst.
        assert_eq!(r.allowance(now + 60_000, Some(tat)), 5);
        assert_eq!(r.next_at(now + 60_000, Some(tat)), now + 60_000);
    }

    #[test]
    fn taking_every_token_as_it_comes_keeps_the_rate() {
        let r = RateLimit::new(50.0, 1).unwrap();
        let (mut tat, mut sent, mut now) = (None, 0u32, 0i64);
        while now < 10_000 {
            let n = r.allowance(now, tat);
            if n > 0 {
                tat = Some(r.take(now, tat, n));
                sent += n;
            }
            now = r.next_at(now + 1, tat);
        }
        assert!((499..=501).contains(&sent), "{sent} in 10 s at 50/s");
    }

    #[test]
    fn limits_are_checked() {
        assert!(RateLimit::new(0.0, 1).is_err());
        assert!(RateLimit::new(5.0, 0).is_err());
        assert!(RateLimit::new(20_000.0, 1).is_err());
        let r: RateLimit = serde_json::from_str(r#"{"per_second": 2.5}"#).unwrap();
        assert_eq!((r.per_second(), r.burst()), (2.5, 1));
        assert!(serde_json::from_str::<RateLimit>(r#"{"per_second": -1}"#).is_err());
        assert_eq!(RateLimit::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn only_429_and_503_with_a_wait_pause_the_webhook_at_most_an_hour() {
        let s = |code| AttemptOutcome::Status { code };
        let five = Some(Duration::from_secs(5));
        assert_eq!(pause_asked(&s(429), five), five);
        assert_eq!(pause_asked(&s(503), five), five);
        assert_eq!(pause_asked(&s(500), five), None);
        assert_eq!(pause_asked(&s(429), None), None);
        assert_eq!(
            pause_asked(&s(429), Some(Duration::from_secs(86_400))),
            Some(MAX_PAUSE)
        );
    }
}
