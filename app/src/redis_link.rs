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
//!
//! Where Redis Sentinels watch Redis (level 4 and up), a failover moves the primary to
//! another address, and a connection manager would keep redialling the old one. So a
//! call that finds Redis gone, or read-only (the old primary back as a replica), also
//! asks the Sentinels where the primary is now ([`Follow`]) and, if it moved, swaps
//! the connection for one to the new primary. Requests meanwhile take their fallbacks
//! behind the open breaker, as for any Redis outage.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult};

/// The longest any one Redis call may take before it counts as failed.
pub const CALL_DEADLINE: Duration = Duration::from_millis(300);
/// How long after a failure requests skip Redis.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// A Redis connection with the key prefix of this deployment and a breaker.
#[derive(Clone)]
pub struct RedisLink {
    /// Replaced when the Sentinels report that the primary moved.
    conn: Arc<RwLock<ConnectionManager>>,
    prefix: Arc<str>,
    breaker: Arc<Breaker>,
    follow: Option<Arc<Follow>>,
}

/// How the shop connects to Redis: short timeouts, since every call has a deadline and a
/// fallback anyway.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(500))
        .set_response_timeout(Duration::from_millis(500))
        .set_number_of_retries(1)
        .set_max_delay(500)
}

impl RedisLink {
    pub fn new(conn: ConnectionManager, prefix: &str, follow: Option<Follow>) -> Self {
        RedisLink {
            conn: Arc::new(RwLock::new(conn)),
            prefix: prefix.into(),
            breaker: Arc::new(Breaker::new(COOL_DOWN)),
            follow: follow.map(Arc::new),
        }
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
        let conn = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone();
        let result = match tokio::time::timeout(CALL_DEADLINE, op(conn)).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((ErrorKind::IoError, "redis call timed out"))),
        };
        match &result {
            Err(e) if is_unavailable(e) || e.kind() == ErrorKind::ReadOnly => {
                self.breaker.failed();
                self.relocate();
            }
            _ => self.breaker.succeeded(),
        }
        result
    }

    /// Asks the Sentinels, in the background, where the primary is, and moves the
    /// connection there if it is not where this link points. One search at a time, at
    /// most one per [`Follow::PACE`].
    fn relocate(&self) {
        let Some(follow) = &self.follow else { return };
        if !follow.begin() {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let follow = link.follow.as_ref().expect("a link that relocates follows Sentinels");
            if let Some(primary) = follow.primary().await
                && follow.current() != primary
            {
                match follow.connect(&primary).await {
                    Ok(conn) => {
                        *link.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
                        tracing::warn!(primary = %primary, "the redis primary moved (sentinel failover); following it");
                    }
                    Err(error) => tracing::warn!(%error, primary = %primary, "the sentinels name a new redis primary that cannot be reached yet"),
                }
            }
            follow.end();
        });
    }
}

/// The Redis Sentinels that know where the primary is, and where this link points.
pub struct Follow {
    sentinels: Vec<String>,
    master: String,
    /// The primary's connection info: its password and database, and where it was.
    primary: Mutex<ConnectionInfo>,
    busy: AtomicBool,
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Follow {
    /// Not more often than this does a link ask the Sentinels.
    const PACE: Duration = Duration::from_millis(500);

    /// `sentinels` (`host:port`) watch the primary they know as `master`; `primary` is the
    /// connection info of the primary (its password serves the Sentinels too).
    pub fn new(sentinels: Vec<String>, master: String, primary: ConnectionInfo) -> Self {
        Follow { sentinels, master, primary: Mutex::new(primary), busy: AtomicBool::new(false), epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    /// Whether this caller may search now (none is searching and the last search is
    /// [`Follow::PACE`] old); [`Follow::end`] ends it.
    fn begin(&self) -> bool {
        // +1 so that a search in the first millisecond is not mistaken for "never".
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Acquire);
        if (last != 0 && now.saturating_sub(last) < Self::PACE.as_millis() as u64) || self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.last_ms.store(now, Ordering::Release);
        true
    }

    fn end(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// The `host:port` this link's connection goes to.
    pub fn current(&self) -> String {
        address(&self.primary.lock().unwrap_or_else(|e| e.into_inner()).addr)
    }

    /// The connection info of `primary` (`host:port`), with the password.
    fn info_at(&self, at: &str) -> Option<ConnectionInfo> {
        let (host, port) = at.rsplit_once(':')?;
        let mut info = self.primary.lock().unwrap_or_else(|e| e.into_inner()).clone();
        info.addr = ConnectionAddr::Tcp(host.to_string(), port.parse().ok()?);
        Some(info)
    }

    /// A connection to `primary` (`host:port`), which [`Follow::current`] names once it
    /// is made.
    pub async fn connect(&self, primary: &str) -> RedisResult<ConnectionManager> {
        let info = self.info_at(primary).ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "not host:port")))?;
        let conn = ConnectionManager::new_with_config(redis::Client::open(info.clone())?, manager_config()).await?;
        self.moved_to(info);
        Ok(conn)
    }

