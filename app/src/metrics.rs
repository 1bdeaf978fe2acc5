//! A small hand-rolled Prometheus registry: atomics for counters, a fixed-bucket
//! histogram per route. The hot path takes a read lock and bumps atomics; the
//! route label is always the matched template (`/products/{id}`), never the raw path.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::db::Db;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct RouteStats {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// (method, status) -> count. Few distinct pairs per route, so a short Vec is
    /// cheaper than another map; it is read-locked on the hot path (a new pair takes the
    /// write lock once), so concurrent requests do not contend on a mutex.
    by_status: RwLock<Vec<(String, u16, AtomicU64)>>,
}

#[derive(Default)]
pub struct Metrics {
    routes: RwLock<HashMap<Box<str>, Arc<RouteStats>>>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub sold_out_rejections: AtomicU64,
    /// Flash-sale batch transactions committed, and the purchases they made (see
    /// `flash_batch.rs`): their ratio is the mean batch size.
    pub flash_batches: AtomicU64,
    pub flash_batched_purchases: AtomicU64,
    /// Users' reads sent to the primary because Redis could not say whether they
    /// wrote recently (read-your-writes fails safe).
    pub ryw_fallbacks: AtomicU64,
    /// Writes whose read-your-writes mark could not be recorded in Redis.
    pub ryw_mark_failures: AtomicU64,
}

/// One database pool at scrape time.
pub struct PoolStats {
    pub name: &'static str,
    pub size: u32,
    pub idle: usize,
    /// Statements run through the pool since start (a counter).
    pub statements: u64,
}

impl PoolStats {
    pub fn of(name: &'static str, db: &Db) -> Self {
        PoolStats { name, size: db.pool().size(), idle: db.idle(), statements: db.statements() }
    }
}

/// Values sampled at scrape time rather than counted here.
pub struct Gauges {
    pub pools: Vec<PoolStats>,
    /// None when the database did not answer in time.
    pub outbox: Option<OutboxGauges>,
    /// With Redis configured: whether it is connected and its breaker closed.
    pub redis_up: Option<bool>,
}

/// The outbox as a whole, the same from every instance (alert rules take the max).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxGauges {
    /// Events neither delivered nor dead.
    pub backlog: i64,
    /// Age of the oldest of them; 0 when there is none.
    pub oldest_pending_seconds: f64,
    /// Events in the dead-letter table, waiting for an operator.
    pub dead_letters: i64,
    /// Those of them that died in the last 15 minutes (a replayed event that dies again
    /// counts anew, though the table's size is what it was).
    pub dead_letters_recent: i64,
}

