//! `queue status` and `queue dlq list|replay`: the shop's event queue as an operator
//! sees it. Orders write events to the outbox in the transaction that places them;
//! workers deliver them (a notification each, at most once per event), retry failures
//! with backoff, and after the last attempt move the event to the dead-letter table.
//! With a broker (level 5 and up) the workers relay events to it first; the tables stay
//! the truth, so nothing here asks the broker (`relayed_at` tells what it holds, read
//! through `to_jsonb` so that a database from before the column still answers).
//!
//! Everything here is read from and written to those tables through the target's
//! [`DatabaseOps::query`](scalectl_core::ops::DatabaseOps::query), in one statement per command, so it works on any target with
//! a database and a replay is all or nothing. A replay sends the dead letter's payload,
//! as stored, back to the outbox under the same event id: the notification's unique
//! event id keeps delivery at most once, and an operator who must correct a payload
//! first edits it in `dead_letters`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Ctx;
use crate::output::{Format, ago, json as print_json, print_table, shorten};

/// The window over which delivery lag is measured.
const LAG_WINDOW_S: u32 = 300;

#[derive(Debug, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Events not yet delivered nor dead.
    pub pending: u64,
    /// Pending events whose next attempt is due now (the backlog workers face).
    pub due: u64,
    /// Pending events that failed at least once and wait for a retry.
    pub retrying: u64,
    /// Pending events handed to the broker and not yet settled by its consumers (level 5
    /// and up; always 0 without a broker).
    #[serde(default)]
    pub in_broker: u64,
    /// Age of the oldest pending event, in seconds; none when nothing is pending.
    pub oldest_pending_seconds: Option<f64>,
    /// Events in the dead-letter table.
    pub dead: u64,
    pub delivered_last_minute: u64,
    /// From the transaction that wrote an event (the order's) to the one that delivered
    /// it, over the last minutes; replayed events are left out (their wait was the
    /// operator's).
    pub lag: Lag,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Lag {
    pub window_seconds: u32,
    pub events: u64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetters {
    /// Every dead letter, of which `letters` holds the first `limit` by event id.
    pub total: u64,
    pub letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The outbox event's id: what `dlq replay` takes, stable across replays.
    pub event: i64,
    pub topic: String,
    pub attempts: i32,
    /// How many times it was replayed before dying again.
    pub replays: i32,
    pub last_error: String,
    pub dead_for_seconds: u64,
    pub payload: Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Replayed {
    pub replayed: Vec<i64>,
    /// Requested events that are not dead letters; when any is, nothing is replayed.
    pub missing: Vec<i64>,
}

/// Which dead letters `dlq replay` sends back.
pub enum Which<'a> {
    All,
    Events(&'a [i64]),
}

fn status_sql() -> String {
    format!(
        "SELECT json_build_object(\
           'pending', (SELECT count(*) FROM outbox WHERE processed_at IS NULL), \
           'due', (SELECT count(*) FROM outbox WHERE processed_at IS NULL AND next_attempt_at <= now()), \
           'retrying', (SELECT count(*) FROM outbox WHERE processed_at IS NULL AND attempts > 0), \
           'in_broker', (SELECT count(*) FROM outbox o WHERE processed_at IS NULL AND to_jsonb(o) ->> 'relayed_at' IS NOT NULL), \
           'oldest_pending_seconds', (SELECT round(extract(epoch FROM now() - min(created_at))::numeric, 3) FROM outbox WHERE processed_at IS NULL), \
           'dead', (SELECT count(*) FROM dead_letters), \
           'delivered_last_minute', (SELECT count(*) FROM notifications WHERE created_at > now() - interval '1 minute'), \
           'lag', (SELECT json_build_object('window_seconds', {LAG_WINDOW_S}, 'events', count(*), \
                     'p50_seconds', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 3), \
                     'p99_seconds', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 3)) \
                   FROM (SELECT extract(epoch FROM n.created_at - o.created_at) AS l FROM notifications n JOIN outbox o ON o.id = n.outbox_id \
                         WHERE n.created_at > now() - make_interval(secs => {LAG_WINDOW_S}) AND o.replays = 0) x))"
    )
}

fn list_sql(limit: usize) -> String {
    format!(
        "SELECT json_build_object('total', (SELECT count(*) FROM dead_letters), 'letters', coalesce(json_agg(t ORDER BY t.event), '[]')) FROM (\
           SELECT d.outbox_id AS event, d.topic, d.attempts, o.replays, d.last_error, \
                  greatest(0, extract(epoch FROM now() - d.created_at))::bigint AS dead_for_seconds, d.payload \
           FROM dead_letters d JOIN outbox o ON o.id = d.outbox_id ORDER BY d.outbox_id LIMIT {limit}) t"
    )
}

/// One statement: the requested events that are not dead letters, and, only when there
/// is none, every requested dead letter deleted and its event reset in the outbox with
/// the dead letter's payload, due now, one replay more.
fn replay_sql(which: &Which) -> String {
    let wanted = match which {
        Which::All => "SELECT outbox_id AS id FROM dead_letters".to_string(),
        Which::Events(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("SELECT unnest(ARRAY[{}]::bigint[]) AS id", list.join(","))
        }
    };
    format!(
        "WITH wanted AS ({wanted}), \
           missing AS (SELECT DISTINCT id FROM wanted w WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.outbox_id = w.id)), \
           picked AS (DELETE FROM dead_letters WHERE outbox_id IN (SELECT id FROM wanted) AND NOT EXISTS (SELECT 1 FROM missing) \
                      RETURNING outbox_id, payload), \
           requeued AS (UPDATE outbox o SET processed_at = NULL, attempts = 0, last_error = NULL, next_attempt_at = now(), \
                          payload = p.payload, replays = o.replays + 1 FROM picked p WHERE o.id = p.outbox_id RETURNING o.id) \
         SELECT json_build_object('replayed', (SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM requeued), \
                                  'missing', (SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM missing))"
    )
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| if s < 10.0 { format!("{s:.2} s") } else { ago(s as u64) })
}

pub fn status(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let status: QueueStatus = super::db_json(super::database(provider.as_ref())?, &status_sql(), "the outbox")?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&status, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "Outbox of {name}:")?;
    writeln!(out, "  pending    {} ({} due now, {} waiting to retry)", status.pending, status.due, status.retrying)?;
    if status.in_broker > 0 {
        writeln!(out, "  in broker  {} (relayed, not yet handled)", status.in_broker)?;
    }
    writeln!(out, "  oldest     {}", seconds(status.oldest_pending_seconds))?;
    writeln!(out, "  delivered  {} in the last minute", status.delivered_last_minute)?;
    let lag = &status.lag;
    if lag.events == 0 {
        writeln!(out, "  lag        - (nothing delivered in the last {} min)", lag.window_seconds / 60)?;
    } else {
        let window = format!("{} min", lag.window_seconds / 60);
        writeln!(
            out,
            "  lag        p50 {}, p99 {} (order to notification, {} events in the last {window})",
            seconds(lag.p50_seconds),
            seconds(lag.p99_seconds),
            lag.events
        )?;
    }
    writeln!(out, "  dead       {}", status.dead)?;
    if status.dead > 0 {
        writeln!(out, "\n`scalectl queue dlq list --env {name}` shows the dead letters; `dlq replay` sends them back.")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dlq_list(ctx: &Ctx, name: &str, limit: usize) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let dead: DeadLetters = super::db_json(super::database(provider.as_ref())?, &list_sql(limit), "the dead letters")?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&dead, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if dead.total == 0 {
        writeln!(out, "No dead letters in {name}.")?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = dead
        .letters
        .iter()
        .map(|d| {
            vec![
                d.event.to_string(),
                d.topic.clone(),
                d.attempts.to_string(),
                d.replays.to_string(),
                ago(d.dead_for_seconds),
                shorten(&d.last_error, 60),
            ]
        })
        .collect();
    print_table(&["EVENT", "TOPIC", "ATTEMPTS", "REPLAYS", "DEAD FOR", "LAST ERROR"], &rows, &mut out)?;
    if dead.total > dead.letters.len() as u64 {
        writeln!(out, "\n{} more; `-n` shows more, `-o json` shows the payloads.", dead.total - dead.letters.len() as u64)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn dlq_replay(ctx: &Ctx, name: &str, which: Which) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let done: Replayed = super::db_json(super::database(provider.as_ref())?, &replay_sql(&which), "the replay")?;
    if !done.missing.is_empty() {
        let ids: Vec<String> = done.missing.iter().map(i64::to_string).collect();
        bail!("no dead letter for event {}; nothing was replayed (`scalectl queue dlq list --env {name}` shows the dead letters)", ids.join(", "));
    }
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&done, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Which::Events(ids) = &which {
        // Named, found, and yet not replayed here: another replay took them meanwhile.
        let taken: Vec<String> = ids.iter().filter(|id| !done.replayed.contains(id)).map(i64::to_string).collect();
        if !taken.is_empty() {
            writeln!(out, "Event {} was replayed by another command meanwhile.", taken.join(", "))?;
        }
    }
    if done.replayed.is_empty() {
        if matches!(which, Which::All) {
            writeln!(out, "No dead letters in {name}; nothing to replay.")?;
        }
    } else {
        let ids: Vec<String> = done.replayed.iter().map(i64::to_string).collect();
        writeln!(out, "Sent {} back to the outbox: event {}.", plural(done.replayed.len()), ids.join(", "))?;
        writeln!(out, "`scalectl queue status --env {name}` shows them delivered, or waiting to retry.")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> String {
    if n == 1 { "1 dead letter".to_string() } else { format!("{n} dead letters") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_times_keep_their_fraction() {
        assert_eq!(seconds(Some(0.4123)), "0.41 s");
        assert_eq!(seconds(Some(75.0)), "1m15s");
        assert_eq!(seconds(None), "-");
    }
}
