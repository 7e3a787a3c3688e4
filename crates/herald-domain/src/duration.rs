//! Durations written the way people write them: `250ms`, `5s`, `5m`, `2h`, `1d`.

use super::shown::shown;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`; a bare `0` is zero.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let bad = || {
        format!(
            "invalid duration {}: expected a whole number and a unit (ms, s, m, h, d), like \"5s\"",
            shown(input)
        )
    };
    if digits.is_empty() || digits.len() > 12 {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let per = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, ms)| *ms)
        .ok_or_else(bad)?;
    n.checked_mul(per)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Formats with the largest unit that divides the duration exactly (`90s` → `90s`, `120s` → `2m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, per) in UNITS {
        if ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    unreachable!("every duration is a whole number of milliseconds")
}

/// A `Duration` that (de)serializes as a human string such as `"5m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "-5s",
            "1.5s",
            "5 s",
            "5S",
            "99999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_with_largest_exact_unit_and_round_trips() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (90_000, "90s"),
            (120_000, "2m"),
            (7_200_000, "2h"),
            (1_500, "1500ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
