//! Human durations: parsing never panics; a parsed duration formatted again parses back to the
//! same value; and `<n><unit>` built from parts parses to exactly `n × unit` when it fits.
#![no_main]

use arbitrary::Arbitrary;
use herald_domain::duration::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Text(&'a str),
    Parts { count: u64, unit: u8 },
}

fuzz_target!(|input: Input<'_>| {
    match input {
        Input::Text(text) => {
            if let Ok(d) = parse_duration(text) {
                let shown = format_duration(d);
                assert_eq!(parse_duration(&shown), Ok(d), "{text:?} shown as {shown:?}");
            }
        }
        Input::Parts { count, unit } => {
            let (name, per) = UNITS[usize::from(unit) % UNITS.len()];
            let text = format!("{count}{name}");
            let expected = count
                .checked_mul(per)
                .filter(|_| count.to_string().len() <= 12)
                .map(Duration::from_millis);
            assert_eq!(parse_duration(&text).ok(), expected, "{text:?}");
        }
    }
});
