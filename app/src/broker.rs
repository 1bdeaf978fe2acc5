//! Order events through a message broker (level 5 and up): Redis Streams.
//!
//! Why Redis Streams, of the brokers the distribution offers (RabbitMQ 3.10, NATS 2.9
//! with JetStream, Redis 7.0): consumer groups give each event to one consumer, keep
//! what it has not acknowledged in a pending list, and let another consumer claim what
//! a dead one held (`XAUTOCLAIM`), which is at-least-once delivery; with an append-only
//! file synced on every write an acknowledged `XADD` survives the broker's crash. It is
//! the same `redis-server` the environment already runs and supervises, and the shop
//! already speaks its protocol, so no Erlang runtime (RabbitMQ) and no second client
//! library (NATS) join the stack. It runs as its own server, separate from the cache: a
//! cache evicts under memory pressure, a broker must not (a full broker refuses new
//! entries, and events wait in the outbox).
//!
//! PostgreSQL's outbox stays the truth, written in the order's own transaction:
//!
//! 1. **Relay** ([`relay_once`]): due events not yet sent are added to the stream of
//!    their priority and marked `relayed_at`, in one transaction per batch, in the order
//!    they fell due. A crash between the `XADD` and the commit sends an event twice;
//!    the consumers make that harmless.
//! 2. **Consumers** ([`consume`]), per priority, each priority with its own concurrency
//!    from the manifest, so a backlog of one priority's events never waits behind
//!    another's once relayed: read from the group, lock the named events that are still
//!    unprocessed, settle them as the outbox worker does ([`crate::outbox::settle`]:
//!    deliver once, or back off, or dead-letter after `max_attempts`), commit, then
//!    acknowledge and delete the entries. An event already processed (a duplicate) is
//!    only acknowledged; a retry clears `relayed_at`, so the relay sends it again when
//!    its backoff is over. Today's events (order notifications) are all of normal
//!    priority; the high and low pools are there for payment, stock, report and export
//!    topics.
//! 3. **Recovery**: a consumer starts by re-reading what it holds unacknowledged (it
//!    keeps its name across restarts), and every [`CLAIM_IDLE`] claims what any
//!    consumer has held longer than that (a worker that was killed and not restarted,
//!    or a batch that kept failing). A broker that lost its data is noticed by its
//!    missing epoch key, and every event relayed to it is sent again
//!    ([`redrive_if_lost`]).

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError};

use crate::db::Db;
use crate::outbox::{Claimed, DrainReport, WorkerConfig, settle};

/// The consumer group every worker joins, per stream.
pub const GROUP: &str = "workers";
/// How long an entry may stay unacknowledged by a consumer before another claims it.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// How often the relay checks that the broker still has its epoch ([`redrive_if_lost`]).
const EPOCH_EVERY: Duration = Duration::from_secs(15);
/// How long a consumer waits for an event's row lock (another consumer holding the same
/// event, a frozen worker) before it leaves the entries to be claimed later.
const LOCK_TIMEOUT: &str = "5s";
/// Failed batches a consumer retries at once, reading what it holds, before it reads new
/// entries and leaves the held ones to [`CLAIM_IDLE`].
const RETRIES_AT_ONCE: u32 = 3;
/// How long the relay waits before its next batch after one that found events but was
/// not full, instead of the poll interval.
const BUSY_RELAY_PAUSE: Duration = Duration::from_millis(50);
/// How long the relay, which holds its events' row locks meanwhile, waits for the broker.
const RELAY_WAIT: Duration = Duration::from_secs(2);
/// How long to wait before trying again after the broker or the database failed.
const PAUSE: Duration = Duration::from_millis(500);

/// Which worker pool handles an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Payment and stock follow-ups.
    High,
    /// Email, SMS and push notifications.
    Normal,
    /// Reports and bulk exports.
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority of an outbox topic, by its first word: `payment.*` and `stock.*`
    /// are high, `report.*` and `export.*` low, everything else (the order
    /// notifications) normal.
    pub fn of(topic: &str) -> Priority {
        match topic.split('.').next().unwrap_or_default() {
            "payment" | "stock" => Priority::High,
            "report" | "export" => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

/// Concurrency per priority, from `high=8,normal=4,low=1` (a priority left out gets
/// no consumers in this process).
pub fn parse_pools(text: &str) -> Result<Vec<(Priority, usize)>, String> {
    let mut pools = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part.split_once('=').ok_or_else(|| format!("`{part}`: expected PRIORITY=CONCURRENCY, such as normal=4"))?;
        let priority = Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == name.trim())
            .ok_or_else(|| format!("`{name}`: the priorities are high, normal and low"))?;
        let n: usize = n.trim().parse().map_err(|_| format!("`{part}`: the concurrency must be a whole number"))?;
        if pools.iter().any(|(p, _)| *p == priority) {
            return Err(format!("`{name}` is given twice"));
        }
        pools.push((priority, n));
    }
    Ok(pools)
}

