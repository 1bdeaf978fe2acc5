//! The SQL scalectl runs on the shop's database to see what it holds, in one place, so
//! that `load`'s flash-sale checks and `chaos run`'s checker count the same way. Each
//! query returns one line that psql prints unaligned; the crate itself never connects
//! (the caller runs the text through its provider).

use serde::Serialize;

/// What the database says about a flash sale.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DbView {
    pub units: i64,
    pub remaining: i64,
    /// Rows in `flash_purchases` and the units they hold: what the sale sold.
    pub purchases: i64,
    pub purchased_units: i64,
    /// Lines of the sale's flash orders for its product, and their units: each purchase
    /// must have exactly one.
    pub order_lines: i64,
    pub ordered_units: i64,
}

/// The query for [`DbView`]: one `|`-separated row.
pub fn flash_sale(sale_id: i64) -> String {
    format!(
        "SELECT f.units, f.remaining, \
           (SELECT count(*) FROM flash_purchases p WHERE p.sale_id = f.id), \
           (SELECT coalesce(sum(quantity), 0) FROM flash_purchases p WHERE p.sale_id = f.id), \
           (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE i.product_id = f.product_id AND o.kind = 'flash'), \
           (SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id \
              WHERE i.product_id = f.product_id AND o.kind = 'flash') \
         FROM flash_sales f WHERE f.id = {sale_id}"
    )
}

/// Reads [`flash_sale`]'s one row.
pub fn parse_flash_sale(text: &str) -> Option<DbView> {
    let v: Vec<i64> = text.trim().split('|').map(|f| f.trim().parse().ok()).collect::<Option<_>>()?;
    let [units, remaining, purchases, purchased_units, order_lines, ordered_units] = v[..] else { return None };
    Some(DbView { units, remaining, purchases, purchased_units, order_lines, ordered_units })
}

/// What a chaos run's orders left in the database, as one JSON object: the orders whose
/// idempotency key starts with `chaos-{run_id}-` (with their item count and payment),
/// `products` with their stock and the units those orders sold, and the `order.placed`
/// outbox events of those orders with what the workers did with them.
pub fn chaos_snapshot(run_id: &str, product_ids: &[i64]) -> String {
    let ids: Vec<String> = product_ids.iter().map(i64::to_string).collect();
    format!(
        "WITH o AS (SELECT * FROM orders WHERE idempotency_key LIKE 'chaos-{run_id}-%') \
         SELECT json_build_object( \
           'orders', coalesce((SELECT json_agg(json_build_object('id', o.id, 'user_id', o.user_id, 'idempotency_key', o.idempotency_key, \
               'items', (SELECT count(*) FROM order_items i WHERE i.order_id = o.id), \
               'payment', EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id))) FROM o), '[]'), \
           'products', coalesce((SELECT json_agg(json_build_object('id', p.id, 'stock', p.stock, \
               'units_sold', coalesce((SELECT sum(i.quantity) FROM order_items i JOIN o ON o.id = i.order_id WHERE i.product_id = p.id), 0))) \
               FROM products p WHERE p.id IN ({ids})), '[]'), \
           'outbox', coalesce((SELECT json_agg(json_build_object('id', x.id, 'order_id', (x.payload->>'order_id')::bigint, \
               'processed', x.processed_at IS NOT NULL, \
               'notifications', (SELECT count(*) FROM notifications n WHERE n.outbox_id = x.id), \
               'dead_lettered', EXISTS (SELECT 1 FROM dead_letters d WHERE d.outbox_id = x.id))) \
               FROM outbox x WHERE x.topic = 'order.placed' AND (x.payload->>'order_id')::bigint IN (SELECT id FROM o)), '[]'))",
        ids = if ids.is_empty() { "NULL".to_string() } else { ids.join(",") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flash_sale_row_reads_back_and_a_malformed_one_is_refused() {
        let v = parse_flash_sale("1000|0|1000|1000|1000|1000\n").unwrap();
        assert_eq!((v.units, v.remaining, v.purchased_units, v.ordered_units), (1000, 0, 1000, 1000));
        assert_eq!(parse_flash_sale("1000|0|1000"), None);
        assert_eq!(parse_flash_sale(""), None);
        assert!(flash_sale(7).contains("f.id = 7"));
        assert!(chaos_snapshot("r1", &[]).contains("IN (NULL)"), "no products is still valid SQL");
    }
}
