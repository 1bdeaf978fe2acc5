//! Rules across an experiment's fields that a schema cannot express: a partition has two
//! disjoint sides, a fault fits inside the workload, targets exist at the listed levels,
//! every fault has the rollback that undoes it.

use std::collections::BTreeSet;

use crate::experiment::{Experiment, Fault, FaultKind, Rollback, Scenario, Target};

/// Every rule broken, as (key path, message).
pub fn check(e: &Experiment) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |path: String, msg: String| out.push((path, msg));

    if e.metadata.name.is_empty() || !e.metadata.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        bad("metadata.name".into(), format!("`{}` must be lowercase letters, digits and `-`", e.metadata.name));
    }
    if e.levels.is_empty() {
        bad("levels".into(), "list at least one level (1 to 6)".into());
    }
    let mut seen = BTreeSet::new();
    for (i, l) in e.levels.iter().enumerate() {
        if !(1..=6).contains(l) {
            bad(format!("levels.{i}"), format!("level must be 1 to 6, found {l}"));
        } else if !seen.insert(l) {
            bad(format!("levels.{i}"), format!("level {l} is listed twice"));
        }
    }
    let lowest = e.levels.iter().copied().filter(|l| (1..=6).contains(l)).min();

    let probes = &e.steady_state.probes;
    if probes.is_empty() {
        bad("steadyState.probes".into(), "a steady-state hypothesis needs at least one probe".into());
    }
    let mut names = BTreeSet::new();
    for (i, p) in probes.iter().enumerate() {
        let set: Vec<&str> = [
            p.http.as_ref().map(|_| "http"),
            p.sql.as_ref().map(|_| "sql"),
            p.prometheus.as_ref().map(|_| "prometheus"),
            p.process.as_ref().map(|_| "process"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.len() {
            1 => {}
            0 => bad(format!("steadyState.probes.{i}"), format!("probe `{}` needs one of http, sql, prometheus or process", p.name)),
            _ => bad(
                format!("steadyState.probes.{i}.{}", set[1]),
                format!("probe `{}` has both `{}` and `{}`; a probe checks one thing", p.name, set[0], set[1]),
            ),
        }
        if !names.insert(p.name.as_str()) {
            bad(format!("steadyState.probes.{i}.name"), format!("probe name `{}` is used twice", p.name));
        }
    }

    if e.workload.duration.0.is_zero() {
        bad("workload.duration".into(), "the workload must run for some time".into());
    }
    if e.method.is_empty() {
        bad("method".into(), "an experiment needs at least one fault".into());
    }
    for (i, f) in e.method.iter().enumerate() {
        fault(e, i, f, lowest, &mut bad);
    }

    let kinds: BTreeSet<FaultKind> = e.method.iter().map(|f| f.kind).collect();
    for kind in kinds {
        if let Some(r) = Rollback::undoing(kind)
            && !e.rollbacks.contains(&r)
        {
            bad("rollbacks".into(), format!("`{kind}` faults need the `{}` rollback, so that nothing is left broken", r.as_str()));
        }
    }

    let c = &e.checks;
    if c.orders.is_none() && c.stock.is_none() && c.flash_sale.is_none() && c.outbox.is_none() && c.availability.is_none() {
        bad("checks".into(), "apply at least one check (orders, stock, flashSale, outbox, availability)".into());
    }
    let scenario = e.workload.scenario;
    if c.flash_sale.is_some() && scenario != Scenario::FlashSale {
        bad("checks.flashSale".into(), "the flashSale check needs `workload.scenario: flash-sale`".into());
    }
    if scenario == Scenario::Browse {
        for (key, present) in [("orders", c.orders.is_some()), ("outbox", c.outbox.is_some())] {
            if present {
                bad(format!("checks.{key}"), format!("the `browse` scenario places no orders for the {key} check to verify"));
            }
        }
    }
    if let Some(a) = &c.availability {
        if a.window.0.is_zero() {
            bad("checks.availability.window".into(), "the error-ratio window must be longer than 0".into());
        }
        if a.max_rto.is_some() && scenario == Scenario::Browse {
            bad("checks.availability.maxRto".into(), "RTO runs to the first acknowledged write, and `browse` writes nothing; use maxRecovery".into());
        }
        if a.max_write_gap.is_some() && scenario == Scenario::Browse {
            bad(
                "checks.availability.maxWriteGap".into(),
                "the write gap is measured between acknowledged writes, and `browse` writes nothing; use maxRecovery".into(),
            );
        }
        if a.max_resume.is_some() && scenario == Scenario::Browse {
            bad(
                "checks.availability.maxResume".into(),
                "resume runs to the first acknowledged write, and `browse` writes nothing; use maxRecovery".into(),
            );
        }
    }
    out
}

fn fault(e: &Experiment, i: usize, f: &Fault, lowest: Option<u8>, bad: &mut impl FnMut(String, String)) {
    let at = format!("method.{i}");
    let kind = f.kind;
    if kind == FaultKind::Partition {
        if f.target.is_some() {
            bad(format!("{at}.target"), "a partition has two sides: use `between: [side, side]` instead of `target`".into());
        }
        match f.between.as_deref() {
            None => bad(at.clone(), "a partition needs `between: [side, side]`, such as [leader, replicas]".into()),
            Some([a, b]) => {
                if overlaps(*a, *b) {
                    bad(format!("{at}.between"), format!("the sides `{a}` and `{b}` share nodes; a partition cuts two disjoint groups"));
                }
                for (j, side) in [a, b].into_iter().enumerate() {
                    level_fits(*side, lowest, &format!("{at}.between.{j}"), bad);
                }
            }
            Some(sides) => bad(format!("{at}.between"), format!("a partition has exactly two sides, found {}", sides.len())),
        }
    } else {
        if f.between.is_some() {
            bad(format!("{at}.between"), format!("only a partition has sides; `{kind}` takes a `target`"));
        }
        match f.target {
            None => bad(at.clone(), format!("`{kind}` needs a `target`")),
            Some(t) => {
                if !allowed(kind).contains(&t) {
                    let list: Vec<&str> = allowed(kind).iter().map(|t| t.as_str()).collect();
                    bad(format!("{at}.target"), format!("`{kind}` cannot target `{t}`; use one of: {}", list.join(", ")));
                }
                level_fits(t, lowest, &format!("{at}.target"), bad);
            }
        }
    }
    if kind == FaultKind::Switchover && lowest.is_some_and(|l| l < 3) {
        bad(format!("{at}.kind"), "a switchover needs Patroni, which comes with level 3; remove levels 1 and 2".into());
    }

    match (kind, f.duration) {
        (FaultKind::Freeze | FaultKind::Partition, None) => {
            bad(at.clone(), format!("`{kind}` needs a `duration`: it must end before the checks run"))
        }
        (FaultKind::Restart | FaultKind::Switchover, Some(_)) => {
            bad(format!("{at}.duration"), format!("`{kind}` is over when it completes; remove `duration`"))
        }
        _ => {}
    }
    if let Some(j) = f.after
        && j >= i
    {
        bad(format!("{at}.after"), format!("`after: {j}` must name an earlier fault of the method (0 to {})", i as isize - 1));
    }
    let end = e.workload.duration.0;
    let start = earliest_start(e, i);
    let earliest = if f.after.is_some() { " at the earliest" } else { "" };
    if start >= end {
        bad(format!("{at}.at"), format!("starts at {}{earliest}, but the workload stops at {}", crate::span::Span(start), e.workload.duration));
    } else if let Some(d) = f.duration
        && start + d.0 > end
    {
        bad(
            format!("{at}.duration"),
            format!(
                "ends at {}{earliest}, after the workload stops at {}: recovery would go unmeasured",
                crate::span::Span(start + d.0),
                e.workload.duration
            ),
        );
    }
}

/// When fault `i` starts at the earliest: its offset, or the end of the fault it follows
/// (which a switchover's or restart's own time only delays) plus its offset.
pub fn earliest_start(e: &Experiment, i: usize) -> std::time::Duration {
    let f = &e.method[i];
    match f.after {
        Some(j) if j < i => {
            let before = &e.method[j];
            earliest_start(e, j) + before.duration.map_or(std::time::Duration::ZERO, |d| d.0) + f.at.0
        }
        _ => f.at.0,
    }
}

/// The targets each fault kind may hit.
fn allowed(kind: FaultKind) -> &'static [Target] {
    use Target::*;
    match kind {
        FaultKind::NodeLoss | FaultKind::Freeze | FaultKind::Restart => &[Leader, SyncStandby, Replica, Redis, ShopAny, Workers, Broker],
        FaultKind::Switchover => &[SyncStandby, Replica],
        FaultKind::RedisLoss => &[Redis],
        FaultKind::ShopInstanceLoss => &[ShopAny],
        FaultKind::Partition => &[],
    }
}

fn level_fits(t: Target, lowest: Option<u8>, path: &str, bad: &mut impl FnMut(String, String)) {
    if let Some(l) = lowest
        && l < t.min_level()
    {
        bad(path.to_string(), format!("`{t}` exists from level {} on, but `levels` includes {l}", t.min_level()));
    }
}

/// Whether two selectors can name the same node.
fn overlaps(a: Target, b: Target) -> bool {
    fn nodes(t: Target) -> &'static [&'static str] {
        match t {
            Target::Leader => &["leader"],
            Target::SyncStandby => &["sync"],
            Target::Replica => &["async"],
            Target::Replicas => &["sync", "async"],
            Target::Db => &["leader", "sync", "async"],
            Target::Redis => &["redis"],
            Target::ShopAny | Target::Shops => &["shop"],
            Target::Workers => &["worker"],
            Target::Broker => &["broker"],
        }
    }
    nodes(a).iter().any(|n| nodes(b).contains(n))
}
