//! The outbox worker: claims pending events with `FOR UPDATE SKIP LOCKED` (so several
//! workers can run), delivers them (simulated email, recorded in `notifications`) and
//! marks them processed in the same transaction; failures back off and, after
//! `max_attempts`, move to `dead_letters`.

use std::time::Duration;

use serde::Deserialize;

use crate::db::Db;
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub batch_size: i64,
    pub max_attempts: i32,
    /// First retry delay; doubles with every attempt, capped at `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_size: 100,
            max_attempts: 5,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("outbox batch failed")]
    Batch(#[from] sqlx::Error),
}

/// What an `order.*` event must carry to become a notification.
#[derive(Deserialize)]
struct OrderEvent {
    order_id: i64,
    email: String,
    total_cents: i64,
}

/// The simulated email/SMS gateway: renders the message or says why it cannot.
fn render(topic: &str, payload: &serde_json::Value) -> Result<(String, String, String), String> {
    let event: OrderEvent = serde_json::from_value(payload.clone()).map_err(|e| format!("bad payload: {e}"))?;
    if !event.email.contains('@') {
        return Err(format!("undeliverable address `{}`", event.email));
    }
    let body = match topic {
        "order.placed" => format!("Order {} confirmed: {} cents charged.", event.order_id, event.total_cents),
        "order.refunded" => format!("Order {}: {} cents refunded.", event.order_id, event.total_cents),
        other => return Err(format!("unknown topic `{other}`")),
    };
    Ok(("email".to_owned(), event.email, body))
}

/// Processes one batch of due events in one transaction. Returns what happened; an
/// empty report means nothing was due.
pub async fn drain_once(db: &Db, config: &WorkerConfig) -> Result<DrainReport, WorkerError> {
    let mut tx = db.begin().await?;
    let rows: Vec<Claimed> = sqlx::query_as(
        "SELECT id, topic, payload, attempts FROM outbox
         WHERE processed_at IS NULL AND next_attempt_at <= now()
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(config.batch_size)
    .fetch_all(&mut tx)
    .await?;
    let report = settle(&mut tx, rows, config).await?;
    tx.commit().await?;
    Ok(report)
}

/// An event a transaction holds locked: id, topic, payload, attempts so far.
pub type Claimed = (i64, String, serde_json::Value, i32);

/// Delivers, retries or dead-letters each of `rows` (locked by `tx`), whichever way
/// they were claimed: by scanning the outbox ([`drain_once`]) or as named by a broker
/// (`src/broker.rs`, which uses this module). A retry also clears `relayed_at`, so
/// that a broker's relay sends the event again once it is due; without a broker the
/// column is never set.
pub async fn settle(tx: &mut crate::db::Tx, rows: Vec<Claimed>, config: &WorkerConfig) -> Result<DrainReport, sqlx::Error> {
    let mut report = DrainReport::default();
    // Deliveries go in one statement after the loop: a batch costs the same few round
    // trips whatever its size. With an INSERT and an UPDATE per event, level 3's one
    // worker behind PgBouncer fell 15 s behind at 300 orders a second (BENCHMARKS.md,
    // "From an order to its notification"). Failures stay one by one: they are rare and
    // each has its own attempt count and backoff.
    let mut delivered = Deliveries::default();
    for (id, topic, payload, attempts) in rows {
        match render(&topic, &payload) {
            Ok((channel, recipient, body)) => {
                delivered.ids.push(id);
                delivered.channels.push(channel);
                delivered.recipients.push(recipient);
                delivered.bodies.push(body);
            }
            Err(reason) => {
                let attempts = attempts + 1;
                if attempts >= config.max_attempts {
                    sqlx::query(
                        "INSERT INTO dead_letters (outbox_id, topic, payload, attempts, last_error)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (outbox_id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(&topic)
                    .bind(&payload)
                    .bind(attempts)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                    // relayed_at cleared: a replay (`scalectl queue dlq replay`) needs
                    // only to clear processed_at for a broker's relay to send it again.
                    sqlx::query("UPDATE outbox SET processed_at = now(), attempts = $2, last_error = $3, relayed_at = NULL WHERE id = $1")
                        .bind(id)
                        .bind(attempts)
                        .bind(&reason)
                        .execute(&mut *tx)
                        .await?;
                    tracing::warn!(outbox_id = id, attempts, reason, "outbox event dead-lettered");
                    report.dead += 1;
                } else {
                    let delay = backoff(config, attempts);
                    sqlx::query(
                        "UPDATE outbox SET attempts = $2, last_error = $3, relayed_at = NULL,
                             next_attempt_at = now() + make_interval(secs => $4)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(&reason)
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    report.retried += 1;
                }
            }
        }
    }
    if !delivered.ids.is_empty() {
        // The UPDATE runs to completion though nothing reads it (a data-modifying WITH
        // always does). ON CONFLICT: the unique outbox_id makes a second delivery a
        // no-op even if two transactions ever claimed the same row.
        sqlx::query(
            "WITH done AS (UPDATE outbox SET processed_at = now(), attempts = attempts + 1 WHERE id = ANY($1))
             INSERT INTO notifications (outbox_id, channel, recipient, body)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (outbox_id) DO NOTHING",
        )
        .bind(&delivered.ids)
        .bind(&delivered.channels)
        .bind(&delivered.recipients)
        .bind(&delivered.bodies)
        .execute(&mut *tx)
        .await?;
        report.delivered = delivered.ids.len();
    }
    Ok(report)
}

/// A batch's renderable events, column by column for `unnest`.
#[derive(Default)]
struct Deliveries {
    ids: Vec<i64>,
    channels: Vec<String>,
    recipients: Vec<String>,
    bodies: Vec<String>,
}

fn backoff(config: &WorkerConfig, attempts: i32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).clamp(0, 20) as u32);
    config.base_backoff.saturating_mul(factor).min(config.max_backoff)
}

/// Drains forever, sleeping when nothing is due, until `shutdown` resolves.
pub async fn run(db: Db, config: WorkerConfig, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let idle = match drain_once(&db, &config).await {
            Ok(report) => {
                if report != DrainReport::default() {
                    tracing::info!(delivered = report.delivered, retried = report.retried, dead = report.dead, "outbox batch");
                }
                report.delivered + report.retried + report.dead == 0
            }
            Err(e) => {
                tracing::error!(error = %e, cause = %sqlx_cause(&e), "outbox batch failed");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }
}

fn sqlx_cause(e: &WorkerError) -> String {
    match e {
        WorkerError::Batch(inner) => inner.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = WorkerConfig { base_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(10), ..Default::default() };
        assert_eq!(backoff(&c, 1), Duration::from_secs(1));
        assert_eq!(backoff(&c, 3), Duration::from_secs(4));
        assert_eq!(backoff(&c, 9), Duration::from_secs(10));
    }

    #[test]
    fn rejects_poison_payloads() {
        assert!(render("order.placed", &serde_json::json!({"nope": 1})).is_err());
        assert!(render("order.placed", &serde_json::json!({"order_id": 1, "email": "a@b", "total_cents": 5})).is_ok());
        assert!(render("weird", &serde_json::json!({"order_id": 1, "email": "a@b", "total_cents": 5})).is_err());
    }
}
