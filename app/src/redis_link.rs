//! The shop's link to Redis, with a circuit breaker.
//!
//! Redis is optional by design: every use has a PostgreSQL or in-process fallback. What
//! must not happen is that a dead Redis makes every request wait for it. A call to a
//! killed Redis is not refused at once: the connection manager first tries to reconnect,
//! and each call took about 1.5 s in the `redis-loss` chaos experiment, so a checkout
//! (three Redis calls) took 4.5 s for as long as Redis was down. Hence:
//!
//! - every call has a hard deadline ([`CALL_DEADLINE`]);
//! - a failed call opens the breaker: for [`COOL_DOWN`] [`RedisLink::available`] says
//!   no and callers take their fallback without asking Redis;
//! - after the cool-down one caller at a time is let through to try again (one per
//!   cool-down, so a caller that is cancelled mid-try cannot keep the breaker stuck);
//!   its success closes the breaker.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RedisResult};

/// The longest any one Redis call may take before it counts as failed.
pub const CALL_DEADLINE: Duration = Duration::from_millis(300);
/// How long after a failure requests skip Redis.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// A Redis connection with the key prefix of this deployment and a breaker.
#[derive(Clone)]
pub struct RedisLink {
    conn: ConnectionManager,
    prefix: Arc<str>,
    breaker: Arc<Breaker>,
}

impl RedisLink {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RedisLink { conn, prefix: prefix.into(), breaker: Arc::new(Breaker::new(COOL_DOWN)) }
    }

    pub fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, parts)
    }

    /// Whether to use Redis now: false while the breaker is open.
    pub fn available(&self) -> bool {
        self.breaker.admit()
    }

    /// Whether the breaker is open (for the `shop_redis_available` gauge).
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Runs one Redis operation within [`CALL_DEADLINE`] and feeds its result to the
    /// breaker. Replies that are errors of the command itself (a script error, a wrong
    /// type) say Redis is up, so only I/O failures and timeouts open the breaker.
    pub async fn call<T, F>(&self, op: impl FnOnce(ConnectionManager) -> F) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let result = match tokio::time::timeout(CALL_DEADLINE, op(self.conn.clone())).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((ErrorKind::IoError, "redis call timed out"))),
        };
        match &result {
            Err(e) if is_unavailable(e) => self.breaker.failed(),
            _ => self.breaker.succeeded(),
        }
        result
    }
}

fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::BusyLoadingError
}

/// Open for [`COOL_DOWN`] after a failure, then half-open: one caller per cool-down
/// tries, and a success closes it. Lock-free; time is kept as milliseconds since the
/// breaker was made (0 means closed).
struct Breaker {
    epoch: Instant,
    cool_down_ms: u64,
    /// When the last failure (or the last half-open try) happened, or 0 when closed.
    opened_at_ms: AtomicU64,
}

impl Breaker {
    fn new(cool_down: Duration) -> Self {
        Breaker { epoch: Instant::now(), cool_down_ms: cool_down.as_millis() as u64, opened_at_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that a failure in the first millisecond is not mistaken for "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn admit(&self) -> bool {
        let opened = self.opened_at_ms.load(Ordering::Acquire);
        if opened == 0 {
            return true;
        }
        let now = self.now_ms();
        if now.saturating_sub(opened) < self.cool_down_ms {
            return false;
        }
        // Half-open: whoever moves the mark forward is the one caller that tries.
        self.opened_at_ms.compare_exchange(opened, now, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn failed(&self) {
        self.opened_at_ms.store(self.now_ms(), Ordering::Release);
    }

    fn succeeded(&self) {
        self.opened_at_ms.store(0, Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.opened_at_ms.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_callers_off_for_the_cool_down_then_lets_one_try() {
        let b = Breaker::new(Duration::from_millis(50));
        assert!(b.admit(), "closed: everyone passes");
        b.failed();
        assert!(!b.admit(), "open right after a failure");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit(), "half-open: one caller tries");
        assert!(!b.admit(), "and only one");
        b.failed();
        assert!(!b.admit(), "the try failed: open again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit());
        b.succeeded();
        assert!(b.admit() && b.admit(), "a success closes it for everyone");
    }

    #[test]
    fn a_try_that_never_reports_does_not_keep_it_open_forever() {
        let b = Breaker::new(Duration::from_millis(30));
        b.failed();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "this caller is cancelled and never reports");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "a later caller gets its turn");
    }
}
