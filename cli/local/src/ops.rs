//! Questions and operations that span components: what `status` shows beyond up or
//! down (leader, replica lag, pool use, cache hits), `db slow-queries`, and a planned
//! `switchover` that waits until the shop can write again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use scalectl_core::fault::Selector;
use scalectl_core::ops::{
    CacheReplica, CacheUse, DatabaseInsight, ExplainOn, ExplainRequest, Explained, Insights, MemberInsight, PoolUse, SlowQueries, Statement,
    SwitchoverReport,
};
use scalectl_core::{Resource, ResourceKind};
use serde_json::Value;

use crate::{Env, health, patroni, pgbouncer, postgres, redis, spec};

fn of_kind(env: &Env, kind: ResourceKind) -> Vec<&Resource> {
    env.graph.resources.iter().filter(|r| r.kind == kind).collect()
}

fn ids_of(env: &Env, kind: ResourceKind) -> Vec<String> {
    of_kind(env, kind).iter().map(|r| r.id.clone()).collect()
}

/// Everything `status` adds below its table.
pub fn insights(env: &Env) -> Insights {
    // Redis's primaries and replicas as they are now (Sentinels move the roles), each
    // node asked once.
    let (primaries, replicas): (Vec<&Resource>, Vec<&Resource>) =
        of_kind(env, ResourceKind::Redis).into_iter().partition(|r| redis::serves_writes(env, r));
    Insights {
        database: database(env),
        pools: of_kind(env, ResourceKind::Pgbouncer).into_iter().filter_map(|p| Some((p.id.clone(), pool(env, p).ok()?))).collect(),
        caches: primaries.into_iter().filter_map(|r| Some((r.id.clone(), cache(env, r).ok()?))).collect(),
        cache_replicas: replicas.into_iter().filter_map(|r| Some((r.id.clone(), cache_replica(env, r)?))).collect(),
        limits: of_kind(env, ResourceKind::Shop).into_iter().filter_map(|r| Some((r.id.clone(), crate::limits::applied(env, r)?))).collect(),
    }
}

/// A replica's link state, and how far it is behind its primary in replication bytes.
fn cache_replica(env: &Env, r: &Resource) -> Option<CacheReplica> {
    let replication = |r: &Resource| redis::command(env, r, "INFO replication").ok();
    let offset = |info: &str, field: &str| -> Option<u64> { redis::info_field(info, field)?.parse().ok() };
    let info = replication(r);
    // The primary it follows now, by the address it replicates from; the one the
    // manifest gave it when it does not answer.
    let following = info.as_deref().and_then(|i| redis::info_field(i, "master_host")).and_then(|host| {
        of_kind(env, ResourceKind::Redis).into_iter().find(|p| p.address.is_some_and(|a| a.to_string() == host)).map(|p| p.id.clone())
    });
    let of = following.or_else(|| spec::redis(r).ok()?.replica_of)?;
    let Some(info) = info else {
        return Some(CacheReplica { of, in_sync: false, waiting_for: Some("it does not answer".into()), lag_bytes: None });
    };
    let state = redis::replica_state(&info);
    let primary = env.resource(&of).ok().and_then(replication).and_then(|p| offset(&p, "master_repl_offset"));
    let lag = primary.zip(offset(&info, "slave_repl_offset")).filter(|_| state.is_ok()).map(|(p, r)| p.saturating_sub(r));
    Some(CacheReplica { of, in_sync: state.is_ok(), waiting_for: state.err(), lag_bytes: lag })
}

