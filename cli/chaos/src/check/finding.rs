//! One anomaly a check found, naming what identifies it (order ids, keys, products), so a
//! failed run says which orders were lost or doubled, not just how many.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::experiment::FaultKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// Acknowledged, absent from the database.
    LostOrder {
        user_id: i64,
        idempotency_key: String,
        order_id: Option<i64>,
    },
    /// Two or more orders for one user's idempotency key.
    DuplicateOrder {
        user_id: i64,
        idempotency_key: String,
        order_ids: Vec<i64>,
    },
    /// The acknowledged id is not the order the database holds for the key.
    WrongOrder {
        user_id: i64,
        idempotency_key: String,
        acknowledged: i64,
        found: Vec<i64>,
    },
    MissingItems {
        order_id: i64,
    },
    MissingPayment {
        order_id: i64,
    },
    /// Every attempt was refused definitively, yet an order exists.
    FailedButCommitted {
        user_id: i64,
        idempotency_key: String,
        order_ids: Vec<i64>,
    },
    NegativeStock {
        product_id: i64,
        stock: i64,
    },
    /// initial − sold ≠ remaining.
    StockMismatch {
        product_id: i64,
        initial: i64,
        sold: i64,
        remaining: i64,
    },
    Oversold {
        sale_id: i64,
        offered: i64,
        sold: i64,
    },
    /// More units acknowledged to buyers than the sale offered.
    OverAcknowledged {
        sale_id: i64,
        offered: i64,
        acknowledged: i64,
    },
    /// The units a sale's purchases hold differ from those its orders hold.
    SaleOrdersMismatch {
        sale_id: i64,
        sold: i64,
        ordered: i64,
    },
    /// sold + remaining ≠ offered.
    SaleMismatch {
        sale_id: i64,
        offered: i64,
        sold: i64,
        remaining: i64,
    },
    EventMissing {
        order_id: i64,
    },
    EventDuplicated {
        order_id: i64,
        event_ids: Vec<i64>,
    },
    EventUndelivered {
        order_id: i64,
        event_id: i64,
        dead_lettered: bool,
    },
    EventProcessedTwice {
        order_id: i64,
        notifications: u32,
    },
    NoAcknowledgedWrite {
        fault: FaultKind,
        target: String,
    },
    RtoExceeded {
        fault: FaultKind,
        target: String,
        #[serde(rename = "rto_s", with = "crate::time::secs")]
        rto: Duration,
        #[serde(rename = "max_s", with = "crate::time::secs")]
        max: Duration,
    },
    ResumeExceeded {
        fault: FaultKind,
        target: String,
        #[serde(rename = "resume_s", with = "crate::time::secs")]
        resume: Duration,
        #[serde(rename = "max_s", with = "crate::time::secs")]
        max: Duration,
    },
    WriteGapExceeded {
        fault: FaultKind,
        target: String,
        #[serde(rename = "write_gap_s", with = "crate::time::secs")]
        gap: Duration,
        #[serde(rename = "max_s", with = "crate::time::secs")]
        max: Duration,
    },
    NotRecovered {
        fault: FaultKind,
        target: String,
    },
    RecoveryExceeded {
        fault: FaultKind,
        target: String,
        #[serde(rename = "recovery_s", with = "crate::time::secs")]
        recovery: Duration,
        #[serde(rename = "max_s", with = "crate::time::secs")]
        max: Duration,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            LostOrder { user_id, idempotency_key, order_id } => match order_id {
                Some(id) => write!(f, "lost order {id} (user {user_id}, key {idempotency_key}): acknowledged, not in the database"),
                None => write!(f, "lost write (user {user_id}, key {idempotency_key}): acknowledged, not in the database"),
            },
            DuplicateOrder { user_id, idempotency_key, order_ids } => {
                write!(f, "duplicate orders {} for user {user_id}, key {idempotency_key}", ids(order_ids))
            }
            WrongOrder { user_id, idempotency_key, acknowledged, found } => {
                write!(f, "order {acknowledged} acknowledged for user {user_id}, key {idempotency_key}, but the database holds {}", ids(found))
            }
            MissingItems { order_id } => write!(f, "order {order_id} has no items"),
            MissingPayment { order_id } => write!(f, "order {order_id} has no payment"),
            FailedButCommitted { user_id, idempotency_key, order_ids } => {
                write!(f, "user {user_id}, key {idempotency_key} was refused, yet orders {} exist", ids(order_ids))
            }
            NegativeStock { product_id, stock } => write!(f, "product {product_id} has stock {stock}"),
            StockMismatch { product_id, initial, sold, remaining } => {
                write!(f, "product {product_id}: {initial} initial − {sold} sold = {}, but {remaining} remain", initial - sold)
            }
            Oversold { sale_id, offered, sold } => write!(f, "flash sale {sale_id} sold {sold} of {offered} units"),
            OverAcknowledged { sale_id, offered, acknowledged } => {
                write!(f, "flash sale {sale_id} acknowledged {acknowledged} units to buyers, but offered {offered}")
            }
            SaleOrdersMismatch { sale_id, sold, ordered } => {
                write!(f, "flash sale {sale_id}: purchases hold {sold} units but its orders hold {ordered}")
            }
            SaleMismatch { sale_id, offered, sold, remaining } => {
                write!(f, "flash sale {sale_id}: {sold} sold + {remaining} remaining ≠ {offered} offered")
            }
            EventMissing { order_id } => write!(f, "order {order_id} has no outbox event"),
            EventDuplicated { order_id, event_ids } => write!(f, "order {order_id} has outbox events {}", ids(event_ids)),
            EventUndelivered { order_id, event_id, dead_lettered } => {
                let how = if *dead_lettered { "dead-lettered" } else { "never delivered" };
                write!(f, "order {order_id}'s event {event_id} {how}")
            }
            EventProcessedTwice { order_id, notifications } => {
                write!(f, "order {order_id}'s event processed {notifications} times")
            }
            NoAcknowledgedWrite { fault, target } => write!(f, "{fault} on {target}: no write was acknowledged after it"),
            RtoExceeded { fault, target, rto, max } => {
                write!(f, "{fault} on {target}: first acknowledged write after {:.1}s (max {:.1}s)", rto.as_secs_f64(), max.as_secs_f64())
            }
            ResumeExceeded { fault, target, resume, max } => write!(
                f,
                "{fault} on {target}: first acknowledged write {:.1}s after the fault ended (max {:.1}s)",
                resume.as_secs_f64(),
                max.as_secs_f64()
            ),
            WriteGapExceeded { fault, target, gap, max } => {
                write!(f, "{fault} on {target}: no write acknowledged for {:.1}s (max {:.1}s)", gap.as_secs_f64(), max.as_secs_f64())
            }
            NotRecovered { fault, target } => write!(f, "{fault} on {target}: the error ratio never settled"),
            RecoveryExceeded { fault, target, recovery, max } => {
                write!(f, "{fault} on {target}: steady state after {:.1}s (max {:.1}s)", recovery.as_secs_f64(), max.as_secs_f64())
            }
        }
    }
}

fn ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}
