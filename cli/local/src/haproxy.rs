//! HAProxy in two roles: `edge` balances HTTP over the shop processes, checking each
//! through `/readyz`, and sends each role's paths to its pool when the shop is split by
//! role (level 4 and up); `db` routes PostgreSQL connections to the Patroni leader (writes)
//! and replicas (reads) by asking each node's Patroni REST API. Both expose HAProxy's
//! built-in Prometheus endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::expand::ports;
use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::spec::{self, HaproxyRole};
use crate::{Env, health, shop, templates, tools};

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "haproxy")
}

/// Whether `r` is a database router (rather than the shop's edge balancer).
pub fn is_router(r: &Resource) -> bool {
    spec::haproxy(r).is_ok_and(|s| s.role == HaproxyRole::Db)
}

fn metrics_endpoint(r: &Resource) -> Result<SocketAddr> {
    Ok(SocketAddr::from((r.address.context("haproxy without an address")?, ports::HAPROXY_METRICS)))
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::haproxy(r)?;
    let mut backends = Vec::new();
    // Shops by the role they serve, for the edge (`all` serves every path).
    let mut by_role: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for id in &spec.backends {
        let b = env.resource(id)?;
        let patroni_port = match spec.role {
            HaproxyRole::Db => Some(spec::patroni_node(b)?.patroni.patroni_port),
            HaproxyRole::Edge => None,
        };
        let server = json!({
            "name": id.rsplit('/').next().unwrap_or(id),
            "address": b.address.map(|a| a.to_string()).unwrap_or_default(),
            "port": b.port,
            "patroni_port": patroni_port,
        });
        if spec.role == HaproxyRole::Edge {
            let roles = spec::shop(b)?.roles;
            if roles != "all" {
                by_role.entry(roles).or_default().push(server.clone());
            }
        }
        backends.push(server);
    }
    let extra = json!({
        "role": spec.role,
        "read_port": spec.read_port,
        "metrics_port": ports::HAPROXY_METRICS,
        "pools": pools(by_role, &backends)?,
        "backends": backends,
    });
    Ok(vec![templates::render_for(env, r, "haproxy.cfg", templates::HAPROXY_CFG, extra)?])
}

/// The edge's backends: one per role pool, with the path prefixes its role serves from
/// the shop's own route table (asked only when some shop serves less than `all`), then
/// `shops` with every shop, for any path no pool claims (the operational routes are in
/// every role). The template writes each backend the same way.
fn pools(by_role: BTreeMap<String, Vec<Value>>, all: &[Value]) -> Result<Vec<Value>> {
    let table = if by_role.is_empty() { BTreeMap::new() } else { shop::route_table()? };
    let mut out = Vec::new();
    for (role, servers) in by_role {
        let prefixes = table
            .get(&role)
            .with_context(|| format!("the shop serves no role `{role}` (its roles: {})", table.keys().cloned().collect::<Vec<_>>().join(", ")))?;
        let beneath: Vec<String> = prefixes.iter().map(|p| format!("{p}/")).collect();
        out.push(json!({ "name": format!("shops_{role}"), "role": role, "prefixes": prefixes, "beneath": beneath, "backends": servers }));
    }
    out.push(json!({ "name": "shops", "backends": all }));
    Ok(out)
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let files = config_files(env, r)?;
    let config = d.paths().dir.join("haproxy.cfg");
    let mut cmd = Command::new(tools::find("haproxy").context("`haproxy` not found; install it with `apt-get install haproxy`")?);
    // -db: stay in the foreground; we detach it ourselves and keep its pid.
    cmd.arg("-db").arg("-f").arg(&config);
    let mut listen = vec![d.endpoint()?, metrics_endpoint(r)?];
    if let (Some(a), Some(p)) = (r.address, spec::haproxy(r)?.read_port) {
        listen.push(SocketAddr::from((a, p)));
    }
    d.start(cmd, &files, &listen, true)?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let d = daemon(env, r);
    if is_router(r) {
        // Ready once some node is routed to as the leader: the write port accepts and
        // HAProxy's stats show an UP server in the primary backend.
        let stats = metrics_endpoint(r)?;
        return Ok(d.check(|| {
            let csv = health::http_get(stats, "/stats;csv", Duration::from_secs(1))?;
            let up = csv.lines().any(|l| l.starts_with("postgres_primary,") && !l.contains("BACKEND") && l.contains(",UP,"));
            if up { Ok(()) } else { Err("no PostgreSQL node is routed to as the leader yet".into()) }
        }));
    }
    Ok(d.check_http(d.endpoint()?, "/readyz"))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
