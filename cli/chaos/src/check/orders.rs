//! Orders exactly once: every acknowledged write is in the database once, with its items
//! and payment; every unknown outcome is resolved against the database and reported,
//! never counted blindly; a definitively refused write left nothing behind.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{CheckName, CheckResult, Finding};
use crate::experiment::OrdersCheck;
use crate::history::{History, IntentKey, Outcome};
use crate::snapshot::{DbSnapshot, OrderRow};

/// A write whose outcome the client never learned, and what the database says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub user_id: i64,
    pub idempotency_key: String,
    pub attempts: u32,
    pub committed: bool,
    pub order_ids: Vec<i64>,
}

/// The comparison of writes with orders, before any threshold is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub acknowledged: usize,
    pub findings: Vec<Finding>,
    pub resolutions: Vec<Resolution>,
}

/// What the history says about one idempotency key, over all its attempts.
#[derive(Default)]
struct Intent {
    attempts: u32,
    acknowledged: BTreeSet<Option<i64>>,
    unsure: bool,
}

pub fn analyse(history: &History, snapshot: &DbSnapshot) -> Analysis {
    let mut intents: BTreeMap<IntentKey, Intent> = BTreeMap::new();
    for op in &history.ops {
        let Some(key) = op.intent() else { continue };
        let intent = intents.entry(key).or_default();
        intent.attempts += 1;
        match &op.outcome {
            Outcome::Ok { order_id } => {
                intent.acknowledged.insert(*order_id);
            }
            Outcome::Failed { definitive: true, .. } => {}
            Outcome::Failed { definitive: false, .. } | Outcome::Unknown { .. } => intent.unsure = true,
        }
    }
    let mut rows: BTreeMap<IntentKey, Vec<&OrderRow>> = BTreeMap::new();
    for o in &snapshot.orders {
        rows.entry(IntentKey { user_id: o.user_id, idempotency_key: o.idempotency_key.clone() }).or_default().push(o);
    }

    let mut out = Analysis::default();
    // Duplicates are a fault of the database state, whatever the history says.
    for (key, found) in &rows {
        if found.len() > 1 {
            out.findings.push(Finding::DuplicateOrder {
                user_id: key.user_id,
                idempotency_key: key.idempotency_key.clone(),
                order_ids: found.iter().map(|o| o.id).collect(),
            });
        }
    }
    for (key, intent) in &intents {
        let found = rows.get(key).map(Vec::as_slice).unwrap_or_default();
        let found_ids: Vec<i64> = found.iter().map(|o| o.id).collect();
        let (user_id, idempotency_key) = (key.user_id, key.idempotency_key.clone());
        if !intent.acknowledged.is_empty() {
            out.acknowledged += 1;
            let acked: Vec<i64> = intent.acknowledged.iter().flatten().copied().collect();
            if found.is_empty() {
                out.findings.push(Finding::LostOrder { user_id, idempotency_key, order_id: acked.first().copied() });
                continue;
            }
            if acked.len() > 1 {
                // Two acknowledgements with different ids for one key: the client was told
                // of two orders, whatever the database kept.
                out.findings.push(Finding::DuplicateOrder { user_id, idempotency_key: idempotency_key.clone(), order_ids: acked.clone() });
            }
            for a in acked.iter().filter(|a| !found_ids.contains(a)) {
                out.findings.push(Finding::WrongOrder {
                    user_id,
                    idempotency_key: idempotency_key.clone(),
                    acknowledged: *a,
                    found: found_ids.clone(),
                });
            }
        } else if intent.unsure {
            out.resolutions.push(Resolution {
                user_id,
                idempotency_key,
                attempts: intent.attempts,
                committed: !found.is_empty(),
                order_ids: found_ids,
            });
        } else if !found.is_empty() {
            out.findings.push(Finding::FailedButCommitted { user_id, idempotency_key, order_ids: found_ids });
        }
    }
    // Every order that exists, acknowledged or resolved, must be whole.
    for o in &snapshot.orders {
        if o.items == 0 {
            out.findings.push(Finding::MissingItems { order_id: o.id });
        }
        if !o.payment {
            out.findings.push(Finding::MissingPayment { order_id: o.id });
        }
    }
    out
}

impl Analysis {
    /// Acknowledged writes the database lost: the run's RPO in writes.
    pub fn lost(&self) -> u64 {
        self.findings.iter().filter(|f| matches!(f, Finding::LostOrder { .. })).count() as u64
    }

