//! The report as text for the terminal: overall verdict, each check with its findings,
//! RPO, unknown outcomes resolved, and availability per fault.

use std::fmt::Write;

use crate::check::{Report, Verdict};

/// At most this many findings per check are listed; the rest are counted (`-o json` has
/// them all).
const SHOWN: usize = 20;

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let overall = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "{overall}: {} of {} checks passed, RPO {} writes", passed(report), report.checks.len(), report.rpo);
    for c in &report.checks {
        let mark = if c.verdict == Verdict::Pass { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark} {:<12} {}", c.check.as_str(), c.summary);
        for f in c.findings.iter().take(SHOWN) {
            let _ = writeln!(out, "         - {f}");
        }
        if c.findings.len() > SHOWN {
            let _ = writeln!(out, "         … and {} more", c.findings.len() - SHOWN);
        }
    }
    if !report.unknown.is_empty() {
        let committed = report.unknown.iter().filter(|r| r.committed).count();
        let _ = writeln!(out, "unknown outcomes: {} writes, {committed} committed, {} not", report.unknown.len(), report.unknown.len() - committed);
    }
    for f in &report.faults {
        let secs = |d: Option<std::time::Duration>| d.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "fault {} on {} at {:.1}s–{:.1}s: RTO {}, resume {} after it ended, longest write gap {}, recovery {}, {}/{} errors ({:.1}%), p50 {:.0}ms p99 {:.0}ms max {:.0}ms",
            f.fault.kind,
            f.fault.target,
            f.fault.start.as_secs_f64(),
            f.fault.end.as_secs_f64(),
            secs(f.rto),
            secs(f.resume),
            secs(f.write_gap),
            if f.interrupted { "cut short by the next fault".to_string() } else { secs(f.recovery) },
            f.errors,
            f.ops,
            f.error_ratio * 100.0,
            f.latency.p50 * 1e3,
            f.latency.p99 * 1e3,
            f.latency.max * 1e3,
        );
    }
    out
}

fn passed(r: &Report) -> usize {
    r.checks.iter().filter(|c| c.verdict == Verdict::Pass).count()
}