/// The leader and each member's role, state and replication lag.
fn database(env: &Env) -> Option<DatabaseInsight> {
    let nodes = of_kind(env, ResourceKind::PatroniNode);
    if nodes.is_empty() {
        let single = of_kind(env, ResourceKind::Postgres);
        return single.first().map(|n| DatabaseInsight {
            leader: Some(n.id.clone()),
            members: vec![MemberInsight { id: n.id.clone(), role: "primary".into(), state: "running".into(), timeline: None, lag_bytes: None }],
            failover_candidates: vec![],
            no_failover_candidate: None,
        });
    }
    let cluster = patroni::cluster(nodes.iter().copied()).ok()?;
    let id_of = |name: &str| nodes.iter().find(|n| patroni::member_name(n) == name).map_or(name.to_string(), |n| n.id.clone());
    let text = |m: &Value, k: &str| m[k].as_str().unwrap_or("?").to_string();
    let members: Vec<MemberInsight> = cluster["members"]
        .as_array()?
        .iter()
        .map(|m| MemberInsight {
            id: id_of(m["name"].as_str().unwrap_or("")),
            role: text(m, "role"),
            state: text(m, "state"),
            timeline: m["timeline"].as_u64(),
            lag_bytes: m.get("lag").and_then(Value::as_u64),
        })
        .collect();
    let leader = members.iter().find(|m| m.role == "leader").map(|m| m.id.clone());
    let synchronous_mode = synchronous_mode(&nodes);
    let failover_candidates = patroni::failover_candidates(&cluster, synchronous_mode).iter().map(|n| id_of(n)).collect();
    let no_failover_candidate = patroni::no_failover_candidate(&cluster, synchronous_mode);
    Some(DatabaseInsight { leader, members, failover_candidates, no_failover_candidate })
}

/// Whether the cluster runs Patroni's synchronous mode (the manifest asks for
/// synchronous standbys), where only a synchronous standby may be promoted.
fn synchronous_mode(nodes: &[&Resource]) -> bool {
    nodes.iter().any(|n| crate::spec::patroni_node(n).is_ok_and(|s| s.patroni.synchronous_mode))
}

/// PgBouncer's SHOW POOLS for the shop's databases.
fn pool(env: &Env, r: &Resource) -> Result<Vec<PoolUse>> {
    let rows = pgbouncer::client(env, r)?.table("pgbouncer", "SHOW POOLS")?;
    let size = u64::from(crate::spec::pgbouncer(r)?.default_pool_size);
    let n = |row: &BTreeMap<String, String>, k: &str| row.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(rows
        .iter()
        .filter_map(|row| row.get("database").filter(|d| *d != "pgbouncer").map(|d| (d, row)))
        .map(|(database, row)| PoolUse {
            database: database.clone(),
            clients_active: n(row, "cl_active"),
            clients_waiting: n(row, "cl_waiting"),
            servers_active: n(row, "sv_active"),
            servers_idle: n(row, "sv_idle") + n(row, "sv_used"),
            pool_size: size,
        })
        .collect())
}

/// Redis's keyspace hits and misses since it started.
fn cache(env: &Env, r: &Resource) -> Result<CacheUse> {
    let info = redis::command(env, r, "INFO stats").map_err(anyhow::Error::msg)?;
    let field = |k: &str| redis::info_field(&info, k).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let (hits, misses) = (field("keyspace_hits"), field("keyspace_misses"));
    let ratio = if hits + misses > 0 { Some(hits as f64 / (hits + misses) as f64) } else { None };
    Ok(CacheUse { hits, misses, hit_ratio: ratio })
}

/// The server that takes writes now.
fn primary(env: &Env) -> Result<&Resource> {
    let mut ids = ids_of(env, ResourceKind::PatroniNode);
    if ids.is_empty() {
        ids = ids_of(env, ResourceKind::Postgres);
    }
    if ids.is_empty() {
        bail!("this environment has no PostgreSQL server");
    }
    postgres::primary(env, &ids)
}

/// SQL on the primary's shop database, as the superuser.
pub fn query(env: &Env, sql: &str) -> Result<String> {
    postgres::psql_within(env, primary(env)?, "shop", sql, postgres::ASK_DEADLINE)
}

