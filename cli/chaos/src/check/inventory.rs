//! Stock and flash sales add up: stock never below zero and initial − sold = remaining
//! per product; a sale never sells or acknowledges more than it offered, and sold +
//! remaining = offered.

use std::collections::BTreeMap;

use super::{CheckName, CheckResult, Finding};
use crate::history::{History, Operation, Outcome};
use crate::snapshot::DbSnapshot;

pub fn stock(snapshot: &DbSnapshot) -> CheckResult {
    let mut findings = Vec::new();
    for p in &snapshot.products {
        if p.stock < 0 {
            findings.push(Finding::NegativeStock { product_id: p.id, stock: p.stock });
        }
        if p.initial_stock - p.units_sold != p.stock {
            findings.push(Finding::StockMismatch { product_id: p.id, initial: p.initial_stock, sold: p.units_sold, remaining: p.stock });
        }
    }
    let sold: i64 = snapshot.products.iter().map(|p| p.units_sold).sum();
    let summary = format!("{} products, {sold} units sold", snapshot.products.len());
    CheckResult::new(CheckName::Stock, !findings.is_empty(), summary, findings)
}

pub fn flash_sales(history: &History, snapshot: &DbSnapshot) -> CheckResult {
    let mut acknowledged: BTreeMap<i64, i64> = BTreeMap::new();
    for op in &history.ops {
        if let (Operation::FlashPurchase { sale_id, quantity, .. }, Outcome::Ok { .. }) = (&op.op, &op.outcome) {
            *acknowledged.entry(*sale_id).or_default() += i64::from(*quantity);
        }
    }
    let mut findings = Vec::new();
    for s in &snapshot.flash_sales {
        if s.sold > s.units {
            findings.push(Finding::Oversold { sale_id: s.id, offered: s.units, sold: s.sold });
        }
        let acked = acknowledged.get(&s.id).copied().unwrap_or(0);
        if acked > s.units {
            findings.push(Finding::OverAcknowledged { sale_id: s.id, offered: s.units, acknowledged: acked });
        }
        if s.ordered != s.sold {
            findings.push(Finding::SaleOrdersMismatch { sale_id: s.id, sold: s.sold, ordered: s.ordered });
        }
        if s.sold + s.remaining != s.units || s.remaining < 0 {
            findings.push(Finding::SaleMismatch { sale_id: s.id, offered: s.units, sold: s.sold, remaining: s.remaining });
        }
    }
    let summary = snapshot.flash_sales.iter().map(|s| format!("sale {}: {} of {} sold", s.id, s.sold, s.units)).collect::<Vec<_>>().join("; ");
    let summary = if summary.is_empty() { "no flash sale in the snapshot".to_string() } else { summary };
    CheckResult::new(CheckName::FlashSale, !findings.is_empty(), summary, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::fixtures::*;
    use crate::snapshot::{FlashSaleRow, ProductRow};

    fn products(rows: &[(i64, i64, i64, i64)]) -> DbSnapshot {
        let products = rows.iter().map(|&(id, initial_stock, stock, units_sold)| ProductRow { id, initial_stock, stock, units_sold }).collect();
        DbSnapshot { products, ..DbSnapshot::default() }
    }

    fn sale(id: i64, units: i64, remaining: i64, sold: i64) -> DbSnapshot {
        DbSnapshot { flash_sales: vec![FlashSaleRow { id, units, remaining, sold, ordered: sold }], ..DbSnapshot::default() }
    }

    #[test]
    fn stock_that_adds_up_passes_and_that_does_not_is_named() {
        assert_eq!(stock(&products(&[(1, 100, 60, 40), (2, 5, 0, 5)])).verdict, Verdict::Pass);
        let r = stock(&products(&[(1, 100, 61, 40), (2, 5, -1, 6)]));
        assert_eq!(
            r.findings,
            [Finding::StockMismatch { product_id: 1, initial: 100, sold: 40, remaining: 61 }, Finding::NegativeStock { product_id: 2, stock: -1 },]
        );
        assert_eq!(r.findings[0].to_string(), "product 1: 100 initial − 40 sold = 60, but 61 remain");
    }

    #[test]
    fn an_oversold_flash_sale_is_caught_in_the_database_and_in_the_history() {
        let h = history(vec![flash(1, 7, 1, 100, ok(1)), flash(2, 7, 1, 200, failed(409, true))]);
        assert_eq!(flash_sales(&h, &sale(7, 10, 9, 1)).verdict, Verdict::Pass);

        let r = flash_sales(&h, &sale(7, 10, 0, 11));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.findings.contains(&Finding::Oversold { sale_id: 7, offered: 10, sold: 11 }), "{r:?}");
        assert!(r.findings.contains(&Finding::SaleMismatch { sale_id: 7, offered: 10, sold: 11, remaining: 0 }), "{r:?}");

        // The database kept count, but buyers were told they won more units than exist.
        let h = history((0..3).map(|u| flash(u, 7, 1, 100 + u as u64, ok(u))).collect());
        let r = flash_sales(&h, &sale(7, 2, 0, 2));
        assert_eq!(r.findings, [Finding::OverAcknowledged { sale_id: 7, offered: 2, acknowledged: 3 }]);
    }

    #[test]
    fn a_purchase_without_its_order_line_is_caught() {
        let h = history(vec![flash(1, 7, 1, 100, ok(1))]);
        let mut db = sale(7, 10, 9, 1);
        db.flash_sales[0].ordered = 0;
        let r = flash_sales(&h, &db);
        assert_eq!(r.findings, [Finding::SaleOrdersMismatch { sale_id: 7, sold: 1, ordered: 0 }]);
        assert_eq!(r.findings[0].to_string(), "flash sale 7: purchases hold 1 units but its orders hold 0");
    }
}
