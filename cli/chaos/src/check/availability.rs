//! Availability under each fault: RTO (injection to the first acknowledged write after
//! it), resume (the fault's end to the first acknowledged write after that: for faults
//! that stop every write while they last, RTO can be no shorter than the fault), the
//! longest write gap (the longest time without any acknowledged write, from injection
//! until writes resumed: a planned switchover keeps acknowledging writes for a moment
//! after it is asked for, so its RTO is short while its pause is not), recovery
//! (injection to the moment from which the error ratio in every sliding window stays
//! within the threshold), and errors and latency while the fault lasted.
//! Operations count at the time they were due (open model): an outage shows when users
//! arrived, not when their timeouts fired.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CheckName, CheckResult, FaultWindow, Finding};
use crate::experiment::{AvailabilityCheck, FaultKind};
use crate::history::{History, IntentKey, Op};
use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultStats {
    #[serde(flatten)]
    pub fault: FaultWindow,
    /// Injection to the first acknowledged write that started after it and whose intent
    /// was not tried before it (a retry may be answered with an earlier commit).
    #[serde(rename = "rto_s", with = "crate::time::secs_opt")]
    pub rto: Option<Duration>,
    /// The fault's end (its undo) to the first acknowledged write that started after it.
    #[serde(rename = "resume_s", with = "crate::time::secs_opt")]
    pub resume: Option<Duration>,
    /// The longest time without an acknowledged write, from injection until the first
    /// write acknowledged after the fault's end; `None` if writes never came back.
    #[serde(rename = "write_gap_s", with = "crate::time::secs_opt")]
    pub write_gap: Option<Duration>,
    /// Injection to steady state again; `None` if the run ended (or the next fault came)
    /// before the error ratio settled.
    #[serde(rename = "recovery_s", with = "crate::time::secs_opt")]
    pub recovery: Option<Duration>,
    /// The next fault came before the error ratio settled: whether the system settled is
    /// then judged on the last fault of the run, not on this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Operations due while the fault lasted, and how many of them failed.
    pub ops: usize,
    pub errors: usize,
    pub error_ratio: f64,
    pub latency: Percentiles,
}