impl OutboxGauges {
    /// One statement: the pending events (their partial indexes; the oldest is the
    /// smallest pending id) and the dead letters.
    pub const SQL: &'static str = "SELECT count(*), \
         coalesce(extract(epoch FROM now() - (SELECT created_at FROM outbox \
           WHERE id = (SELECT min(id) FROM outbox WHERE processed_at IS NULL))), 0)::float8, \
         (SELECT count(*) FROM dead_letters), \
         (SELECT count(*) FROM dead_letters WHERE created_at > now() - interval '15 minutes') \
         FROM outbox WHERE processed_at IS NULL";
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let stats = {
            let read = self.routes.read().unwrap_or_else(|e| e.into_inner());
            read.get(route).cloned()
        };
        let stats = match stats {
            Some(s) => s,
            None => {
                let mut write = self.routes.write().unwrap_or_else(|e| e.into_inner());
                write.entry(route.into()).or_default().clone()
            }
        };
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                stats.buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let counted = stats
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(m, s, _)| m == method && *s == status)
            .map(|(_, _, n)| n.fetch_add(1, Ordering::Relaxed))
            .is_some();
        if !counted {
            let mut by_status = stats.by_status.write().unwrap_or_else(|e| e.into_inner());
            match by_status.iter().find(|(m, s, _)| m == method && *s == status) {
                Some((_, _, n)) => {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                None => by_status.push((method.to_owned(), status, AtomicU64::new(1))),
            }
        }
    }

    pub fn incr_cache(&self, hit: bool) {
        let c = if hit { &self.cache_hits } else { &self.cache_misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let routes: Vec<(Box<str>, Arc<RouteStats>)> = {
            let read = self.routes.read().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = read.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        out.push_str("# HELP shop_http_requests_total HTTP requests by route template, method and status.\n");
        out.push_str("# TYPE shop_http_requests_total counter\n");
        for (route, stats) in &routes {
            let by_status: Vec<(String, u16, u64)> = stats
                .by_status
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(m, s, n)| (m.clone(), *s, n.load(Ordering::Relaxed)))
                .collect();
            for (method, status, n) in by_status {
                let _ = writeln!(
                    out,
                    "shop_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                    escape(route),
                    escape(&method),
                    status,
                    n
                );
            }
        }
        out.push_str("# HELP shop_http_request_duration_seconds HTTP request latency by route template.\n");
        out.push_str("# TYPE shop_http_request_duration_seconds histogram\n");
        for (route, stats) in &routes {
            let route = escape(route);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += stats.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "shop_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}");
            }
            let count = stats.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "shop_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let sum = stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "shop_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(out, "shop_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
        }
        out.push_str("# HELP shop_db_pool_connections Database pool connections by state.\n");
        out.push_str("# TYPE shop_db_pool_connections gauge\n");
        for PoolStats { name: pool, size, idle, .. } in &gauges.pools {
            let used = (*size as usize).saturating_sub(*idle);
            let _ = writeln!(out, "shop_db_pool_connections{{pool=\"{pool}\",state=\"idle\"}} {idle}");
            let _ = writeln!(out, "shop_db_pool_connections{{pool=\"{pool}\",state=\"used\"}} {used}");
        }
        out.push_str("# HELP shop_db_queries_total Statements run per database pool (replica: catalog and order-history reads).\n");
        out.push_str("# TYPE shop_db_queries_total counter\n");
        for p in &gauges.pools {
            let _ = writeln!(out, "shop_db_queries_total{{pool=\"{}\"}} {}", p.name, p.statements);
        }
        for (name, help, value) in [
            ("shop_cache_hits_total", "Product cache hits.", &self.cache_hits),
            ("shop_cache_misses_total", "Product cache misses.", &self.cache_misses),
            ("shop_sold_out_rejections_total", "Flash-sale purchases rejected as sold out.", &self.sold_out_rejections),
            ("shop_flash_batches_total", "Flash-sale batch transactions committed.", &self.flash_batches),
            ("shop_flash_batched_purchases_total", "Flash-sale purchases made in batch transactions.", &self.flash_batched_purchases),
            (
                "shop_read_your_writes_fallbacks_total",
                "Reads sent to the primary because Redis could not tell whether the user wrote recently.",
                &self.ryw_fallbacks,
            ),
            (
                "shop_read_your_writes_mark_failures_total",
                "Writes whose read-your-writes mark could not be recorded in Redis.",
                &self.ryw_mark_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        if let Some(o) = gauges.outbox {
            for (name, help, value) in [
                ("shop_outbox_backlog", "Unprocessed outbox events.", o.backlog as f64),
                ("shop_outbox_oldest_pending_seconds", "Age of the oldest unprocessed outbox event (0 when none).", o.oldest_pending_seconds),
                ("shop_outbox_dead_letters", "Outbox events that failed every attempt, waiting in dead_letters.", o.dead_letters as f64),
                ("shop_outbox_dead_letters_recent", "Outbox events that failed every attempt in the last 15 minutes.", o.dead_letters_recent as f64),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        }
        if let Some(up) = gauges.redis_up {
            let _ = writeln!(
                out,
                "# HELP shop_redis_up 1 while Redis is used; 0 while it is unreachable and the shop runs on its fallbacks.\n# TYPE shop_redis_up gauge\nshop_redis_up {}",
                u8::from(up)
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.observe("/products/{id}", "GET", 200, Duration::from_millis(3));
        m.observe("/products/{id}", "GET", 200, Duration::from_millis(30));
        m.observe("/products/{id}", "GET", 404, Duration::from_secs(10));
        let text = m.render(&Gauges {
            pools: vec![PoolStats { name: "primary", size: 3, idle: 1, statements: 42 }],
            outbox: Some(OutboxGauges { backlog: 7, oldest_pending_seconds: 2.5, dead_letters: 1, dead_letters_recent: 1 }),
            redis_up: Some(false),
        });
        assert!(text.contains("shop_http_requests_total{route=\"/products/{id}\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("shop_http_request_duration_seconds_bucket{route=\"/products/{id}\",le=\"0.005\"} 1"));
        assert!(text.contains("shop_http_request_duration_seconds_bucket{route=\"/products/{id}\",le=\"5\"} 2"));
        assert!(text.contains("shop_http_request_duration_seconds_bucket{route=\"/products/{id}\",le=\"+Inf\"} 3"));
        assert!(text.contains("shop_db_pool_connections{pool=\"primary\",state=\"used\"} 2"));
        assert!(text.contains("shop_db_queries_total{pool=\"primary\"} 42"));
        assert!(text.contains("shop_outbox_backlog 7\n"), "{text}");
        assert!(text.contains("shop_outbox_oldest_pending_seconds 2.5\n") && text.contains("shop_outbox_dead_letters 1\n"), "{text}");
        assert!(text.contains("shop_outbox_dead_letters_recent 1\n"), "{text}");
        assert!(text.contains("shop_redis_up 0"));
    }
}
