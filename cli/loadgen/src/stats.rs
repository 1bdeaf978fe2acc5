//! What a run measured: HDR histograms (microseconds) per row, status counts, and the
//! per-second timeline, gathered in shards the workers write and a collector drains.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::http::{STATUS_IO, STATUS_TIMEOUT};

/// A histogram of microseconds that grows as needed (3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

/// Records `micros` (at least 1), growing the histogram as needed.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    if h.record(micros.max(1)).is_err() {
        h.saturating_record(micros.max(1));
    }
}

/// What one row (an endpoint, or an outcome such as "win") collected.
#[derive(Clone)]
pub struct Tally {
    pub latency: Histogram<u64>,
    pub ok: u64,
    /// Every status seen.
    pub statuses: BTreeMap<u16, u64>,
    /// The statuses that counted as errors.
    pub errors: BTreeMap<u16, u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally { latency: histogram(), ok: 0, statuses: BTreeMap::new(), errors: BTreeMap::new() }
    }
}

impl Tally {
    pub fn record(&mut self, micros: u64, status: u16, ok: bool) {
        record(&mut self.latency, micros);
        if ok {
            self.ok += 1;
        } else {
            *self.errors.entry(status).or_default() += 1;
        }
        *self.statuses.entry(status).or_default() += 1;
    }

    pub fn add(&mut self, other: &Tally) {
        // Both grow automatically, so adding cannot fail for lack of range.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        for (s, n) in &other.errors {
            *self.errors.entry(*s).or_default() += n;
        }
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn count(&self) -> u64 {
        self.ok + self.failed()
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        Quantiles { p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99), p999: q(0.999), max: ms(h.max()), mean: h.mean() / 1000.0 }
    }
}

/// The label of a status code in reports: `200`, or what happened instead.
pub fn status_label(status: u16) -> String {
    match status {
        STATUS_IO => "connection error".to_owned(),
        STATUS_TIMEOUT => "timeout".to_owned(),
        s => s.to_string(),
    }
}

/// One row of the final summary.
#[derive(Debug, Clone, Serialize)]
pub struct RowReport {
    pub name: String,
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    /// Completed per second over the run.
    pub rate: f64,
    /// What the schedule offered to this row per second (None for a burst).
    pub target_rate: Option<f64>,
    pub latency_ms: Quantiles,
    /// Every status seen, as `"200": n`, `"timeout": n`.
    pub statuses: BTreeMap<String, u64>,
    /// Which statuses counted as errors.
    pub error_statuses: BTreeMap<String, u64>,
    /// (percentile, milliseconds) from 0 to 99.999, for the percentile plot.
    pub curve: Vec<(f64, f64)>,
}

impl RowReport {
    pub fn new(name: &str, t: &Tally, seconds: f64, target_rate: Option<f64>) -> RowReport {
        RowReport {
            name: name.to_owned(),
            count: t.count(),
            ok: t.ok,
            errors: t.failed(),
            rate: if seconds > 0.0 { t.count() as f64 / seconds } else { 0.0 },
            target_rate,
            latency_ms: Quantiles::of(&t.latency),
            statuses: t.statuses.iter().map(|(s, n)| (status_label(*s), *n)).collect(),
            error_statuses: t.errors.iter().map(|(s, n)| (status_label(*s), *n)).collect(),
            curve: curve(&t.latency),
        }
    }
}

/// Latency at percentiles spaced evenly on a log scale of 1 / (1 - p), the usual way
/// to draw tails (HdrHistogram's plots): 0, 90, 99, 99.9, … with steps between.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=40)
        .map(|k| {
            let p = 1.0 - 10f64.powf(-(k as f64) / 8.0);
            (p * 100.0, h.value_at_quantile(p) as f64 / 1000.0)
        })
        .collect()
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the start (the end of this second).
    pub t: u32,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_milliseconds() {
        let mut t = Tally::default();
        for v in 1..=1000u64 {
            t.record(v * 1000, 200, true);
        }
        t.record(5_000_000, 503, false);
        let q = Quantiles::of(&t.latency);
        assert!((q.p50 - 500.0).abs() < 3.0, "{q:?}");
        assert!((q.p99 - 991.0).abs() < 3.0, "{q:?}");
        assert!((q.max - 5000.0).abs() < 10.0, "{q:?}");
        assert_eq!((t.ok, t.failed(), t.statuses[&503], t.errors[&503]), (1000, 1, 1, 1));
        let c = curve(&t.latency);
        assert_eq!(c.len(), 41);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "the curve never goes down");
    }
}