    /// Records that the connection now goes where `info` says.
    fn moved_to(&self, info: ConnectionInfo) {
        *self.primary.lock().unwrap_or_else(|e| e.into_inner()) = info;
    }

    /// Where the Sentinels say the primary is (`host:port`), all asked at once. Right
    /// after a failover only the Sentinel that led it may know: one that names another
    /// primary than this link's has seen a newer failover than the rest, so its answer
    /// wins (the most named such answer, if they differ); else the common one.
    pub async fn primary(&self) -> Option<String> {
        let asks = self.sentinels.iter().map(|sentinel| self.ask(sentinel));
        let answers: Vec<String> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        pick(&answers, &self.current())
    }

    async fn ask(&self, sentinel: &str) -> Option<String> {
        let mut info = self.info_at(sentinel)?;
        info.redis.db = 0;
        let ask = async {
            let mut conn = redis::Client::open(info)?.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master).query_async::<Option<(String, u16)>>(&mut conn).await
        };
        match tokio::time::timeout(SENTINEL_DEADLINE, ask).await {
            Ok(Ok(Some((host, port)))) => Some(format!("{host}:{port}")),
            Ok(Ok(None)) => {
                tracing::warn!(%sentinel, master = %self.master, "the sentinel knows no such redis primary");
                None
            }
            Ok(Err(error)) => {
                tracing::debug!(%sentinel, %error, "sentinel unavailable");
                None
            }
            Err(_) => {
                tracing::debug!(%sentinel, "sentinel did not answer in time");
                None
            }
        }
    }
}

/// The primary to follow among the Sentinels' `answers`, given the `current` one: the
/// most named answer other than `current` if there is one, else `current` if named.
fn pick(answers: &[String], current: &str) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for a in answers {
        *counts.entry(a.as_str()).or_default() += 1;
    }
    let moved = counts.iter().filter(|(a, _)| **a != current).max_by_key(|(_, n)| **n).map(|(a, _)| a.to_string());
    moved.or_else(|| counts.contains_key(current).then(|| current.to_string()))
}

/// The longest one Sentinel may take to say where the primary is.
const SENTINEL_DEADLINE: Duration = Duration::from_millis(500);

fn address(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
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
    fn one_search_for_the_primary_at_a_time_and_not_more_often_than_the_pace() {
        let info: ConnectionInfo = "redis://:secret@127.0.0.1:6379/".parse().unwrap();
        let f = Follow::new(vec!["127.0.0.2:26379".into()], "shop".into(), info);
        assert!(f.begin(), "the first failure searches");
        assert!(!f.begin(), "not while one searches");
        f.end();
        assert!(!f.begin(), "nor again within the pace");
        std::thread::sleep(Follow::PACE + Duration::from_millis(20));
        assert!(f.begin(), "after it, again");
        f.end();
        assert_eq!(f.current(), "127.0.0.1:6379");
        f.moved_to(f.info_at("127.0.0.3:6379").unwrap());
        assert_eq!(f.current(), "127.0.0.3:6379");
        let at = f.info_at("127.0.0.2:26379").unwrap();
        assert_eq!(at.redis.password.as_deref(), Some("secret"), "the Sentinels take the primary's password");
    }

    #[test]
    fn a_sentinel_that_saw_a_failover_is_believed_over_those_that_did_not_yet() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (old, new) = ("127.0.0.1:6379", "127.0.0.2:6379");
        assert_eq!(pick(&v(&[old, old, new]), old).as_deref(), Some(new), "the leader of the failover knows first");
        assert_eq!(pick(&v(&[old, old]), old).as_deref(), Some(old));
        assert_eq!(pick(&v(&[new]), old).as_deref(), Some(new));
        assert_eq!(pick(&[], old), None, "no Sentinel answered");
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