/// Latency from when each operation was due, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles (exact: histories are small enough to sort).
    pub fn of(mut latencies: Vec<Duration>) -> Percentiles {
        if latencies.is_empty() {
            return Percentiles::default();
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64()
        };
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

pub fn analyse(history: &History, faults: &[FaultWindow], config: &AvailabilityCheck) -> Vec<FaultStats> {
    let mut due: Vec<(Duration, bool)> = history.ops.iter().map(|o| (o.scheduled, o.is_error())).collect();
    due.sort_by_key(|d| d.0);
    let first_attempt = first_attempts(history);
    // An acknowledgement shows a write made since `t` only if nothing of the same intent
    // was tried before `t`: a retry of a key first sent earlier may be answered with the
    // order an earlier attempt committed (a replay), with no database written since.
    let new_since = |o: &Op, t: Duration| o.intent().and_then(|k| first_attempt.get(&k)).is_none_or(|first| *first >= t || *first == o.started);
    let mut starts: Vec<Duration> = faults.iter().map(|f| f.start).collect();
    starts.sort();
    faults
        .iter()
        .map(|f| {
            let horizon = starts.iter().copied().find(|s| *s > f.start);
            let during: Vec<_> = history.ops.iter().filter(|o| o.scheduled >= f.start && o.scheduled < f.end).collect();
            let errors = during.iter().filter(|o| o.is_error()).count();
            let settled = recovery(&due, f.start, horizon, config);
            let first_ack_after = |t: Duration| {
                history.ops.iter().filter(|o| o.is_write() && o.is_ok() && o.started >= t && new_since(o, t)).map(|o| o.ended - t).min()
            };
            FaultStats {
                fault: f.clone(),
                rto: first_ack_after(f.start),
                resume: first_ack_after(f.end),
                write_gap: longest_write_gap(history, f, |o| new_since(o, f.start)),
                recovery: settled,
                interrupted: settled.is_none() && horizon.is_some(),
                ops: during.len(),
                errors,
                error_ratio: if during.is_empty() { 0.0 } else { errors as f64 / during.len() as f64 },
                latency: Percentiles::of(during.iter().map(|o| o.latency()).collect()),
            }
        })
        .collect()
}

/// The longest stretch between acknowledgements of writes (by when each answer came),
/// starting at the injection and ending with the first acknowledgement after the fault's
/// end (for a switchover, when it completed).
fn longest_write_gap(history: &History, f: &FaultWindow, new: impl Fn(&Op) -> bool) -> Option<Duration> {
    let mut acks: Vec<Duration> = history.ops.iter().filter(|o| o.is_write() && o.is_ok() && o.ended > f.start && new(o)).map(|o| o.ended).collect();
    acks.sort_unstable();
    let resumed = acks.iter().position(|t| *t >= f.end)?;
    let mut previous = f.start;
    let mut longest = Duration::ZERO;
    for &t in &acks[..=resumed] {
        longest = longest.max(t - previous);
        previous = t;
    }
    Some(longest)
}

/// When each write intent (user and idempotency key) was first sent.
fn first_attempts(history: &History) -> HashMap<IntentKey, Duration> {
    let mut first: HashMap<IntentKey, Duration> = HashMap::new();
    for o in &history.ops {
        if let Some(k) = o.intent() {
            let at = first.entry(k).or_insert(o.started);
            *at = (*at).min(o.started);
        }
    }
    first
}

/// Slides a window of `config.window` over `due` (sorted by time), evaluated at each
/// distinct due time in [start, horizon). Steady state is regained with the last failed
/// operation of the last window whose error ratio is above the threshold (not at that
/// window's end, which would add up to a window's width of errors already over); `None`
/// when the last window is still above it, or no operation was due in the range.
fn recovery(due: &[(Duration, bool)], start: Duration, horizon: Option<Duration>, config: &AvailabilityCheck) -> Option<Duration> {
    let width = config.window.0;
    let (mut lo, mut errors) = (0, 0usize);
    let (mut last_bad, mut settled, mut seen, mut last_error) = (None, true, false, Duration::ZERO);
    for hi in 0..due.len() {
        let t = due[hi].0;
        errors += usize::from(due[hi].1);
        if due[hi].1 {
            last_error = t;
        }
        while due[lo].0 + width <= t {
            errors -= usize::from(due[lo].1);
            lo += 1;
        }
        if due.get(hi + 1).is_some_and(|next| next.0 == t) || t < start {
            continue;
        }
        if horizon.is_some_and(|h| t >= h) {
            break;
        }
        seen = true;
        let ratio = errors as f64 / (hi - lo + 1) as f64;
        settled = ratio <= config.max_error_ratio;
        if !settled {
            last_bad = Some(last_error);
        }
    }
    (seen && settled).then(|| last_bad.map_or(Duration::ZERO, |t| t.saturating_sub(start)))
}

pub fn verdict(stats: &[FaultStats], config: &AvailabilityCheck) -> CheckResult {
    let mut findings = Vec::new();
    for s in stats {
        let (fault, target) = (s.fault.kind, s.fault.target.clone());
        // Each write-based limit judges its own measure; writes that never came back
        // are one finding, however many of these limits are set.
        type Exceeded = fn(FaultKind, String, Duration, Duration) -> Finding;
        let limits: [(Option<Span>, Option<Duration>, Exceeded); 3] = [
            (config.max_rto, s.rto, |fault, target, rto, max| Finding::RtoExceeded { fault, target, rto, max }),
            (config.max_resume, s.resume, |fault, target, resume, max| Finding::ResumeExceeded { fault, target, resume, max }),
            (config.max_write_gap, s.write_gap, |fault, target, gap, max| Finding::WriteGapExceeded { fault, target, gap, max }),
        ];
        let mut unacknowledged = false;
        for (max, measured, exceeded) in limits {
            match (max, measured) {
                (None, _) => {}
                (Some(_), None) => unacknowledged = true,
                (Some(max), Some(d)) if d > max.0 => findings.push(exceeded(fault, target.clone(), d, max.0)),
                (Some(_), Some(_)) => {}
            }
        }
        if unacknowledged {
            findings.push(Finding::NoAcknowledgedWrite { fault, target: target.clone() });
        }
        match (s.recovery, config.max_recovery) {
            (None, _) if !s.interrupted => findings.push(Finding::NotRecovered { fault, target }),
            (Some(recovery), Some(max)) if recovery > max.0 => findings.push(Finding::RecoveryExceeded { fault, target, recovery, max: max.0 }),
            _ => {}
        }
    }
    let summary = stats
        .iter()
        .map(|s| {
            format!(
                "{} on {}: RTO {}, longest write gap {}, recovery {}, {:.1}% errors",
                s.fault.kind,
                s.fault.target,
                secs(s.rto),
                secs(s.write_gap),
                if s.interrupted { "cut short by the next fault".to_string() } else { secs(s.recovery) },
                s.error_ratio * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    CheckResult::new(CheckName::Availability, !findings.is_empty(), summary, findings)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::fixtures::*;
    use crate::experiment::FaultKind;
    use crate::span::Span;

    /// A checkout every 100 ms for 60 s; those due in [20 s, 30 s) break.
    fn outage() -> History {
        history(
            (0..600u64)
                .map(|i| {
                    let ms = i * 100;
                    let outcome = if (20_000..30_000).contains(&ms) { unknown() } else { ok(i as i64) };
                    checkout(1, &format!("k{i}"), ms, outcome)
                })
                .collect(),
        )
    }

    fn window(start_ms: u64, end_ms: u64) -> FaultWindow {
        FaultWindow { kind: FaultKind::NodeLoss, target: "leader".into(), start: Duration::from_millis(start_ms), end: Duration::from_millis(end_ms) }
    }

    fn config() -> AvailabilityCheck {
        AvailabilityCheck { window: Span(Duration::from_secs(1)), max_error_ratio: 0.15, ..AvailabilityCheck::default() }
    }

    #[test]
    fn rto_and_recovery_are_measured_on_a_synthetic_timeline() {
        let stats = analyse(&outage(), &[window(20_000, 25_000)], &config());
        let s = &stats[0];
        // The first write due after injection that was acknowledged: due at 30.0 s, 10 ms.
        assert_eq!(s.rto, Some(Duration::from_millis(10_010)));
        // The fault was undone at 25 s; writes came back with the first one due at 30 s.
        assert_eq!(s.resume, Some(Duration::from_millis(5_010)));
        // The window (29.7 s, 30.7 s] still holds two failures of ten (20 % > 15 %), the
        // later due at 29.9 s; from (29.8 s, 30.8 s] on, at most one (10 %).
        assert_eq!(s.recovery, Some(Duration::from_millis(9_900)));
        assert_eq!((s.ops, s.errors, s.error_ratio), (50, 50, 1.0));
        assert_eq!(s.latency.p50, 0.01);
    }

    #[test]
    fn a_retry_answered_from_an_earlier_commit_does_not_end_the_outage() {
        // k150 was sent at 15 s (no answer), committed then; its retry at 20.05 s, just
        // after the leader died, is answered at once with that order: a replay.
        let mut h = outage();
        h.ops.push(checkout(1, "k150", 20_050, ok(150)));
        let s = &analyse(&h, &[window(20_000, 25_000)], &config())[0];
        assert_eq!(s.rto, Some(Duration::from_millis(10_010)), "the first write made after the injection");
        assert_eq!(s.write_gap, Some(Duration::from_millis(10_010)), "the replay does not split the gap");
        // A retry of an intent first sent after the injection is a write made since.
        let mut h = outage();
        h.ops.push(checkout(1, "late", 21_000, unknown()));
        h.ops.push(checkout(1, "late", 22_000, ok(1_000)));
        assert_eq!(analyse(&h, &[window(20_000, 25_000)], &config())[0].rto, Some(Duration::from_millis(2_010)));
    }

    #[test]
    fn a_fault_without_errors_recovers_at_once_and_one_that_never_settles_is_named() {
        let clean = history((0..100u64).map(|i| checkout(1, &format!("k{i}"), i * 100, ok(i as i64))).collect());
        let s = &analyse(&clean, &[window(2_000, 3_000)], &config())[0];
        assert_eq!((s.rto, s.recovery), (Some(Duration::from_millis(10)), Some(Duration::ZERO)));

        let mut broken = outage();
        broken.ops.retain(|o| o.scheduled < Duration::from_secs(30));
        let stats = analyse(&broken, &[window(20_000, 25_000)], &config());
        assert_eq!((stats[0].rto, stats[0].recovery), (None, None));
        let r = verdict(&stats, &AvailabilityCheck { max_rto: Some(Span::secs(30)), ..config() });
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(
            r.findings,
            [
                Finding::NoAcknowledgedWrite { fault: FaultKind::NodeLoss, target: "leader".into() },
                Finding::NotRecovered { fault: FaultKind::NodeLoss, target: "leader".into() },
            ]
        );
    }

    #[test]
    fn a_fault_followed_by_another_before_it_settled_leaves_settling_to_the_last() {
        // The outage's errors run from 20 s to 30 s; a second fault at 26 s comes before
        // the first settled, and the run settles after the second.
        let stats = analyse(&outage(), &[window(20_000, 25_000), window(26_000, 27_000)], &config());
        assert_eq!((stats[0].recovery, stats[0].interrupted), (None, true));
        assert_eq!((stats[1].recovery.is_some(), stats[1].interrupted), (true, false));
        assert_eq!(verdict(&stats, &config()).verdict, Verdict::Pass);
    }

    #[test]
    fn thresholds_judge_rto_and_recovery() {
        let stats = analyse(&outage(), &[window(20_000, 25_000)], &config());
        let tight =
            AvailabilityCheck { max_rto: Some(Span::secs(5)), max_resume: Some(Span::secs(5)), max_recovery: Some(Span::secs(9)), ..config() };
        let r = verdict(&stats, &tight);
        assert_eq!(r.findings.len(), 3, "{r:?}");
        assert_eq!(r.findings[0].to_string(), "node-loss on leader: first acknowledged write after 10.0s (max 5.0s)");
        assert_eq!(r.findings[1].to_string(), "node-loss on leader: first acknowledged write 5.0s after the fault ended (max 5.0s)");
        assert_eq!(r.findings[2].to_string(), "node-loss on leader: steady state after 9.9s (max 9.0s)");
        let loose =
            AvailabilityCheck { max_rto: Some(Span::secs(15)), max_resume: Some(Span::secs(6)), max_recovery: Some(Span::secs(15)), ..config() };
        let r = verdict(&stats, &loose);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.summary, "node-loss on leader: RTO 10.0s, longest write gap 10.0s, recovery 9.9s, 100.0% errors");
    }

    #[test]
    fn a_switchover_that_keeps_acknowledging_for_a_moment_shows_its_pause_in_the_write_gap() {
        // A checkout every 100 ms; asked at 10 s, the old leader still acknowledges
        // writes until 11 s, then none are answered until the one due at 14.4 s.
        let ops = (0..300u64)
            .map(|i| {
                let ms = i * 100;
                let outcome = if (11_000..14_400).contains(&ms) { unknown() } else { ok(i as i64) };
                checkout(1, &format!("k{i}"), ms, outcome)
            })
            .collect();
        let s = &analyse(&history(ops), &[window(10_000, 12_000)], &config())[0];
        assert_eq!(s.rto, Some(Duration::from_millis(10)), "RTO alone misses the pause");
        // The last answer before the pause came at 10.91 s, the next at 14.41 s.
        assert_eq!(s.write_gap, Some(Duration::from_millis(3_500)));
        assert_eq!(s.resume, Some(Duration::from_millis(2_410)));

        // A limit on the gap fails the switchover that RTO passes.
        let stats = [s.clone()];
        let judged = |max_rto, max_write_gap| verdict(&stats, &AvailabilityCheck { max_rto, max_write_gap, ..config() });
        assert_eq!(judged(Some(Span::secs(1)), None).verdict, Verdict::Pass);
        let r = judged(Some(Span::secs(1)), Some(Span::secs(3)));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(
            r.findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["node-loss on leader: no write acknowledged for 3.5s (max 3.0s)"]
        );
        assert_eq!(judged(None, Some(Span::secs(4))).verdict, Verdict::Pass);

        // Writes that never come back leave no gap to report: one finding, whichever
        // limits are set.
        let mut broken = outage();
        broken.ops.retain(|o| o.scheduled < Duration::from_secs(30));
        let stats = analyse(&broken, &[window(20_000, 25_000)], &config());
        assert_eq!(stats[0].write_gap, None);
        let all =
            AvailabilityCheck { max_rto: Some(Span::secs(30)), max_resume: Some(Span::secs(30)), max_write_gap: Some(Span::secs(30)), ..config() };
        assert_eq!(
            verdict(&stats, &all).findings,
            [
                Finding::NoAcknowledgedWrite { fault: FaultKind::NodeLoss, target: "leader".into() },
                Finding::NotRecovered { fault: FaultKind::NodeLoss, target: "leader".into() },
            ]
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (0.05, 0.09, 0.099, 0.1));
    }
}
