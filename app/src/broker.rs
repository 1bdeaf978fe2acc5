//! Order events through a message broker (level 5 and up): Redis Streams.
//!
//! Why Redis Streams, of the brokers the distribution offers (RabbitMQ 3.10, NATS 2.9
//! with JetStream, Redis 7.0): consumer groups give each event to one consumer, keep
//! what it has not acknowledged in a pending list with a delivery count, and let another
//! consumer claim what a dead one held (`XAUTOCLAIM`), which is at-least-once delivery;
//! with an append-only file synced on every write an acknowledged `XADD` survives the
//! broker's crash. It is the same `redis-server` the environment already runs, supervises
//! and scrapes, and the shop already speaks its protocol, so no Erlang runtime (RabbitMQ)
//! and no second client library (NATS) join the stack. It runs as its own server,
//! separate from the cache: a cache evicts under memory pressure, a broker must not.
//!
//! PostgreSQL's outbox stays the truth, written in the order's own transaction:
//!
//! 1. **Relay** ([`relay_once`]): due events not yet sent are added to the stream of
//!    their priority and marked `relayed_at`, in one transaction per batch. A crash
//!    between the `XADD` and the commit sends an event twice; the consumers make that
//!    harmless.
//! 2. **Consumers** ([`consume`]), per priority, each with its own concurrency from the
//!    manifest, so that a flood of notifications never delays payment follow-ups: read
//!    from the group, lock the named events that are still unprocessed, settle them as
//!    the outbox worker does ([`crate::outbox::settle`]: deliver once, or back off, or
//!    dead-letter after `max_attempts`), commit, then acknowledge and delete the
//!    entries. An event already processed (a duplicate) is only acknowledged; a retry
//!    clears `relayed_at`, so the relay sends it again when its backoff is over.
//! 3. **Recovery**: a consumer starts by re-reading what it holds unacknowledged (it
//!    keeps its name across restarts), and every [`CLAIM_IDLE`] claims what other
//!    consumers have held longer than that (a worker that was killed and not restarted).

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
/// How long an event may have been relayed, unprocessed, while the broker holds
/// nothing, before it counts as lost and is sent again ([`redrive_lost`]).
pub const LOST_AFTER: Duration = Duration::from_secs(30);
/// How often the relay looks for lost events.
const REDRIVE_EVERY: Duration = Duration::from_secs(15);
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

/// Where one worker process finds the broker and what it consumes.
#[derive(Clone, Debug)]
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
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker: {0}")]
    Broker(#[from] RedisError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A connection whose reads may block for [`BLOCK`] without timing out.
pub async fn connect(client: &Client) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Duration::from_secs(1)).set_response_timeout(BLOCK + Duration::from_secs(3));
    client.get_multiplexed_async_connection_with_config(&config).await
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

/// Sends again what the broker should hold but does not: when every stream is empty
/// (nothing waits there and nothing is being handled, since entries are deleted only
/// once settled), an unprocessed event relayed more than [`LOST_AFTER`] ago was lost on
/// the way, by a broker that lost its data, say. Its `relayed_at` is cleared so that the
/// relay sends it again. Returns how many.
pub async fn redrive_lost(db: &Db, conn: &mut MultiplexedConnection, config: &BrokerConfig) -> Result<u64, BrokerError> {
    let mut pipe = redis::pipe();
    for p in Priority::ALL {
        pipe.cmd("XLEN").arg(config.stream(p));
    }
    let lengths: Vec<u64> = pipe.query_async(conn).await?;
    if lengths.iter().any(|n| *n > 0) {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let lost = sqlx::query(
        "UPDATE outbox SET relayed_at = NULL
         WHERE processed_at IS NULL AND relayed_at < now() - make_interval(secs => $1)",
    )
    .bind(LOST_AFTER.as_secs_f64())
    .execute(&mut tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(lost)
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
    redis::pipe()
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
    /// What this consumer holds unacknowledged (after a restart or an error).
    Held,
    /// New entries, waiting up to [`BLOCK`] for some.
    New,
    /// Entries other consumers have held longer than [`CLAIM_IDLE`].
    Stale,
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
    let count = worker.batch_size.max(1);
    let entries: Vec<StreamId> = match read {
        Read::Stale => {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(CLAIM_IDLE.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(count)
                .query_async(conn)
                .await?;
            reply.claimed
        }
        Read::Held | Read::New => {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(count);
            if read == Read::New {
                cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(stream).arg(if read == Read::New { ">" } else { "0" });
            let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
            reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect()
        }
    };
    let report = settle_entries(db, conn, stream, &entries, worker).await?;
    Ok((entries.len(), report))
}

/// One consumer, until the task is dropped: what it held first, then new entries, and
/// every [`CLAIM_IDLE`] what others held too long.
pub async fn consume(db: Db, client: Client, stream: String, consumer: String, worker: WorkerConfig) {
    let mut conn = None;
    let mut read = Read::Held;
    let mut last_claim = Instant::now();
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&client).await {
                Ok(mut c) => match ensure_group(&mut c, &stream).await {
                    Ok(()) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, stream, "broker refused the consumer group");
                        tokio::time::sleep(PAUSE).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "broker unreachable");
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            },
        };
        if read == Read::New && last_claim.elapsed() >= CLAIM_IDLE {
            read = Read::Stale;
            last_claim = Instant::now();
        }
        match consume_once(&db, c, &stream, &consumer, read, &worker).await {
            Ok((n, report)) => {
                if report != DrainReport::default() {
                    tracing::info!(stream, delivered = report.delivered, retried = report.retried, dead = report.dead, "broker batch");
                }
                // Held and stale entries are read until none are left.
                if n == 0 || read == Read::New {
                    read = Read::New;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, stream, consumer, "broker batch failed; reading held entries again");
                if matches!(e, BrokerError::Broker(_)) {
                    conn = None;
                }
                read = Read::Held;
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// Relays due events to the broker until the task is dropped, and every
/// [`REDRIVE_EVERY`] sends again what was lost on the way.
pub async fn relay(db: Db, client: Client, config: BrokerConfig, worker: WorkerConfig) {
    let mut conn = None;
    let mut last_redrive = Instant::now();
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&client).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "broker unreachable; events wait in the outbox");
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            },
        };
        if last_redrive.elapsed() >= REDRIVE_EVERY {
            last_redrive = Instant::now();
            match redrive_lost(&db, c, &config).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(events = n, "events relayed but no longer in the broker are sent again"),
                Err(e) => tracing::warn!(error = %e, "looking for events lost on the way to the broker failed"),
            }
        }
        match relay_once(&db, c, &config, worker.batch_size.max(1)).await {
            Ok(n) if n as i64 >= worker.batch_size => {}
            Ok(_) => tokio::time::sleep(worker.poll_interval).await,
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