/// Where one worker process finds the broker and what it consumes. Its `Debug` leaves
/// out the URL, which holds the password.
#[derive(Clone)]
pub struct BrokerConfig {
    pub url: String,
    /// Prepended to the stream names (`{prefix}events:normal`).
    pub prefix: String,
    /// This process's consumer name; its consumers are `{consumer}-{priority}-{n}`.
    /// Stable across restarts, so that a restarted worker finds what it held.
    pub consumer: String,
    pub pools: Vec<(Priority, usize)>,
}

impl BrokerConfig {
    pub fn stream(&self, priority: Priority) -> String {
        format!("{}events:{}", self.prefix, priority.as_str())
    }

    /// The key whose value names the broker's life: gone when the broker lost its data.
    pub fn epoch_key(&self) -> String {
        format!("{}broker-epoch", self.prefix)
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("prefix", &self.prefix)
            .field("consumer", &self.consumer)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: {0}")]
    Broker(#[from] RedisError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A connection whose replies may take `wait` (a consumer's blocking read) and no
/// longer: the relay holds row locks while it waits for the broker, so its `wait` is short.
pub async fn connect(client: &Client, wait: Duration) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Duration::from_secs(1)).set_response_timeout(wait);
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// The connection in `slot`, made first when there is none; `None` (after a pause) when
/// the broker cannot be reached, or refuses the consumer group `stream` when given.
async fn connected<'a>(
    slot: &'a mut Option<MultiplexedConnection>,
    client: &Client,
    wait: Duration,
    stream: Option<&str>,
) -> Option<&'a mut MultiplexedConnection> {
    if slot.is_none() {
        let made = match connect(client, wait).await {
            Ok(mut c) => match stream {
                Some(stream) => ensure_group(&mut c, stream).await.map(|()| c),
                None => Ok(c),
            },
            Err(e) => Err(e),
        };
        match made {
            Ok(c) => *slot = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable; events wait in the outbox");
                tokio::time::sleep(PAUSE).await;
                return None;
            }
        }
    }
    slot.as_mut()
}

