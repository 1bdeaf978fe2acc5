//! The verdict: a run against a level's SLOs, each objective checked and named, so a
//! missed one can be reported by name and turned into exit code 1.

use serde::Serialize;

use crate::engine::Run;

/// The objectives a run is held to (from the manifest's `spec.slos`).
#[derive(Debug, Clone, PartialEq)]
pub struct Slos {
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    /// Largest tolerated share of failed requests, such as 0.001.
    pub error_ratio: f64,
    /// Percent of requests that must succeed, such as 99.9.
    pub availability: Option<f64>,
    /// The SLOs hold "at the level's rate": the run must have offered at least this
    /// share of its target rate (0.95), or it proves nothing.
    pub min_rate_share: f64,
}

/// One objective, what was measured and whether it was met.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// The manifest's name for it (`latencyP95Ms`), or `rate`.
    pub slo: String,
    /// `p95 <= 200 ms`.
    pub objective: String,
    pub measured: f64,
    pub limit: f64,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub met: bool,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn missed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.met)
    }
}

/// Checks every objective on all requests of `run` together.
pub fn judge(run: &Run, slos: &Slos) -> Verdict {
    let t = &run.total;
    let error_ratio = if t.count == 0 { 1.0 } else { t.errors as f64 / t.count as f64 };
    let mut checks = vec![
        upper("latencyP95Ms", "p95", t.latency_ms.p95, slos.latency_p95_ms, " ms"),
        upper("latencyP99Ms", "p99", t.latency_ms.p99, slos.latency_p99_ms, " ms"),
        upper("errorRatio", "error ratio", error_ratio, slos.error_ratio, ""),
    ];
    if let Some(a) = slos.availability {
        checks.push(lower("availability", "successful %", (1.0 - error_ratio) * 100.0, a));
    }
    if let Some(target) = run.target_rate {
        let limit = target * slos.min_rate_share;
        checks.push(lower("rate", "offered req/s", run.offered_rate, limit));
    }
    if t.count == 0 {
        checks.push(lower("requests", "completed requests", 0.0, 1.0));
    }
    Verdict { met: checks.iter().all(|c| c.met), checks }
}

fn upper(slo: &str, what: &str, measured: f64, limit: f64, unit: &str) -> Check {
    Check { slo: slo.to_owned(), objective: format!("{what} <= {}{unit}", num(limit)), measured, limit, met: measured <= limit }
}

fn lower(slo: &str, what: &str, measured: f64, limit: f64) -> Check {
    Check { slo: slo.to_owned(), objective: format!("{what} >= {}", num(limit)), measured, limit, met: measured >= limit }
}

/// A number with at most three decimals and no trailing zeros: 9.5, 950, 0.001.
pub fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Arrivals;
    use crate::stats::{RowReport, Tally};

    fn run_with(latencies_ms: &[(u64, u16)], offered_rate: f64) -> Run {
        let mut t = Tally::default();
        for (ms, status) in latencies_ms {
            t.record(ms * 1000, *status, *status < 400);
        }
        let total = RowReport::new("all", &t, 10.0, Some(100.0));
        Run {
            arrivals: Arrivals::Uniform,
            target_rate: Some(100.0),
            scheduled: t.count(),
            started: t.count(),
            not_started: 0,
            offered_rate,
            throughput: total.rate,
            seconds: 10.0,
            connections: 4,
            late: 0,
            late_after_ms: 10.0,
            start_delay_ms: Default::default(),
            retries: 0,
            retried_statuses: Default::default(),
            interrupted: false,
            rows: vec![total.clone()],
            total,
            timeline: vec![],
        }
    }

    fn slos() -> Slos {
        Slos { latency_p95_ms: 200.0, latency_p99_ms: 500.0, error_ratio: 0.01, availability: Some(99.0), min_rate_share: 0.95 }
    }

    fn missed(v: &Verdict) -> Vec<&str> {
        v.missed().map(|c| c.slo.as_str()).collect()
    }

    #[test]
    fn a_fast_clean_run_meets_every_slo() {
        let lat: Vec<(u64, u16)> = (0..1000).map(|i| (i % 100, 200)).collect();
        let v = judge(&run_with(&lat, 100.0), &slos());
        assert!(v.met, "{v:?}");
        assert_eq!(v.checks.len(), 5);
    }

    #[test]
    fn each_missed_slo_is_named() {
        // 10 % of requests take 300 ms: p95 misses, p99 (<= 500) holds.
        let slow: Vec<(u64, u16)> = (0..1000).map(|i| (if i % 10 == 0 { 300 } else { 5 }, 200)).collect();
        assert_eq!(missed(&judge(&run_with(&slow, 100.0), &slos())), ["latencyP95Ms"]);
        // 2 % errors: the error ratio and availability both miss.
        let errors: Vec<(u64, u16)> = (0..1000).map(|i| (5, if i % 50 == 0 { 503 } else { 200 })).collect();
        assert_eq!(missed(&judge(&run_with(&errors, 100.0), &slos())), ["errorRatio", "availability"]);
        // A run that offered only 80 of 100 req/s proves nothing about the level's rate.
        let fast: Vec<(u64, u16)> = (0..1000).map(|_| (5, 200)).collect();
        assert_eq!(missed(&judge(&run_with(&fast, 80.0), &slos())), ["rate"]);
    }

    #[test]
    fn a_run_without_requests_fails() {
        let v = judge(&run_with(&[], 100.0), &slos());
        assert!(!v.met);
        assert!(missed(&v).contains(&"requests"));
    }
}
