//! Connections this process has just used cleanly, kept ready beside sqlx's pool.
//!
//! sqlx pings every connection returned to its pool (a Sync round trip, on a task it
//! spawns) before anyone may take it again. That is a band-aid for futures cancelled
//! mid-statement, and it cost two of the eleven round trips of an order. A connection
//! whose statement or transaction ran to its end is in a known state, so [`Conn`] keeps
//! it here instead, for the next request; only one whose work did not end (a
//! cancelled request, an I/O error, a transaction dropped without commit or rollback)
//! goes back through sqlx's pool and its ping.
//!
//! The semaphore holds as many permits as the pool has connections, so every holder of
//! a permit finds either a warm connection or room in sqlx's pool. A warm connection
//! idle for [`PING_IDLE_AFTER`] is handed back to sqlx instead of used, so one that sat
//! through a restart or failover is pinged first, as sqlx's own idle ones are.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Pool connections idle at least this long are pinged before use.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How long a request waits for a connection before it fails (as sqlx's pool would).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Warm {
    /// Off for a pool others also take from directly: connections kept here would be
    /// out of their reach, and they could wait for one forever.
    keep: bool,
    permits: Arc<Semaphore>,
    /// Most recently used last: handed out first, so the rest age out to sqlx.
    ready: Mutex<Vec<(Instant, PoolConnection<Postgres>)>>,
}

impl Warm {
    /// `size` is the pool's maximum; `keep` whether this process is the pool's only user.
    pub fn new(size: u32, keep: bool) -> Warm {
        Warm { keep, permits: Arc::new(Semaphore::new(size.max(1) as usize)), ready: Mutex::new(Vec::new()) }
    }

    /// Connections waiting here (idle, for the pool metrics).
    pub fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A connection for one statement or transaction: a warm one if there is a recent
    /// one, else one from `pool`.
    pub async fn acquire(self: &Arc<Self>, pool: &PgPool) -> Result<Conn, sqlx::Error> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = match self.take_recent() {
            Some(conn) => conn,
            None => pool.acquire().await?,
        };
        Ok(Conn { conn: Some(conn), clean: false, warm: self.clone(), _permit: permit })
    }

    /// The most recent warm connection, if it is recent enough; stale ones are dropped,
    /// which returns them to sqlx's pool (and its ping).
    fn take_recent(&self) -> Option<PoolConnection<Postgres>> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let (at, conn) = ready.pop()?;
        if at.elapsed() < PING_IDLE_AFTER {
            return Some(conn);
        }
        // This one and every older one have been idle too long.
        let stale: Vec<_> = std::mem::take(&mut *ready);
        drop(ready);
        drop(conn);
        drop(stale);
        None
    }
}

/// A connection checked out of [`Warm`]. Mark it [`Conn::set_clean`] when its work
/// ended; dropped clean it waits in [`Warm`] for the next request, otherwise it goes
/// back to sqlx's pool.
pub struct Conn {
    conn: Option<PoolConnection<Postgres>>,
    clean: bool,
    warm: Arc<Warm>,
    // Released after `drop` has put the connection back (fields drop after it).
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    pub fn set_clean(&mut self, clean: bool) {
        self.clean = clean;
    }
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
            && self.warm.keep
        {
            self.warm.ready.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), conn));
        }
    }
}

/// Whether a connection whose statement ended with `result` is in a known state: it
/// succeeded, or the server answered with an error (sqlx then still reads up to the
/// server's ReadyForQuery before the next statement).
pub fn ended<T>(result: &Result<T, sqlx::Error>) -> bool {
    matches!(result, Ok(_) | Err(sqlx::Error::Database(_)))
}
