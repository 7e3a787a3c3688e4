//! Retry policies: which failures are retried and after how long.
//!
//! Policies are pure: the caller passes the attempt count, the outcome, any `Retry-After`, and
//! a random draw for the jitter.

use super::duration::{HumanDuration, format_duration, parse_duration};
use super::outcome::AttemptOutcome;
use super::shown::shown;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// At most this many retries in a schedule.
pub const MAX_SCHEDULE_LEN: usize = 50;
/// No single delay longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 86_400);
/// No schedule spanning longer than this in all.
pub const MAX_SPAN: Duration = Duration::from_secs(30 * 86_400);
/// A receiver's `Retry-After` is honoured up to this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The standard schedule's jitter: each wait is stretched by up to a fifth.
pub const STANDARD_JITTER: Jitter = Jitter(200);

/// How much a retry's wait may be stretched, at random, as a fraction of it: with jitter `j`, a
/// wait `d` becomes a time drawn evenly from `d` to `d × (1 + j)`. Retries of many deliveries
/// that failed together (an endpoint down for a while) then come back spread out instead of in
/// one burst; none comes earlier than its schedule or a receiver's `Retry-After` says. Kept in
/// thousandths so policies compare exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Jitter(u16);

impl Jitter {
    pub const NONE: Jitter = Jitter(0);

    /// A fraction from 0 (none) to 1 (a wait up to twice as long).
    pub fn from_fraction(f: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&f) {
            return Err(format!("jitter must be a fraction from 0 to 1, not {f}"));
        }
        Ok(Self((f * 1000.0).round() as u16))
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// `wait` stretched by `draw` (from 0 to 1) of the jitter.
    pub fn stretch(self, wait: Duration, draw: f64) -> Duration {
        wait.mul_f64(1.0 + self.fraction() * draw.clamp(0.0, 1.0))
    }
}

/// Which failed attempts are retried.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Any non-2xx status, timeout or connection error.
    Any,
    /// Only timeouts, connection errors, 408, 429 and 5xx; any other status fails at once.
    Transient,
}

/// A validated retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before each retry: `schedule[0]` follows the first attempt.
    pub schedule: Vec<Duration>,
    pub retry_on: RetryOn,
    /// How long one attempt may take, response included.
    pub timeout: Duration,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// In the spirit of the Standard Webhooks recommendation: seconds, minutes, then hours,
    /// about a day in all (8 attempts).
    fn default() -> Self {
        let s = |secs| Duration::from_secs(secs);
        Self {
            schedule: vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
            retry_on: RetryOn::Any,
            timeout: s(10),
            jitter: STANDARD_JITTER,
        }
    }
}

/// The policy as the API reads and writes it: durations as strings.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyDoc {
    /// A named schedule (`standard`, `fixed`, `burst-exponential`) in place of `schedule` and
    /// `retry_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<RetryOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A fraction from 0 to 1 by which each wait may be stretched at random. Unset: the
    /// preset's (the standard schedule has some, the seed providers' schedules none), or none
    /// with a schedule of one's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1, example = 0.2))]
    pub jitter: Option<f64>,
}

impl RetryPolicy {
    /// A named policy: `standard` (the default), `fixed` (seed 002: 1m, 5m, 30m, 2h, 12h on any
    /// failure) or `burst-exponential` (seed 003: five immediate retries, then 1, 2, 4 … 4096
    /// minutes, on transient failures only).
    pub fn preset(name: &str) -> Option<Self> {
        let min = |m: u64| Duration::from_secs(60 * m);
        match name {
            "standard" => Some(Self::default()),
            "fixed" => Some(Self {
                schedule: vec![min(1), min(5), min(30), min(120), min(720)],
                retry_on: RetryOn::Any,
                timeout: Duration::from_secs(10),
                jitter: Jitter::NONE,
            }),
            "burst-exponential" => Some(Self {
                schedule: std::iter::repeat_n(Duration::ZERO, 5)
                    .chain((0..13).map(|i| min(1 << i)))
                    .collect(),
                retry_on: RetryOn::Transient,
                timeout: Duration::from_secs(10),
                jitter: Jitter::NONE,
            }),
            _ => None,
        }
    }

