//! The flash sale: a seller releases `units` of a fresh product at one instant, every
//! buyer tries to buy one at that instant (one Idempotency-Key per buyer, sent again
//! while the outcome is unknown), and afterwards the outcome is checked through the
//! shop and, when the caller can reach it, the database.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;

use crate::Error;
use crate::engine::{self, Class, Config, Row, Run, Step, Workload};
use crate::http::{Conn, Request, STATUS_IO, STATUS_TIMEOUT, Target};
use crate::schedule::Schedule;
use crate::shop::{Setup, call_json, create_flash_sale, create_product};
use crate::shop_sql::DbView;

/// Rows of the flash sale's report.
pub const PURCHASE: usize = 0;
pub const WON: usize = 1;
pub const SOLD_OUT: usize = 2;

#[derive(Debug, Clone)]
pub struct FlashConfig {
    pub units: u32,
    /// How far ahead of its creation the sale starts, so every connection is open and
    /// idle when it does.
    pub lead: Duration,
    pub connections: usize,
    pub timeout: Duration,
    /// Attempts per buyer while the outcome is unknown.
    pub max_attempts: u32,
    pub progress: bool,
}

/// The sale as the shop and the run saw it.
#[derive(Debug, Clone, Serialize)]
pub struct FlashOutcome {
    pub sale_id: i64,
    pub product_id: i64,
    pub units: u32,
    pub buyers: usize,
    /// Buyers told they won (201, or 200 replaying their win).
    pub won: u64,
    /// Buyers told "sold out".
    pub sold_out: u64,
    /// Buyers without a definitive answer after every attempt.
    pub unknown: u64,
    /// `remaining` as `GET /flash-sales/{id}` reports it afterwards.
    pub remaining: i64,
}

/// One correctness check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub check: String,
    pub met: bool,
    pub detail: String,
}

fn purchase_class(status: u16, body: &[u8]) -> Class {
    let says = |what: &str| body.windows(what.len()).any(|w| w == what.as_bytes());
    match status {
        200 | 201 => Class::OkAs(WON),
        409 if says("sold out") => Class::OkAs(SOLD_OUT),
        // Too early (clocks), rate limited, the server's trouble, or no answer at all:
        // the outcome is unknown, so ask again with the same key.
        409 if says("not started") => Class::Retry,
        429 | 500..=599 | STATUS_IO | STATUS_TIMEOUT => Class::Retry,
        _ => Class::Fail,
    }
}

struct Buyers {
    setup: Arc<Setup>,
    sale_id: i64,
}

impl Workload for Buyers {
    fn rows(&self) -> Vec<Row> {
        vec![
            Row { name: format!("POST /flash-sales/{}/purchase", self.sale_id), share: Some(1.0) },
            Row { name: "won".into(), share: None },
            Row { name: "sold out".into(), share: None },
        ]
    }

    fn op(&self, i: u64, steps: &mut Vec<Step>) {
        let buyer = &self.setup.buyers[i as usize];
        let request = Request::post(format!("/flash-sales/{}/purchase", self.sale_id), "{\"quantity\":1}")
            .token(Some(&buyer.auth))
            .client(&buyer.client)
            .key(&format!("flash-{}-{i}", self.sale_id));
        steps.push(Step { row: PURCHASE, request, classify: purchase_class });
    }
}

/// Creates a product of `units` and a sale of all of them starting `lead` from now, then
/// sends every buyer's purchase at the start.
pub async fn run(target: &Target, setup: Arc<Setup>, cfg: &FlashConfig) -> Result<(FlashOutcome, Run), Error> {
    let mut conn = Conn::new(target.clone());
    let name = format!("flash {} units {}", cfg.units, OffsetDateTime::now_utc().unix_timestamp());
    let product_id = create_product(&mut conn, &setup.seller, setup.shop_id, &name, cfg.units).await?;
    let (sale_id, starts_at) = create_flash_sale(&mut conn, &setup, product_id, cfg.units, 1, cfg.lead).await?;
    let until_start = (starts_at - OffsetDateTime::from(SystemTime::now())).try_into().unwrap_or(Duration::ZERO);
    let start = Instant::now() + until_start;
    let buyers = setup.buyers.len();
    let mut config = Config::new(Schedule::burst(buyers as u64), cfg.connections.min(buyers.max(1)));
    config.timeout = cfg.timeout;
    config.max_attempts = cfg.max_attempts;
    config.progress = cfg.progress;
    config.grace = None;
    let run = engine::run(target, &config, Buyers { setup, sale_id }, Some(start)).await?;
    let sale = call_json(&mut conn, &Request::get(format!("/flash-sales/{sale_id}")), "read the flash sale", &[200]).await?;
    let count = |row: usize| run.rows[row].count;
    let outcome = FlashOutcome {
        sale_id,
        product_id,
        units: cfg.units,
        buyers,
        won: count(WON),
        sold_out: count(SOLD_OUT),
        unknown: run.rows[PURCHASE].errors,
        remaining: sale["remaining"].as_i64().unwrap_or(-1),
    };
    Ok((outcome, run))
}

/// Every check of the sale: through the shop, and through the database when `db` is given.
pub fn checks(o: &FlashOutcome, db: Option<&DbView>) -> Vec<Check> {
    let units = i64::from(o.units);
    let expected = units.min(o.buyers as i64);
    let sold = units - o.remaining;
    let check = |check: &str, met: bool, detail: String| Check { check: check.to_owned(), met, detail };
    let mut out = vec![
        check("sold exactly min(units, buyers)", sold == expected, format!("{sold} sold of {units} to {} buyers (expected {expected})", o.buyers)),
        check("no oversell", o.remaining >= 0 && sold <= units, format!("remaining {}", o.remaining)),
        check("every win was a sale", o.won as i64 == sold, format!("{} buyers told they won, {sold} units sold", o.won)),
        check(
            "every buyer got a definitive answer",
            o.unknown == 0 && o.won + o.sold_out == o.buyers as u64,
            format!("{} won, {} sold out, {} unknown (after retries)", o.won, o.sold_out, o.unknown),
        ),
    ];
    if let Some(db) = db {
        out.push(check(
            "database: sold + remaining = initial",
            db.purchased_units + db.remaining == db.units && db.units == units,
            format!("{} purchased + {} remaining, {} released", db.purchased_units, db.remaining, db.units),
        ));
        out.push(check(
            "database: one order per winner",
            db.purchases == o.won as i64 && db.order_lines == o.won as i64 && db.ordered_units == db.purchased_units,
            format!("{} purchases, {} order lines ({} units), {} winners", db.purchases, db.order_lines, db.ordered_units, o.won),
        ));
        out.push(check("database: the shop's remaining", db.remaining == o.remaining, format!("database {}, shop {}", db.remaining, o.remaining)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_answers_are_classified() {
        assert_eq!(purchase_class(201, b"{}"), Class::OkAs(WON));
        assert_eq!(purchase_class(200, b"{}"), Class::OkAs(WON));
        assert_eq!(purchase_class(409, br#"{"error":"sold out"}"#), Class::OkAs(SOLD_OUT));
        assert_eq!(purchase_class(409, br#"{"error":"not started"}"#), Class::Retry);
        assert_eq!(purchase_class(503, b""), Class::Retry);
        assert_eq!(purchase_class(STATUS_TIMEOUT, b""), Class::Retry);
        assert_eq!(purchase_class(422, b""), Class::Fail);
    }
}
