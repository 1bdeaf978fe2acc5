//! Prometheus with a scrape config generated from the environment's resources. Optional:
//! when the binary is missing, `up` says so and goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;
use serde_json::json;

use crate::process::{self, Paths};
use crate::{Env, fsutil, health, spec, templates, tools};

fn paths(env: &Env, r: &Resource) -> Paths {
    Paths { dir: env.node_dir(r) }
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::prometheus(r)?;
    let mut jobs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &spec.targets {
        let (job, endpoint) = t.split_once('=').context("malformed scrape target")?;
        jobs.entry(job).or_default().push(endpoint);
    }
    let jobs: Vec<_> = jobs.into_iter().map(|(name, targets)| json!({"name": name, "targets": targets})).collect();
    let ctx = json!({
        "env": env.name,
        "address": r.address.map(|a| a.to_string()).unwrap_or_default(),
        "port": r.port.unwrap_or(9090),
        "p": r.spec,
        "jobs": jobs,
        "rules": env.node_dir(r).join(RULES).display().to_string(),
        "windows": ["5m", "30m", "1h", "6h"],
        "p95_seconds": f64::from(spec.slo_latency_p95_ms) / 1000.0,
        "p99_seconds": f64::from(spec.slo_latency_p99_ms) / 1000.0,
        // Failover-candidate alerts for Patroni clusters (level 3 and up).
        "patroni": spec.targets.iter().any(|t| t.starts_with("patroni=")),
        // Replica lag and cache hit ratio rules, where Patroni and Redis are scraped.
        "redis": spec.targets.iter().any(|t| t.starts_with("redis=")),
        "replica_lag_alert_bytes": REPLICA_LAG_ALERT_BYTES,
        "cache_hit_alert_ratio": CACHE_HIT_ALERT_RATIO,
        "outbox_late_seconds": OUTBOX_LATE_SECONDS,
        "budget": format!("{:.6}", (1.0 - spec.slo_availability / 100.0).max(0.0)),
    });
    Ok(vec![
        ("prometheus.yml".into(), templates::render("prometheus.yml", templates::PROMETHEUS_YML, &ctx)?),
        (RULES.into(), templates::render(RULES, templates::PROMETHEUS_RULES, &ctx)?),
    ])
}

/// A replica this far behind its leader (WAL bytes, for two minutes) raises a ticket: a
/// few seconds of the level's write rate, well past what a healthy replica trails by.
const REPLICA_LAG_ALERT_BYTES: u64 = 16 * 1024 * 1024;

/// Below this share of the shop's Redis reads finding their key (for fifteen minutes,
/// with reads going on) a ticket is raised.
const CACHE_HIT_ALERT_RATIO: f64 = 0.5;

/// An outbox event undelivered this long (for five minutes) raises a ticket: a failing
/// one is dead-lettered within seconds (five attempts, backoff from 1 s), so only workers
/// that are down or overwhelmed leave one waiting a minute.
const OUTBOX_LATE_SECONDS: u32 = 60;

/// The rule file beside prometheus.yml: SLO recording and alert rules.
const RULES: &str = "rules.yml";

pub fn observe(env: &Env, r: &Resource) -> Observed {
    if tools::find("prometheus").is_none() {
        return Observed::Unknown;
    }
    match process::running_pid(&paths(env, r).pid(), "prometheus") {
        Some(pid) => Observed::Running { pid: Some(pid) },
        None => Observed::Down { reason: "process is not running".into() },
    }
}

pub fn apply(env: &Env, r: &Resource) -> Result<Option<String>> {
    let Some(bin) = tools::find("prometheus") else {
        return Ok(Some(
            "prometheus is not installed, so metrics are not collected; install it with `apt-get install prometheus` and run `scalectl up` again"
                .into(),
        ));
    };
    let p = paths(env, r);
    std::fs::create_dir_all(p.dir.join("data"))?;
    for (name, text) in config_files(env, r)? {
        fsutil::write_atomic(&p.dir.join(name), text.as_bytes(), 0o644)?;
    }
    let config = p.dir.join("prometheus.yml");
    p.stop("prometheus")?;
    let addr = endpoint(r)?;
    if health::port_taken(addr) {
        return Err(crate::PortTaken(addr).into());
    }
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", p.dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--storage.tsdb.retention.time={}", spec::prometheus(r)?.retention.prometheus()));
    process::spawn_detached(cmd, &p.log(), &p.pid())?;
    Ok(None)
}

fn endpoint(r: &Resource) -> Result<SocketAddr> {
    Ok(SocketAddr::from((r.address.context("prometheus without an address")?, r.port.unwrap_or(9090))))
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    if tools::find("prometheus").is_none() {
        return Ok(Readiness::Ready);
    }
    // Not `running_pid`: between exec and the new program's arguments being set up its
    // command line reads empty, which once failed a fresh `up` in CI.
    if let Some(failed) = crate::daemon::exited(r, &paths(env, r)) {
        return Ok(failed);
    }
    Ok(match health::http_status(endpoint(r)?, "/-/ready", Duration::from_secs(1)) {
        Ok(200) => Readiness::Ready,
        Ok(code) => Readiness::Pending(format!("/-/ready answered {code}")),
        Err(e) => Readiness::Pending(e),
    })
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    paths(env, r).destroy("prometheus", keep_data)
}