pub fn slow_queries(env: &Env, limit: usize) -> Result<SlowQueries> {
    let node = primary(env)?;
    let ask = |sql: &str| postgres::psql_within(env, node, "shop", sql, postgres::ASK_DEADLINE);
    let installed = ask("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")?;
    if installed.trim() != "1" {
        bail!("pg_stat_statements is not installed in this environment's database; levels 2 and up install it (spec.postgres.extensions)");
    }
    let query = |order: &str| {
        format!(
            "SELECT coalesce(json_agg(t), '[]') FROM (\
               SELECT s.calls, round(s.total_exec_time::numeric, 2) AS total_ms, round(s.mean_exec_time::numeric, 3) AS mean_ms, \
                      s.rows, round((100.0 * s.total_exec_time / nullif(sum(s.total_exec_time) OVER (), 0))::numeric, 1) AS percent, \
                      regexp_replace(s.query, '\\s+', ' ', 'g') AS query \
               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
               WHERE d.datname = 'shop' AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = 'shop') ORDER BY {order} DESC LIMIT {limit}) t"
        )
    };
    let parse = |text: String| serde_json::from_str::<Vec<Statement>>(text.trim()).context("reading pg_stat_statements");
    let by_total = parse(ask(&query("s.total_exec_time"))?)?;
    let by_mean = parse(ask(&query("s.mean_exec_time"))?)?;
    Ok(SlowQueries { server: node.id.clone(), by_total, by_mean })
}

/// A standby that streams now, if any (an asynchronous replica before a synchronous
/// standby), found as the chaos selector `replica` finds it. Only Patroni clusters have
/// standbys; one whose REST API does not answer is an error, not "no replica".
fn replica(env: &Env) -> Result<Option<&Resource>> {
    let nodes = of_kind(env, ResourceKind::PatroniNode);
    if nodes.is_empty() {
        return Ok(None);
    }
    patroni::cluster(nodes).context("asking Patroni which node is a standby")?;
    Ok(crate::faults::resolve(env, Selector::Replica).ok().and_then(|r| r.into_iter().next()))
}

/// `EXPLAIN` of one statement (a second is refused: it could end the transaction) on a
/// replica (unless asked for the primary, or there is none), as the shop's role, in a
/// read-only transaction that is rolled back, with a statement timeout. The statement
/// goes to psql as its own `-c`, so it reaches the server as written.
pub fn explain(env: &Env, sql: &str, request: ExplainRequest) -> Result<Explained> {
    let sql = scalectl_core::ops::one_statement(sql).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (node, role, note) = match request.on {
        ExplainOn::Primary => (primary(env)?, "primary", None),
        ExplainOn::Replica => match replica(env)? {
            Some(r) => (r, "replica", None),
            None => (primary(env)?, "primary", Some("no replica streams in this environment now, so the primary was asked".to_string())),
        },
    };
    let mut options = if request.analyze { vec!["ANALYZE", "BUFFERS"] } else { Vec::new() };
    options.push(if request.json { "FORMAT JSON" } else { "FORMAT TEXT" });
    let explain = format!("EXPLAIN ({}) {sql}", options.join(", "));
    let timeout = format!("SET LOCAL statement_timeout = '{}s'", request.timeout_secs);
    // As the shop's role, not the superuser psql connects as: the statement can do no
    // more than the shop could (no promoting a standby behind Patroni's back, say).
    // The statement's own timeout stops a slow plan; the deadline a server that does not
    // answer at all.
    let deadline = postgres::ASK_DEADLINE + Duration::from_secs(request.timeout_secs.into());
    let out = postgres::psql_each(env, node, "shop", &["BEGIN READ ONLY", "SET LOCAL ROLE shop", &timeout, &explain, "ROLLBACK"], Some(deadline))?;
    let plan = if request.json {
        serde_json::from_str(out.trim()).with_context(|| format!("reading the JSON plan from {}", node.id))?
    } else {
        Value::String(out.trim_end().to_string())
    };
    Ok(Explained { server: node.id.clone(), role: role.to_string(), note, analyzed: request.analyze, plan })
}

/// Whether the shop can write now: a write through the pooler (the shop's own path;
/// assigning a transaction id fails on a standby) succeeds, and the shop answers ready
/// through its balancer (which takes shops out while their database is unreachable).
/// A write through the shop's pooler and the router: `txid_current()` needs the leader.
fn pooled_write(env: &Env) -> Result<()> {
    let pooler = of_kind(env, ResourceKind::Pgbouncer);
    let pooler = pooler.first().context("no pooler")?;
    pgbouncer::client(env, pooler)?.query("shop", "SELECT txid_current()")?;
    Ok(())
}