    /// Builds a policy from what the user gave, filling gaps from `defaults`.
    pub fn from_doc(doc: &RetryPolicyDoc, defaults: &RetryPolicy) -> Result<Self, String> {
        let base = match &doc.preset {
            None => defaults.clone(),
            Some(name) => {
                if doc.schedule.is_some() || doc.retry_on.is_some() {
                    return Err(
                        "a preset sets schedule and retry_on; give one or the other".to_owned()
                    );
                }
                Self::preset(name).ok_or_else(|| {
                    format!(
                        "unknown retry preset {}; known: standard, fixed, burst-exponential",
                        shown(name)
                    )
                })?
            }
        };
        let defaults = &base;
        let schedule = match &doc.schedule {
            None => defaults.schedule.clone(),
            Some(items) => {
                if items.len() > MAX_SCHEDULE_LEN {
                    return Err(format!(
                        "retry schedule has {} entries; at most {MAX_SCHEDULE_LEN}",
                        items.len()
                    ));
                }
                items
                    .iter()
                    .map(|s| parse_duration(s))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        if let Some(d) = schedule.iter().find(|d| **d > MAX_DELAY) {
            return Err(format!(
                "retry delay {} is longer than {}",
                format_duration(*d),
                format_duration(MAX_DELAY)
            ));
        }
        if schedule.iter().sum::<Duration>() > MAX_SPAN {
            return Err(format!(
                "retry schedule spans more than {}",
                format_duration(MAX_SPAN)
            ));
        }
        let timeout = match &doc.timeout {
            None => defaults.timeout,
            Some(s) => parse_duration(s)?,
        };
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
            return Err(format!(
                "timeout must be between {} and {}",
                format_duration(MIN_TIMEOUT),
                format_duration(MAX_TIMEOUT)
            ));
        }
        let jitter = match (doc.jitter, &doc.schedule) {
            (Some(f), _) => Jitter::from_fraction(f)?,
            // A schedule of one's own is kept exactly unless jitter is asked for.
            (None, Some(_)) => Jitter::NONE,
            (None, None) => defaults.jitter,
        };
        Ok(Self {
            schedule,
            retry_on: doc.retry_on.unwrap_or(defaults.retry_on),
            timeout,
            jitter,
        })
    }

    /// The effective policy, every field filled in.
    pub fn to_doc(&self) -> RetryPolicyDoc {
        RetryPolicyDoc {
            preset: None,
            schedule: Some(self.schedule.iter().map(|d| format_duration(*d)).collect()),
            retry_on: Some(self.retry_on),
            timeout: Some(format_duration(self.timeout)),
            jitter: Some(self.jitter.fraction()),
        }
    }

    /// Attempts in all when every one fails: the first plus one per scheduled retry.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// Whether this failed outcome is worth another try under the policy.
    pub fn is_retryable(&self, outcome: &AttemptOutcome) -> bool {
        match (self.retry_on, outcome) {
            (_, AttemptOutcome::Delivered { .. }) => false,
            (RetryOn::Any, _) => true,
            (RetryOn::Transient, AttemptOutcome::Status { code }) => {
                *code == 408 || *code == 429 || (500..=599).contains(code)
            }
            (RetryOn::Transient, _) => true,
        }
    }

    /// The wait before the next attempt after `attempts_made` attempts ending in `outcome`,
    /// or `None` when the delivery is over. A `Retry-After` longer than the scheduled delay wins;
    /// the jitter then stretches the wait by `draw` (uniform from 0 to 1) of itself.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        outcome: &AttemptOutcome,
        retry_after: Option<Duration>,
        draw: f64,
    ) -> Option<Duration> {
        if !self.is_retryable(outcome) {
            return None;
        }
        let scheduled = *self.schedule.get(attempts_made.checked_sub(1)? as usize)?;
        let wait = match retry_after {
            Some(ra) => scheduled.max(ra.min(MAX_RETRY_AFTER)),
            None => scheduled,
        };
        Some(self.jitter.stretch(wait, draw))
    }
}

