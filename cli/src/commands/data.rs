//! The database tier of one environment: what `status` adds about it, `db slow-queries`
//! and `switchover`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use scalectl_core::ops::{ExplainOn, ExplainRequest, Insights};

use super::Ctx;
use crate::output::{Format, json as print_json, print_table, shorten};

/// The leader and replicas, pool use and cache hit ratio below the status table.
pub fn print_insights(insights: &Insights, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(db) = &insights.database {
        writeln!(out, "\nDatabase: leader {}", db.leader.as_deref().unwrap_or("NONE (no node is primary)"))?;
        for m in db.members.iter().filter(|m| m.role != "leader" && m.role != "primary") {
            let lag = m.lag_bytes.map_or("lag unknown".to_string(), |b| format!("lag {}", bytes(b)));
            writeln!(out, "  {:<22} {:<13} {:<10} {lag}", m.id, role(&m.role), m.state)?;
        }
        if let Some(why) = &db.no_failover_candidate {
            writeln!(out, "  no failover candidate: {why}")?;
        }
    }
    for (id, dbs) in &insights.pools {
        for d in dbs {
            writeln!(
                out,
                "Pool {id} ({}): {} of {} server connections busy, {} idle; {} clients active, {} waiting",
                d.database, d.servers_active, d.pool_size, d.servers_idle, d.clients_active, d.clients_waiting,
            )?;
        }
    }
    for (id, c) in &insights.caches {
        match c.hit_ratio {
            Some(r) => writeln!(out, "Cache {id}: hit ratio {:.1} % ({} hits, {} misses)", r * 100.0, c.hits, c.misses)?,
            None => writeln!(out, "Cache {id}: no reads yet")?,
        }
    }
    // One line per distinct weight and limit, naming the processes that have them.
    let mut limits: BTreeMap<_, Vec<&str>> = BTreeMap::new();
    for (id, l) in &insights.limits {
        limits.entry(*l).or_default().push(id);
    }
    for (l, ids) in limits {
        let mut cpu = l.cpu_weight.map_or("no CPU weight".to_string(), |w| format!("CPU weight {w}"));
        if let Some(m) = l.cpu_limit_millis {
            cpu.push_str(&format!(", at most {m}m CPU"));
        }
        let memory = l.memory_limit_bytes.map_or("no memory limit".to_string(), |b| format!("memory limit {}", bytes(b)));
        writeln!(out, "Limits ({cpu}, {memory}): {}", ids.join(", "))?;
    }
    for (id, c) in &insights.cache_replicas {
        let lag = c.lag_bytes.map_or(String::new(), |b| format!(", {} behind", bytes(b)));
        match &c.waiting_for {
            None => writeln!(out, "Cache replica {id} of {}: in sync{lag}", c.of)?,
            Some(why) => writeln!(out, "Cache replica {id} of {}: NOT in sync: {why}", c.of)?,
        }
    }
    Ok(())
}

fn role(patroni_role: &str) -> &str {
    match patroni_role {
        "sync_standby" => "sync standby",
        // Streaming, but not (yet) listed as synchronous: not a failover candidate.
        "replica" => "replica",
        other => other,
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

pub fn slow_queries(ctx: &Ctx, name: &str, limit: usize) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let report = super::database(provider.as_ref())?.slow_queries(limit).map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&report, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (statements, title) in [(&report.by_total, "total time"), (&report.by_mean, "mean time")] {
        writeln!(out, "Top statements by {title} on {} (pg_stat_statements, database shop):\n", report.server)?;
        let rows: Vec<Vec<String>> = statements
            .iter()
            .map(|q| {
                let short = shorten(&q.query, 90);
                let percent = q.percent.map_or("-".to_string(), |p| format!("{p}%"));
                vec![q.calls.to_string(), q.total_ms.to_string(), q.mean_ms.to_string(), percent, q.rows.to_string(), short]
            })
            .collect();
        if rows.is_empty() {
            writeln!(out, "  (no statements recorded yet)\n")?;
            continue;
        }
        print_table(&["CALLS", "TOTAL MS", "MEAN MS", "SHARE", "ROWS", "QUERY"], &rows, &mut out)?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn explain(ctx: &Ctx, name: &str, sql: &str, on: ExplainOn, analyze: bool, timeout_secs: u32) -> Result<ExitCode> {
    let (_, provider) = super::open(ctx, name)?;
    let request = ExplainRequest { on, analyze, json: ctx.format == Format::Json, timeout_secs };
    let report = super::database(provider.as_ref())?.explain(sql, request).map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&report, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let how = if report.analyzed { "run as the shop's role in a read-only transaction that was rolled back" } else { "planned, not run" };
    writeln!(out, "Plan on {} ({}), {how}:", report.server, report.role)?;
    if let Some(note) = &report.note {
        writeln!(out, "({note})")?;
    }
    writeln!(out)?;
    writeln!(out, "{}", report.plan.as_str().unwrap_or_default())?;
    Ok(ExitCode::SUCCESS)
}

pub fn switchover(ctx: &Ctx, name: &str, to: Option<&str>) -> Result<ExitCode> {
    let _lock = ctx.home.lock(name)?;
    let (_, provider) = super::open(ctx, name)?;
    let t = ctx.progress.start("switchover", "switching over");
    let report = super::database(provider.as_ref())?.switchover(to).map_err(|e| {
        ctx.progress.failed("switchover");
        anyhow!("{e}")
    })?;
    ctx.progress.done("switchover", "done", t);
    match ctx.format {
        Format::Json => print_json(&report, &mut std::io::stdout())?,
        Format::Text => println!(
            "Switched over from {} to {}: new leader after {:.1} s, the shop's writes resumed after {:.1} s; writes paused for {:.1} s; \
             {} became the synchronous standby (a failover candidate again) after {:.1} s.",
            report.from,
            report.to,
            report.promoted_after_seconds,
            report.writes_resumed_after_seconds,
            report.writes_paused_seconds,
            report.synchronous_standby,
            report.synchronous_standby_after_seconds,
        ),
    }
    Ok(ExitCode::SUCCESS)
}
