//! Builders for constructed histories and snapshots in the checker's tests.

use std::time::Duration;

use crate::history::{History, Line, Op, Operation, Outcome};
use crate::snapshot::{DbSnapshot, OrderRow};

pub fn history(ops: Vec<Op>) -> History {
    History { ops }
}

fn op(op: Operation, ms: u64, latency_ms: u64, outcome: Outcome) -> Op {
    let at = Duration::from_millis(ms);
    Op { client: 1, op, scheduled: at, started: at, ended: at + Duration::from_millis(latency_ms), outcome }
}

/// A checkout by `user` under `key`, due at `ms`, taking 10 ms.
pub fn checkout(user: i64, key: &str, ms: u64, outcome: Outcome) -> Op {
    let cart = vec![Line { product_id: 1, quantity: 1 }];
    op(Operation::Checkout { user_id: user, idempotency_key: key.into(), cart }, ms, 10, outcome)
}

pub fn flash(user: i64, sale: i64, quantity: u32, ms: u64, outcome: Outcome) -> Op {
    let key = format!("flash-{user}-{ms}");
    op(Operation::FlashPurchase { user_id: user, sale_id: sale, quantity, idempotency_key: key }, ms, 10, outcome)
}

pub fn read(ms: u64) -> Op {
    op(Operation::Read { route: "/products".into() }, ms, 5, ok_read())
}

pub fn ok(order_id: i64) -> Outcome {
    Outcome::Ok { order_id: Some(order_id) }
}

pub fn ok_read() -> Outcome {
    Outcome::Ok { order_id: None }
}

pub fn failed(status: u16, definitive: bool) -> Outcome {
    Outcome::Failed { status, definitive }
}

pub fn unknown() -> Outcome {
    Outcome::Unknown { error: "connection reset by peer".into() }
}

/// Complete orders (items and payment present) as (id, user, key).
pub fn orders(rows: &[(i64, i64, &str)]) -> DbSnapshot {
    let orders =
        rows.iter().map(|(id, user, key)| OrderRow { id: *id, user_id: *user, idempotency_key: key.to_string(), items: 1, payment: true }).collect();
    DbSnapshot { orders, ..DbSnapshot::default() }
}
