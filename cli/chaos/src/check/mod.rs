//! The checker: a recorded history and a database snapshot in, a verdict per check out.
//! Pure and deterministic, so each anomaly it claims to catch is proven on a constructed
//! history in its module's tests.
//!
//! - [`orders`]: acknowledged orders exactly once; unknown outcomes resolved; RPO.
//! - [`inventory`]: stock and flash-sale accounting.
//! - [`outbox`]: every order's event delivered, processed once.
//! - [`availability`]: RTO, recovery to steady state, errors and latency per fault.

pub mod availability;
pub mod finding;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod inventory;
pub mod orders;
pub mod outbox;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use availability::{FaultStats, Percentiles};
pub use finding::Finding;
pub use orders::Resolution;

use crate::experiment::{Checks, FaultKind};
use crate::history::History;
use crate::snapshot::DbSnapshot;

/// When a fault was in force during the run (offsets from the run's start), as the
/// runner recorded it: `end` is when it was undone or, for a switchover, completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub kind: FaultKind,
    /// What was hit, as resolved at injection (`leader (node 1)`).
    pub target: String,
    #[serde(rename = "start_s", with = "crate::time::secs")]
    pub start: Duration,
    #[serde(rename = "end_s", with = "crate::time::secs")]
    pub end: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    Orders,
    Stock,
    FlashSale,
    Outbox,
    Availability,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Orders => "orders",
            CheckName::Stock => "stock",
            CheckName::FlashSale => "flash-sale",
            CheckName::Outbox => "outbox",
            CheckName::Availability => "availability",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// One check's verdict, a one-line summary, and every anomaly it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: CheckName,
    pub verdict: Verdict,
    pub summary: String,
    pub findings: Vec<Finding>,
}

impl CheckResult {
    fn new(check: CheckName, failed: bool, summary: String, findings: Vec<Finding>) -> CheckResult {
        let verdict = if failed { Verdict::Fail } else { Verdict::Pass };
        CheckResult { check, verdict, summary, findings }
    }
}

/// Everything `scalectl chaos run` reports; `-o json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    /// Acknowledged writes the database does not have.
    pub rpo: u64,
    /// Every write whose outcome the client did not learn, resolved against the database.
    pub unknown: Vec<Resolution>,
    pub faults: Vec<FaultStats>,
}

/// Judges `history` against `snapshot`. Only the checks set in `expect` give verdicts;
/// RPO, the unknown-outcome resolutions and per-fault availability are always reported.
pub fn check(history: &History, snapshot: &DbSnapshot, faults: &[FaultWindow], expect: &Checks) -> Report {
    let orders = orders::analyse(history, snapshot);
    let availability_config = expect.availability.clone().unwrap_or_default();
    let stats = availability::analyse(history, faults, &availability_config);
    let mut checks = Vec::new();
    if let Some(c) = &expect.orders {
        checks.push(orders.verdict(c));
    }
    if expect.stock.is_some() {
        checks.push(inventory::stock(snapshot));
    }
    if expect.flash_sale.is_some() {
        checks.push(inventory::flash_sales(history, snapshot));
    }
    if expect.outbox.is_some() {
        checks.push(outbox::check(snapshot));
    }
    if let Some(c) = &expect.availability {
        checks.push(availability::verdict(&stats, c));
    }
    Report { passed: checks.iter().all(|c| c.verdict == Verdict::Pass), checks, rpo: orders.lost(), unknown: orders.resolutions, faults: stats }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::experiment::{AvailabilityCheck, Empty, OrdersCheck, OutboxCheck};
    use crate::snapshot::{FlashSaleRow, OutboxRow, ProductRow};

    fn every_check() -> Checks {
        Checks {
            orders: Some(OrdersCheck::default()),
            stock: Some(Empty {}),
            flash_sale: Some(Empty {}),
            outbox: Some(OutboxCheck::default()),
            availability: Some(AvailabilityCheck::default()),
        }
    }

    /// Two checkouts and a flash purchase, all acknowledged (one after a retry), around a
    /// fault that broke a connection whose write did commit.
    fn run() -> (History, DbSnapshot, Vec<FaultWindow>) {
        let h = history(vec![
            checkout(1, "a", 1_000, ok(11)),
            checkout(2, "b", 2_000, unknown()),
            checkout(4, "c", 2_500, unknown()),
            checkout(2, "b", 9_000, ok(12)),
            flash(3, 7, 1, 9_500, ok(13)),
        ]);
        let mut db = orders(&[(11, 1, "a"), (12, 2, "b"), (13, 3, "flash-3-9500"), (14, 4, "c")]);
        db.products = vec![ProductRow { id: 1, initial_stock: 10, stock: 8, units_sold: 2 }];
        db.flash_sales = vec![FlashSaleRow { id: 7, units: 5, remaining: 4, sold: 1, ordered: 1 }];
        db.outbox = [11, 12, 13, 14]
            .iter()
            .map(|&o| OutboxRow { id: o + 100, order_id: o, processed: true, notifications: 1, dead_lettered: false })
            .collect();
        let fault = FaultWindow {
            kind: FaultKind::NodeLoss,
            target: "leader (node 1)".into(),
            start: Duration::from_millis(1_500),
            end: Duration::from_secs(5),
        };
        (h, db, vec![fault])
    }

    #[test]
    fn a_clean_run_passes_every_check_and_reports_rto() {
        let (h, db, faults) = run();
        let r = check(&h, &db, &faults, &every_check());
        assert!(r.passed, "{}", crate::render::text(&r));
        assert_eq!(r.checks.len(), 5);
        assert_eq!((r.rpo, r.unknown.len(), r.unknown[0].committed), (0, 1, true));
        assert_eq!(r.faults[0].rto, Some(Duration::from_millis(7_510)));
        let text = crate::render::text(&r);
        assert!(text.starts_with("PASS: 5 of 5 checks passed, RPO 0 writes\n"), "{text}");
        assert!(text.contains("fault node-loss on leader (node 1) at 1.5s–5.0s: RTO 7.5s"), "{text}");
    }

    #[test]
    fn a_failed_check_fails_the_run_and_names_the_orders_in_json_and_text() {
        let (h, mut db, faults) = run();
        db.orders.retain(|o| o.id != 11);
        let r = check(&h, &db, &faults, &every_check());
        assert!(!r.passed);
        assert_eq!(r.rpo, 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["checks"][0]["check"], "orders");
        assert_eq!(json["checks"][0]["verdict"], "fail");
        assert_eq!(json["checks"][0]["findings"][0]["kind"], "lost-order");
        assert_eq!(json["checks"][0]["findings"][0]["order_id"], 11);
        assert_eq!(json["faults"][0]["rto_s"], 7.51);
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), r, "the JSON report reads back");
        let text = crate::render::text(&r);
        assert!(text.starts_with("FAIL: 4 of 5 checks passed, RPO 1 writes\n"), "{text}");
        assert!(text.contains("  FAIL orders       3 acknowledged, 1 lost"), "{text}");
        assert!(text.contains("- lost order 11 (user 1, key a)"), "{text}");
    }

    #[test]
    fn only_the_checks_asked_for_give_verdicts() {
        let (h, mut db, faults) = run();
        db.outbox.clear();
        let r = check(&h, &db, &faults, &Checks { orders: Some(OrdersCheck::default()), ..Checks::default() });
        assert!(r.passed, "the outbox was not asked about");
        assert_eq!(r.checks.iter().map(|c| c.check).collect::<Vec<_>>(), [CheckName::Orders]);
        assert_eq!(r.faults.len(), 1, "availability is reported even when not judged");
    }
}