fn write_probe(env: &Env) -> Result<()> {
    pooled_write(env)?;
    for edge in of_kind(env, ResourceKind::Haproxy).into_iter().filter(|h| !crate::haproxy::is_router(h)) {
        let addr = std::net::SocketAddr::from((edge.address.context("balancer without an address")?, edge.port.unwrap_or(8000)));
        match health::http_status(addr, "/readyz", Duration::from_secs(2)) {
            Ok(200) => {}
            other => bail!("the shop is not ready behind {}: {other:?}", edge.id),
        }
    }
    Ok(())
}

pub fn switchover(env: &Env, to: Option<&str>) -> Result<SwitchoverReport> {
    let nodes = of_kind(env, ResourceKind::PatroniNode);
    if nodes.is_empty() {
        bail!("switchover needs a Patroni cluster (level 3 and up); this environment has a single PostgreSQL server");
    }
    let from = patroni::leader(&nodes, Duration::from_secs(5))?.id.clone();
    let done = AtomicBool::new(false);
    let (switched, paused) = std::thread::scope(|scope| {
        let paused = scope.spawn(|| longest_write_gap(env, &done));
        let switched = switch_and_wait_for_writes(env, &nodes, to);
        done.store(true, Ordering::Relaxed);
        (switched, paused.join().unwrap_or(Duration::ZERO))
    });
    let (to, started, promoted, writes_after) = switched?;
    // Done only once another node could take over again: right after the promotion
    // Patroni lists no synchronous standby, and losing the new leader then would leave
    // the cluster without one.
    let standby = patroni::wait_for_failover_candidate(&nodes, synchronous_mode(&nodes), Duration::from_secs(120))
        .with_context(|| format!("{to} leads and takes writes, but no other node could replace it yet; see `scalectl status`"))?;
    let standby_after = started.elapsed();
    let id_of = |name: &str| nodes.iter().find(|n| patroni::member_name(n) == name).map_or(name.to_string(), |n| n.id.clone());
    Ok(SwitchoverReport {
        from,
        to: id_of(&to),
        promoted_after_seconds: promoted.as_secs_f64(),
        writes_resumed_after_seconds: writes_after.as_secs_f64(),
        writes_paused_seconds: paused.as_secs_f64(),
        synchronous_standby_after_seconds: standby_after.as_secs_f64(),
        synchronous_standby: id_of(&standby),
    })
}

/// Asks Patroni to switch over, then waits until the shop is ready and a write goes
/// through; returns the new leader, when the request was made, and both times since.
fn switch_and_wait_for_writes(env: &Env, nodes: &[&Resource], to: Option<&str>) -> Result<(String, Instant, Duration, Duration)> {
    let started = Instant::now();
    let to = patroni::switchover(env, nodes, to, Duration::from_secs(60))?;
    let promoted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match write_probe(env) {
            Ok(()) => return Ok((to, started, promoted, started.elapsed())),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("the new leader {to} runs, but writes through the pooler still fail after 60 s: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The longest time between two writes that went through, probing every 50 ms until
/// `done`: what a client writing all along saw as the pause. Patroni's request returns
/// after its next loop and the demotion, so the time since the request is longer.
fn longest_write_gap(env: &Env, done: &AtomicBool) -> Duration {
    let mut last_ok: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    loop {
        // Read before the probe: once writes have resumed, one more probe closes the gap.
        let finishing = done.load(Ordering::Relaxed);
        if pooled_write(env).is_ok() {
            let now = Instant::now();
            if let Some(before) = last_ok {
                longest = longest.max(now - before);
            }
            last_ok = Some(now);
        }
        if finishing {
            return longest;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sql` in the shop's database on the server that takes writes, as the superuser,
/// and returns psql's unaligned rows: how `scalectl load` checks a flash sale's outcome.
pub fn shop_sql(env: &Env, sql: &str) -> Result<String> {
    postgres::psql(env, primary(env)?, "shop", sql)
}
