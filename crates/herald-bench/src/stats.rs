//! Latency histograms (microseconds, via `hdrhistogram`) and counts over time.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Width of one bin of a time series.
pub const BIN_MS: u64 = 100;

/// Microseconds since the Unix epoch: the clock the load generator and the receiver share.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as u64
}

/// A histogram of microseconds from 1 µs to one hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

/// The (value, count) pairs a histogram holds, to ship between processes.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn from_pairs(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = histogram();
    for &(v, c) in pairs {
        let _ = h.record_n(v.max(1), c);
    }
    h
}

/// p50 / p99 / max in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// The bin a time (Unix µs) falls in.
pub fn bin_of(at_us: u64) -> u64 {
    at_us / 1000 / BIN_MS
}

/// Counts per `BIN_MS` bin, keyed by absolute bin number (Unix ms / `BIN_MS`).
#[derive(Clone, Debug, Default)]
pub struct Series(pub BTreeMap<u64, u64>);

impl Series {
    pub fn add(&mut self, at_us: u64) {
        *self.0.entry(bin_of(at_us)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Series) {
        for (k, v) in &other.0 {
            *self.0.entry(*k).or_default() += v;
        }
    }

    /// (seconds since `origin_us`, events per second) for each bin from the first to the last,
    /// empty bins included, so a stall shows as zero instead of a line bridging it.
    pub fn rates(&self, origin_us: u64) -> Vec<(f64, f64)> {
        let per_sec = 1000.0 / BIN_MS as f64;
        let (Some(first), Some(last)) = (self.0.keys().next(), self.0.keys().next_back()) else {
            return Vec::new();
        };
        (*first..=*last)
            .map(|bin| {
                let t = (bin * BIN_MS * 1000) as f64 - origin_us as f64;
                let n = self.0.get(&bin).copied().unwrap_or(0);
                (t / 1e6, n as f64 * per_sec)
            })
            .collect()
    }
}

/// The machine's CPU time so far, from the first line of `/proc/stat`: all of it, and what the
/// hypervisor gave to other guests ("steal"). On a shared VM stolen time stalls every process
/// at once, the server and the bench alike, so a latency measured while it was high says more
/// about the neighbours than about Herald.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// `None` where the kernel does not say (not Linux).
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// From the text of `/proc/stat`: its first line sums every core.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal (guest time is within user's)
        Some(Self {
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    /// The share of the machine's CPU time since `earlier` that was stolen, in percent.
    pub fn stolen_since(self, earlier: Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let steal = self.steal.saturating_sub(earlier.steal);
        100.0 * steal as f64 / total.max(1) as f64
    }
}

/// The percentage of CPU time stolen between `from` and now, `None` where it cannot be read.
pub fn stolen_since(from: Option<CpuTimes>) -> Option<f64> {
    Some(CpuTimes::read()?.stolen_since(from?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_fill_empty_bins_with_zero() {
        let mut s = Series::default();
        s.add(1_000_000); // bin 10
        s.add(1_000_000);
        s.add(1_300_000); // bin 13
        let rates = s.rates(1_000_000);
        let per_sec: Vec<f64> = rates.iter().map(|(_, r)| *r).collect();
        assert_eq!(per_sec, vec![20.0, 0.0, 0.0, 10.0]);
        assert!((rates[3].0 - 0.3).abs() < 1e-9);
    }

    #[test]
    fn stolen_share_counts_steal_against_all_but_guest_time() {
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 20 0\ncpu0 1 2 3\n").unwrap();
        let after = CpuTimes::parse("cpu  160 0 70 900 10 0 5 55 40 0\n").unwrap();
        // 200 jiffies passed (60 user, 20 system, 100 idle, 20 steal); guest is within user.
        assert_eq!(after.stolen_since(before), 10.0);
    }

    #[test]
    fn text_without_an_aggregate_cpu_line_reads_as_unknown() {
        assert!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(CpuTimes::parse("cpu  1 2 3\n").is_none());
        assert!(CpuTimes::parse("").is_none());
    }
}