/// A retry policy as the store writes it (JSON), keeping its exact durations.
#[derive(Serialize, Deserialize)]
pub struct StoredPolicy {
    schedule: Vec<HumanDuration>,
    retry_on: RetryOn,
    timeout: HumanDuration,
    /// In thousandths; absent in policies stored before jitter existed (none).
    #[serde(default, skip_serializing_if = "is_zero")]
    jitter_permille: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl From<&RetryPolicy> for StoredPolicy {
    fn from(p: &RetryPolicy) -> Self {
        Self {
            schedule: p.schedule.iter().copied().map(HumanDuration).collect(),
            retry_on: p.retry_on,
            timeout: HumanDuration(p.timeout),
            jitter_permille: p.jitter.0,
        }
    }
}

impl From<StoredPolicy> for RetryPolicy {
    fn from(p: StoredPolicy) -> Self {
        Self {
            schedule: p.schedule.into_iter().map(|d| d.0).collect(),
            retry_on: p.retry_on,
            timeout: p.timeout.0,
            jitter: Jitter(p.jitter_permille.min(1000)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: &[u64], retry_on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            schedule: schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
            retry_on,
            timeout: Duration::from_secs(10),
            jitter: Jitter::NONE,
        }
    }

    #[test]
    fn follows_the_schedule_then_stops() {
        let p = policy(&[1, 5, 30], RetryOn::Any);
        let fail = AttemptOutcome::Status { code: 500 };
        assert_eq!(
            p.next_delay(1, &fail, None, 0.5),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.next_delay(2, &fail, None, 0.5),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            p.next_delay(3, &fail, None, 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p.next_delay(4, &fail, None, 0.5), None);
        assert_eq!(p.max_attempts(), 4);
    }

    #[test]
    fn transient_policy_gives_up_on_client_errors() {
        let p = policy(&[1, 1], RetryOn::Transient);
        assert_eq!(
            p.next_delay(1, &AttemptOutcome::Status { code: 400 }, None, 0.5),
            None
        );
        assert_eq!(
            p.next_delay(1, &AttemptOutcome::Status { code: 404 }, None, 0.5),
            None
        );
        for retried in [
            AttemptOutcome::Status { code: 408 },
            AttemptOutcome::Status { code: 429 },
            AttemptOutcome::Status { code: 503 },
            AttemptOutcome::Timeout,
            AttemptOutcome::Connect,
        ] {
            assert!(
                p.next_delay(1, &retried, None, 0.5).is_some(),
                "{retried:?} is transient"
            );
        }
        let any = policy(&[1], RetryOn::Any);
        assert!(
            any.next_delay(1, &AttemptOutcome::Status { code: 400 }, None, 0.5)
                .is_some()
        );
    }

    #[test]
    fn retry_after_extends_but_never_shortens_the_wait() {
        let p = policy(&[10], RetryOn::Any);
        let busy = AttemptOutcome::Status { code: 429 };
        assert_eq!(
            p.next_delay(1, &busy, Some(Duration::from_secs(60)), 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            p.next_delay(1, &busy, Some(Duration::from_secs(2)), 0.5),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.next_delay(1, &busy, Some(Duration::from_secs(10 * 86_400)), 0.5),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn validates_documents() {
        let d = RetryPolicy::default();
        let doc = |schedule: &[&str], timeout: Option<&str>| RetryPolicyDoc {
            preset: None,
            schedule: Some(schedule.iter().map(|s| s.to_string()).collect()),
            retry_on: None,
            timeout: timeout.map(str::to_owned),
            jitter: None,
        };
        let p = RetryPolicy::from_doc(&doc(&["0s", "250ms", "2h"], Some("5s")), &d).unwrap();
        assert_eq!(p.schedule[1], Duration::from_millis(250));
        assert_eq!(p.to_doc().schedule.unwrap(), vec!["0s", "250ms", "2h"]);
        assert!(RetryPolicy::from_doc(&doc(&["5 minutes"], None), &d).is_err());
        assert!(RetryPolicy::from_doc(&doc(&["8d"], None), &d).is_err());
        assert!(RetryPolicy::from_doc(&doc(&["5s"], Some("61s")), &d).is_err());
        assert!(RetryPolicy::from_doc(&doc(&vec!["1s"; 51], None), &d).is_err());
        assert_eq!(RetryPolicy::default().max_attempts(), 8);
    }

    #[test]
    fn presets_are_the_seed_schedules() {
        let fixed = RetryPolicy::preset("fixed").unwrap();
        assert_eq!(
            fixed.to_doc().schedule.unwrap(),
            ["1m", "5m", "30m", "2h", "12h"]
        );
        assert_eq!((fixed.max_attempts(), fixed.retry_on), (6, RetryOn::Any));
        let burst = RetryPolicy::preset("burst-exponential").unwrap();
        let expected: Vec<String> = ["0s"; 5]
            .iter()
            .map(|s| s.to_string())
            .chain(
                [
                    "1m", "2m", "4m", "8m", "16m", "32m", "64m", "128m", "256m", "512m", "1024m",
                    "2048m", "4096m",
                ]
                .map(String::from),
            )
            .collect();
        assert_eq!(burst.to_doc().schedule.unwrap(), expected);
        assert_eq!(
            (burst.schedule.len(), burst.retry_on),
            (18, RetryOn::Transient)
        );
        let with_timeout = RetryPolicyDoc {
            preset: Some("fixed".into()),
            timeout: Some("3s".into()),
            ..Default::default()
        };
        let p = RetryPolicy::from_doc(&with_timeout, &RetryPolicy::default()).unwrap();
        assert_eq!((p.schedule.len(), p.timeout), (5, Duration::from_secs(3)));
        let both = RetryPolicyDoc {
            preset: Some("fixed".into()),
            schedule: Some(vec![]),
            ..Default::default()
        };
        assert!(RetryPolicy::from_doc(&both, &RetryPolicy::default()).is_err());
    }

    #[test]
    fn jitter_stretches_waits_and_never_shortens_them() {
        let mut p = policy(&[10, 0], RetryOn::Any);
        p.jitter = Jitter::from_fraction(0.5).unwrap();
        let fail = AttemptOutcome::Status { code: 503 };
        let secs = |d: Option<Duration>| d.unwrap().as_secs_f64();
        assert_eq!(secs(p.next_delay(1, &fail, None, 0.0)), 10.0);
        assert_eq!(secs(p.next_delay(1, &fail, None, 0.5)), 12.5);
        assert_eq!(secs(p.next_delay(1, &fail, None, 1.0)), 15.0);
        assert_eq!(
            secs(p.next_delay(1, &fail, None, 7.0)),
            15.0,
            "draws are clamped"
        );
        assert_eq!(
            secs(p.next_delay(2, &fail, None, 1.0)),
            0.0,
            "an immediate retry stays one"
        );
        let ra = Some(Duration::from_secs(40));
        assert_eq!(secs(p.next_delay(1, &fail, ra, 0.0)), 40.0);
        assert_eq!(secs(p.next_delay(1, &fail, ra, 1.0)), 60.0);
    }

    #[test]
    fn the_standard_schedule_has_jitter_and_the_seed_schedules_none() {
        let standard = RetryPolicy::default();
        assert_eq!(standard.jitter, STANDARD_JITTER);
        assert_eq!(
            RetryPolicy::preset("standard").unwrap().jitter,
            STANDARD_JITTER
        );
        let fail = AttemptOutcome::Status { code: 500 };
        for name in ["fixed", "burst-exponential"] {
            let p = RetryPolicy::preset(name).unwrap();
            for (i, scheduled) in p.schedule.iter().enumerate() {
                let n = i as u32 + 1;
                assert_eq!(
                    p.next_delay(n, &fail, None, 1.0),
                    Some(*scheduled),
                    "{name} #{n}"
                );
            }
        }
        let d = RetryPolicy::default();
        let from = |doc: RetryPolicyDoc| RetryPolicy::from_doc(&doc, &d);
        let own = RetryPolicyDoc {
            schedule: Some(vec!["1s".into()]),
            ..Default::default()
        };
        assert_eq!(
            from(own.clone()).unwrap().jitter,
            Jitter::NONE,
            "an own schedule is exact"
        );
        let timeout_only = RetryPolicyDoc {
            timeout: Some("3s".into()),
            ..Default::default()
        };
        assert_eq!(from(timeout_only).unwrap().jitter, STANDARD_JITTER);
        let asked = RetryPolicyDoc {
            jitter: Some(0.25),
            ..own.clone()
        };
        let p = from(asked).unwrap();
        assert_eq!(p.jitter.fraction(), 0.25);
        assert_eq!(p.to_doc().jitter, Some(0.25));
        for bad in [-0.1, 1.5, f64::NAN] {
            let doc = RetryPolicyDoc {
                jitter: Some(bad),
                ..own.clone()
            };
            assert!(from(doc).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_policies_keep_their_jitter_and_old_ones_have_none() {
        let p = RetryPolicy::default();
        let json = serde_json::to_string(&StoredPolicy::from(&p)).unwrap();
        let back: StoredPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(RetryPolicy::from(back), p);
        let old = r#"{"schedule":["5s"],"retry_on":"any","timeout":"10s"}"#;
        let old: StoredPolicy = serde_json::from_str(old).unwrap();
        assert_eq!(RetryPolicy::from(old).jitter, Jitter::NONE);
    }
}
