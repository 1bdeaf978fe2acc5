//! What the checker reads from the database after recovery, as plain data: the runner
//! fills it with SQL (restricted to the run's users and products); the checker only
//! compares it with the history.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DbSnapshot {
    pub orders: Vec<OrderRow>,
    pub products: Vec<ProductRow>,
    pub flash_sales: Vec<FlashSaleRow>,
    /// `order.placed` events only.
    pub outbox: Vec<OutboxRow>,
}

/// One row of `orders`, with what its transaction must have written alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub idempotency_key: String,
    /// Rows in `order_items` for it.
    pub items: u32,
    /// A row in `payments` for it.
    pub payment: bool,
}

/// A product's stock: `initial` as it stood when the workload started (after any flash
/// sale took its units out), `units_sold` from its `order_items` of cart orders since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRow {
    pub id: i64,
    pub initial_stock: i64,
    pub stock: i64,
    pub units_sold: i64,
}

/// A flash sale: `units` offered, `remaining` in its row, `sold` in its orders' items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlashSaleRow {
    pub id: i64,
    pub units: i64,
    pub remaining: i64,
    /// Units in `flash_purchases`.
    pub sold: i64,
    /// Units in the sale's flash orders: each purchase is exactly one order line.
    #[serde(default)]
    pub ordered: i64,
}

/// One outbox event and what the workers did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub order_id: i64,
    /// `processed_at` is set.
    pub processed: bool,
    /// Rows in `notifications` for it (the effect; unique per event in the schema).
    pub notifications: u32,
    /// It was moved to `dead_letters`.
    pub dead_lettered: bool,
}