    pub fn verdict(&self, config: &OrdersCheck) -> CheckResult {
        let lost = self.lost();
        let others = self.findings.iter().filter(|f| !matches!(f, Finding::LostOrder { .. })).count();
        let committed = self.resolutions.iter().filter(|r| r.committed).count();
        let duplicated = self.findings.iter().filter(|f| matches!(f, Finding::DuplicateOrder { .. })).count();
        let summary = format!(
            "{} acknowledged, {lost} lost (max {}), {duplicated} duplicated; {} unknown: {committed} committed, {} not",
            self.acknowledged,
            config.max_lost,
            self.resolutions.len(),
            self.resolutions.len() - committed
        );
        CheckResult::new(CheckName::Orders, lost > config.max_lost || others > 0, summary, self.findings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::fixtures::*;

    fn judge(h: &History, db: &DbSnapshot) -> CheckResult {
        analyse(h, db).verdict(&OrdersCheck::default())
    }

    #[test]
    fn a_clean_history_passes() {
        let h = history(vec![checkout(1, "a", 100, ok(11)), checkout(2, "b", 200, ok(12)), read(300)]);
        let db = orders(&[(11, 1, "a"), (12, 2, "b")]);
        let r = judge(&h, &db);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.summary, "2 acknowledged, 0 lost (max 0), 0 duplicated; 0 unknown: 0 committed, 0 not");
    }

    #[test]
    fn a_lost_order_is_named_and_counted_as_rpo() {
        let h = history(vec![checkout(1, "a", 100, ok(11)), checkout(2, "b", 200, ok(12))]);
        let a = analyse(&h, &orders(&[(11, 1, "a")]));
        assert_eq!(a.lost(), 1);
        let r = a.verdict(&OrdersCheck::default());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.findings, [Finding::LostOrder { user_id: 2, idempotency_key: "b".into(), order_id: Some(12) }]);
        assert!(r.findings[0].to_string().starts_with("lost order 12 (user 2, key b)"));
        assert_eq!(a.verdict(&OrdersCheck { max_lost: 1 }).verdict, Verdict::Pass, "within the promised RPO");
    }

    #[test]
    fn a_duplicate_is_two_orders_for_one_users_key() {
        // The client retried after a broken connection; a non-idempotent checkout wrote twice.
        let h = history(vec![checkout(1, "a", 100, unknown()), checkout(1, "a", 900, ok(12))]);
        let r = judge(&h, &orders(&[(11, 1, "a"), (12, 1, "a"), (13, 2, "a")]));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.findings, [Finding::DuplicateOrder { user_id: 1, idempotency_key: "a".into(), order_ids: vec![11, 12] }]);
    }

    #[test]
    fn unknown_outcomes_are_resolved_against_the_database_not_counted() {
        let h = history(vec![
            checkout(1, "committed", 100, unknown()),
            checkout(2, "vanished", 200, unknown()),
            checkout(3, "five-hundred", 300, failed(503, false)),
        ]);
        let a = analyse(&h, &orders(&[(21, 1, "committed")]));
        let r = a.verdict(&OrdersCheck::default());
        assert_eq!(r.verdict, Verdict::Pass, "an unknown outcome is neither a loss nor a success: {r:?}");
        let res: Vec<(&str, bool, &[i64])> =
            a.resolutions.iter().map(|r| (r.idempotency_key.as_str(), r.committed, r.order_ids.as_slice())).collect();
        assert_eq!(res, [("committed", true, &[21][..]), ("vanished", false, &[][..]), ("five-hundred", false, &[][..])]);
        assert_eq!(a.lost(), 0);
        assert!(r.summary.ends_with("3 unknown: 1 committed, 2 not"), "{}", r.summary);
    }

    #[test]
    fn a_refused_write_that_committed_an_incomplete_or_other_order_is_caught() {
        let h = history(vec![checkout(1, "refused", 100, failed(409, true)), checkout(2, "b", 200, ok(30))]);
        let mut db = orders(&[(21, 1, "refused"), (31, 2, "b")]);
        db.orders[1].payment = false;
        db.orders[1].items = 0;
        let r = judge(&h, &db);
        assert_eq!(
            r.findings,
            [
                Finding::FailedButCommitted { user_id: 1, idempotency_key: "refused".into(), order_ids: vec![21] },
                Finding::WrongOrder { user_id: 2, idempotency_key: "b".into(), acknowledged: 30, found: vec![31] },
                Finding::MissingItems { order_id: 31 },
                Finding::MissingPayment { order_id: 31 },
            ]
        );
    }
}