/// Creates `stream` and its consumer group unless they exist (a new or emptied broker).
pub async fn ensure_group(conn: &mut MultiplexedConnection, stream: &str) -> Result<(), RedisError> {
    let created: Result<(), RedisError> = redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(GROUP).arg("0").arg("MKSTREAM").query_async(conn).await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Sends one batch of due, unsent events to their streams. Returns how many.
pub async fn relay_once(db: &Db, conn: &mut MultiplexedConnection, config: &BrokerConfig, batch: i64) -> Result<usize, BrokerError> {
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, topic FROM outbox
         WHERE processed_at IS NULL AND relayed_at IS NULL AND next_attempt_at <= now()
         ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .fetch_all(&mut tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (id, topic) in &rows {
        pipe.cmd("XADD").arg(config.stream(Priority::of(topic))).arg("*").arg("id").arg(id).arg("topic").arg(topic).ignore();
    }
    pipe.query_async::<()>(conn).await?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    sqlx::query("UPDATE outbox SET relayed_at = now() WHERE id = ANY($1)").bind(&ids).execute(&mut tx).await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Sends again what a broker that lost its data (restarted without its append-only
/// file, replaced, flushed) no longer holds. The broker keeps an epoch key, set by the
/// first relay that finds it missing; whoever sets it clears `relayed_at` of every
/// unprocessed event relayed before, so that the relay sends them again (to a broker
/// that never lost anything, a first start, that is nothing). Only the one relay whose
/// `SET NX` won does this. Returns how many.
pub async fn redrive_if_lost(db: &Db, conn: &mut MultiplexedConnection, config: &BrokerConfig) -> Result<u64, BrokerError> {
    let epoch =
        format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let set: Option<String> = redis::cmd("SET").arg(config.epoch_key()).arg(&epoch).arg("NX").query_async(conn).await?;
    if set.is_none() {
        return Ok(0);
    }
    let cleared = async {
        let mut tx = db.begin().await?;
        let lost = sqlx::query("UPDATE outbox SET relayed_at = NULL WHERE processed_at IS NULL AND relayed_at IS NOT NULL")
            .execute(&mut tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok::<u64, sqlx::Error>(lost)
    }
    .await;
    if cleared.is_err() {
        // Not sent again yet: the epoch goes, so that the next check (this relay's or
        // another's) tries again rather than finding the broker's life unbroken.
        let _: Result<(), RedisError> = redis::cmd("DEL").arg(config.epoch_key()).query_async(conn).await;
    }
    Ok(cleared?)
}

/// Settles the events `entries` name, then acknowledges and deletes the entries. An
/// entry naming no event that waits for the broker (processed already, or waiting for
/// its retry) is acknowledged without work.
async fn settle_entries(
    db: &Db,
    conn: &mut MultiplexedConnection,
    stream: &str,
    entries: &[StreamId],
    worker: &WorkerConfig,
) -> Result<DrainReport, BrokerError> {
    if entries.is_empty() {
        return Ok(DrainReport::default());
    }
    let ids: Vec<i64> = entries.iter().filter_map(|e| e.get::<i64>("id")).collect();
    let mut tx = db.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut tx).await?;
    // The relay adds an entry before it commits `relayed_at`, with the row locked. So
    // the lock is taken on every unprocessed event named, which waits for the relay's
    // commit and then reads the row as committed; only then is `relayed_at` looked at.
    // (In the WHERE clause it would be judged on the row as it was before the relay's
    // commit, and an event read that early would be acknowledged and never handled.)
    let rows: Vec<(i64, String, serde_json::Value, i32, bool)> = sqlx::query_as(
        "SELECT id, topic, payload, attempts, relayed_at IS NOT NULL FROM outbox
         WHERE id = ANY($1) AND processed_at IS NULL
         ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut tx)
    .await?;
    let due: Vec<Claimed> = rows.into_iter().filter(|r| r.4).map(|(id, topic, payload, attempts, _)| (id, topic, payload, attempts)).collect();
    let report = settle(&mut tx, due, worker).await?;
    tx.commit().await?;
    let entry_ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    // Together: an entry acknowledged but left in the stream would stay there for good.
    redis::pipe()
        .atomic()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&entry_ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&entry_ids)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(report)
}

/// Where a consumer reads next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// What this consumer holds unacknowledged (after a restart or a failed batch).
    Held,
    /// New entries, waiting up to [`BLOCK`] for some.
    New,
}

/// One read by `consumer` on `stream` and the settling of what it returned. Returns how
/// many entries it read and what became of their events.
pub async fn consume_once(
    db: &Db,
    conn: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
    read: Read,
    worker: &WorkerConfig,
) -> Result<(usize, DrainReport), BrokerError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(worker.batch_size.max(1));
    if read == Read::New {
        cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream).arg(if read == Read::New { ">" } else { "0" });
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
    let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
    let report = settle_entries(db, conn, stream, &entries, worker).await?;
    Ok((entries.len(), report))
}

/// Claims for `consumer` the entries of `stream` that any consumer (itself included)
/// has held longer than `idle`, scanning the pending list from `from` (`0-0` at first),
/// and settles them. Returns how many, what became of them, and where the scan goes on
/// (`0-0` once the whole list was scanned).
pub async fn claim_stale(
    db: &Db,
    conn: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
    from: &str,
    idle: Duration,
    worker: &WorkerConfig,
) -> Result<(usize, DrainReport, String), BrokerError> {
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(GROUP)
        .arg(consumer)
        .arg(idle.as_millis() as u64)
        .arg(from)
        .arg("COUNT")
        .arg(worker.batch_size.max(1))
        .query_async(conn)
        .await?;
    let report = settle_entries(db, conn, stream, &reply.claimed, worker).await?;
    Ok((reply.claimed.len(), report, reply.next_stream_id))
}

/// One consumer, until the task is dropped: what it held first, then new entries, and
/// every [`CLAIM_IDLE`] what any consumer held too long. A batch that fails (the
/// database failing over, a lock held past [`LOCK_TIMEOUT`]) is retried a few times at
/// once; then the consumer goes on with new entries and leaves the held ones to a claim.
pub async fn consume(db: Db, client: Client, stream: String, consumer: String, worker: WorkerConfig) {
    let mut conn = None;
    let mut read = Read::Held;
    let mut failures = 0u32;
    let mut last_claim = Instant::now();
    // Where a claim's scan of the pending list goes on; `None` between scans.
    let mut cursor: Option<String> = None;
    loop {
        let Some(c) = connected(&mut conn, &client, BLOCK + Duration::from_secs(3), Some(&stream)).await else { continue };
        if cursor.is_none() && last_claim.elapsed() >= CLAIM_IDLE {
            cursor = Some("0-0".into());
            last_claim = Instant::now();
        }
        let result = match cursor.take() {
            Some(from) => claim_stale(&db, c, &stream, &consumer, &from, CLAIM_IDLE, &worker).await.map(|(n, report, next)| {
                cursor = (next != "0-0").then_some(next);
                (n, report)
            }),
            None => consume_once(&db, c, &stream, &consumer, read, &worker).await,
        };
        match result {
            Ok((n, report)) => {
                failures = 0;
                if report != DrainReport::default() {
                    tracing::info!(stream, delivered = report.delivered, retried = report.retried, dead = report.dead, "broker batch");
                }
                // Held entries are read until none are left.
                if n == 0 {
                    read = Read::New;
                }
            }
            Err(e) => {
                failures += 1;
                read = if failures <= RETRIES_AT_ONCE { Read::Held } else { Read::New };
                tracing::warn!(error = %e, stream, consumer, failures, "broker batch failed");
                if matches!(e, BrokerError::Broker(_)) {
                    conn = None;
                }
                tokio::time::sleep(PAUSE * failures.min(10)).await;
            }
        }
    }
}

/// Relays due events to the broker until the task is dropped; first, and every
/// [`EPOCH_EVERY`], it checks that the broker did not lose what it was sent.
pub async fn relay(db: Db, client: Client, config: BrokerConfig, worker: WorkerConfig) {
    let mut conn = None;
    let mut checked: Option<Instant> = None;
    loop {
        let Some(c) = connected(&mut conn, &client, RELAY_WAIT, None).await else { continue };
        if checked.is_none_or(|t| t.elapsed() >= EPOCH_EVERY) {
            match redrive_if_lost(&db, c, &config).await {
                Ok(n) => {
                    checked = Some(Instant::now());
                    if n > 0 {
                        tracing::warn!(events = n, "the broker lost its data; the events relayed to it are sent again");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checking the broker's epoch failed");
                    if matches!(e, BrokerError::Broker(_)) {
                        conn = None;
                    }
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            }
        }
        match relay_once(&db, c, &config, worker.batch_size.max(1)).await {
            // A full batch: more are due now. Some: orders are coming in, look again
            // soon (a poll interval here was most of an event's wait at level 5,
            // BENCHMARKS.md). None: the poll interval.
            Ok(n) if n as i64 >= worker.batch_size => {}
            Ok(0) => tokio::time::sleep(worker.poll_interval).await,
            Ok(_) => tokio::time::sleep(BUSY_RELAY_PAUSE.min(worker.poll_interval)).await,
            Err(e) => {
                tracing::warn!(error = %e, "relay failed; events wait in the outbox");
                if matches!(e, BrokerError::Broker(_)) {
                    conn = None;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// Runs the relay and every consumer of `config.pools` until `shutdown` resolves.
/// Stopped mid-batch, a consumer's transaction rolls back and its entries stay
/// unacknowledged, to be read again when it restarts.
pub async fn run(db: Db, worker: WorkerConfig, config: BrokerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), RedisError> {
    let client = Client::open(config.url.as_str())?;
    for p in Priority::ALL.into_iter().filter(|p| !config.pools.iter().any(|(q, n)| q == p && *n > 0)) {
        tracing::warn!(priority = p.as_str(), "no consumer of this priority in this worker; its events wait for another worker");
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(relay(db.clone(), client.clone(), config.clone(), worker.clone()));
    for (priority, concurrency) in &config.pools {
        for n in 1..=*concurrency {
            let consumer = format!("{}-{}-{n}", config.consumer, priority.as_str());
            tasks.spawn(consume(db.clone(), client.clone(), config.stream(*priority), consumer, worker.clone()));
        }
    }
    shutdown.await;
    tasks.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_go_to_their_priority() {
        assert_eq!(Priority::of("order.placed"), Priority::Normal);
        assert_eq!(Priority::of("payment.capture"), Priority::High);
        assert_eq!(Priority::of("stock.restock"), Priority::High);
        assert_eq!(Priority::of("report.daily"), Priority::Low);
        assert_eq!(Priority::of(""), Priority::Normal);
    }

    #[test]
    fn pools_parse_and_refuse_with_a_reason() {
        assert_eq!(parse_pools("high=8, normal=4,low=1").unwrap(), vec![(Priority::High, 8), (Priority::Normal, 4), (Priority::Low, 1)]);
        assert_eq!(parse_pools("").unwrap(), vec![]);
        assert!(parse_pools("urgent=2").unwrap_err().contains("high, normal and low"));
        assert!(parse_pools("high").unwrap_err().contains("PRIORITY=CONCURRENCY"));
        assert!(parse_pools("high=x").unwrap_err().contains("whole number"));
        assert!(parse_pools("high=1,high=2").unwrap_err().contains("twice"));
    }
}
