//! How long acknowledged writes paused while `up` changed an environment that serves:
//! the promise of a move in place (level 3 to 4, say) is that the shop keeps taking
//! orders, and this is the number that says whether it did.
//!
//! It is read afterwards from the orders themselves (each carries the time its
//! transaction began), so it measures the users' traffic, whatever drives it, and adds
//! none: the longest gap between consecutive orders from the last one before `up` began
//! to the moment `up` finished. An environment that took no order in the minute before
//! `up` is not serving, and has no pause to report.

use std::time::{SystemTime, UNIX_EPOCH};

use scalectl_core::ops::DatabaseOps;
use serde::{Deserialize, Serialize};

/// How recent the last order before `up` must be for the environment to count as
/// serving.
const SERVING_WITHIN_S: f64 = 60.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WritePause {
    /// Orders acknowledged while `up` ran.
    pub orders: u64,
    /// The longest time without an acknowledged order, in seconds.
    pub longest_seconds: f64,
}

/// Seconds since the epoch, for the window's ends.
pub fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The longest pause between `from` and `to` (seconds since the epoch), or `None` when
/// the environment took no order in the minute before `from`; an error says why the
/// database could not tell.
pub fn measure(db: &dyn DatabaseOps, from: f64, to: f64) -> anyhow::Result<Option<WritePause>> {
    super::db_json(db, &sql(from, to), "the orders' timestamps")
}

/// One statement: the last order in the minute before the window, every order in it,
/// and the window's end, in time order; the largest difference between neighbours.
fn sql(from: f64, to: f64) -> String {
    format!(
        "WITH before AS (SELECT max(created_at) AS at FROM orders \
             WHERE created_at < to_timestamp({from}) AND created_at >= to_timestamp({from} - {SERVING_WITHIN_S})), \
           during AS (SELECT created_at AS at FROM orders WHERE created_at >= to_timestamp({from}) AND created_at <= to_timestamp({to})), \
           t AS (SELECT at FROM before UNION ALL SELECT at FROM during UNION ALL SELECT to_timestamp({to})) \
         SELECT CASE WHEN (SELECT at FROM before) IS NULL THEN 'null'::json ELSE json_build_object(\
           'orders', (SELECT count(*) FROM during), \
           'longest_seconds', round(extract(epoch FROM (SELECT max(gap) FROM (SELECT at - lag(at) OVER (ORDER BY at) AS gap FROM t) g))::numeric, 3)) END"
    )
}
