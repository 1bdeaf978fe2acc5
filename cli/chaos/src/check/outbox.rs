//! The outbox delivers at least once and takes effect once: every committed order has
//! one `order.placed` event, processed, with exactly one notification.

use std::collections::BTreeMap;

use super::{CheckName, CheckResult, Finding};
use crate::snapshot::{DbSnapshot, OutboxRow};

pub fn check(snapshot: &DbSnapshot) -> CheckResult {
    let mut events: BTreeMap<i64, Vec<&OutboxRow>> = BTreeMap::new();
    for e in &snapshot.outbox {
        events.entry(e.order_id).or_default().push(e);
    }
    let mut findings = Vec::new();
    let mut delivered = 0;
    for o in &snapshot.orders {
        let es = events.get(&o.id).map(Vec::as_slice).unwrap_or_default();
        if es.is_empty() {
            findings.push(Finding::EventMissing { order_id: o.id });
            continue;
        }
        if es.len() > 1 {
            findings.push(Finding::EventDuplicated { order_id: o.id, event_ids: es.iter().map(|e| e.id).collect() });
        }
        for e in es.iter().filter(|e| !e.processed || e.notifications == 0) {
            findings.push(Finding::EventUndelivered { order_id: o.id, event_id: e.id, dead_lettered: e.dead_lettered });
        }
        let notifications: u32 = es.iter().map(|e| e.notifications).sum();
        if notifications > 1 {
            findings.push(Finding::EventProcessedTwice { order_id: o.id, notifications });
        }
        if notifications > 0 {
            delivered += 1;
        }
    }
    let summary = format!("{delivered} of {} orders notified", snapshot.orders.len());
    CheckResult::new(CheckName::Outbox, !findings.is_empty(), summary, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::fixtures::*;

    fn event(id: i64, order_id: i64, processed: bool, notifications: u32) -> OutboxRow {
        OutboxRow { id, order_id, processed, notifications, dead_lettered: false }
    }

    #[test]
    fn every_order_notified_once_passes() {
        let mut db = orders(&[(11, 1, "a"), (12, 2, "b")]);
        db.outbox = vec![event(1, 11, true, 1), event(2, 12, true, 1)];
        let r = check(&db);
        assert_eq!((r.verdict, r.summary.as_str()), (Verdict::Pass, "2 of 2 orders notified"));
    }

    #[test]
    fn an_event_never_delivered_missing_or_processed_twice_is_caught() {
        let mut db = orders(&[(11, 1, "a"), (12, 2, "b"), (13, 3, "c"), (14, 4, "d")]);
        db.outbox = vec![event(1, 11, false, 0), event(3, 13, true, 1), event(4, 13, true, 1), event(5, 14, true, 0)];
        db.outbox[3].dead_lettered = true;
        let r = check(&db);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(
            r.findings,
            [
                Finding::EventUndelivered { order_id: 11, event_id: 1, dead_lettered: false },
                Finding::EventMissing { order_id: 12 },
                Finding::EventDuplicated { order_id: 13, event_ids: vec![3, 4] },
                Finding::EventProcessedTwice { order_id: 13, notifications: 2 },
                Finding::EventUndelivered { order_id: 14, event_id: 5, dead_lettered: true },
            ]
        );
        assert_eq!(r.findings[0].to_string(), "order 11's event 1 never delivered");
    }
}
