//! The database tier of one environment: what `status` adds about it, `db slow-queries`
//! and `switchover`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::Ctx;
use crate::output::{Format, json as print_json, print_table};

/// The leader and replicas, pool use and cache hit ratio below the status table.
pub fn print_insights(insights: &Value, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(db) = insights.get("database") {
        writeln!(out, "\nDatabase: leader {}", db["leader"].as_str().unwrap_or("NONE (no node is primary)"))?;
        for m in db["members"].as_array().into_iter().flatten().filter(|m| m["role"] != "leader" && m["role"] != "primary") {
            let lag = m["lag_bytes"].as_u64().map_or("lag unknown".to_string(), |b| format!("lag {}", bytes(b)));
            writeln!(
                out,
                "  {:<22} {:<13} {:<10} {lag}",
                m["id"].as_str().unwrap_or("?"),
                role(m["role"].as_str().unwrap_or("?")),
                m["state"].as_str().unwrap_or("?")
            )?;
        }
    }
    for (id, dbs) in insights.get("pools").and_then(Value::as_object).into_iter().flatten() {
        for d in dbs.as_array().into_iter().flatten() {
            writeln!(
                out,
                "Pool {id} ({}): {} of {} server connections busy, {} idle; {} clients active, {} waiting",
                d["database"].as_str().unwrap_or("?"),
                d["servers_active"],
                d["pool_size"],
                d["servers_idle"],
                d["clients_active"],
                d["clients_waiting"],
            )?;
        }
    }
    for (id, c) in insights.get("caches").and_then(Value::as_object).into_iter().flatten() {
        match c["hit_ratio"].as_f64() {
            Some(r) => writeln!(out, "Cache {id}: hit ratio {:.1} % ({} hits, {} misses)", r * 100.0, c["hits"], c["misses"])?,
            None => writeln!(out, "Cache {id}: no reads yet")?,
        }
    }
    Ok(())
}

fn role(patroni_role: &str) -> &str {
    match patroni_role {
        "sync_standby" => "sync standby",
        "replica" => "async replica",
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
    let report = provider.slow_queries(limit).map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if ctx.format == Format::Json {
        print_json(&report, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (key, title) in [("by_total", "total time"), ("by_mean", "mean time")] {
        writeln!(out, "Top statements by {title} on {} (pg_stat_statements, database shop):\n", report["server"].as_str().unwrap_or("?"))?;
        let rows: Vec<Vec<String>> = report[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                let text = q["query"].as_str().unwrap_or("");
                let short: String = if text.chars().count() > 90 { text.chars().take(89).chain(['…']).collect() } else { text.to_string() };
                vec![
                    q["calls"].to_string(),
                    q["total_ms"].to_string(),
                    q["mean_ms"].to_string(),
                    format!("{}%", q["percent"]),
                    q["rows"].to_string(),
                    short,
                ]
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

pub fn switchover(ctx: &Ctx, name: &str, to: Option<&str>) -> Result<ExitCode> {
    let _lock = ctx.home.lock(name)?;
    let (_, provider) = super::open(ctx, name)?;
    let t = ctx.progress.start("switchover", "switching over");
    let report = provider.switchover(to).map_err(|e| {
        ctx.progress.failed("switchover");
        anyhow!("{e}")
    })?;
    ctx.progress.done("switchover", "done", t);
    match ctx.format {
        Format::Json => print_json(&report, &mut std::io::stdout())?,
        Format::Text => println!(
            "Switched over from {} to {}: new leader after {:.1} s, the shop's writes resumed after {:.1} s; writes paused for {:.1} s.",
            report["from"].as_str().unwrap_or("?"),
            report["to"].as_str().unwrap_or("?"),
            report["promoted_after_seconds"].as_f64().unwrap_or(f64::NAN),
            report["writes_resumed_after_seconds"].as_f64().unwrap_or(f64::NAN),
            report["writes_paused_seconds"].as_f64().unwrap_or(f64::NAN),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
