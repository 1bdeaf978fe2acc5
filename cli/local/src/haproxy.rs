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
use scalectl_core::plan::{Action, Observed};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::spec::{self, HaproxyRole};
use crate::{Env, health, pgbouncer, process, shop, templates, tools};

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
        "limits": limits(&spec.rate_limits)?,
    });
    Ok(vec![templates::render_for(env, r, "haproxy.cfg", templates::HAPROXY_CFG, extra)?])
}

/// The requests each rate-limited route group is: the same the shop's own token
/// buckets charge (`POST /login`, `POST /register`, `GET /products?q=`).
const LIMITED_ROUTES: [(&str, &str); 3] = [
    ("login", "METH_POST { path /login }"),
    ("register", "METH_POST { path /register }"),
    ("search", "METH_GET { path /products } { url_param(q) -m found }"),
];

/// The edge's rate limits, one per route group the manifest limits: a client (the first
/// X-Forwarded-For address, else the peer, as the shop tells clients apart) may have
/// `2 × burst` requests accepted in any `burst / perSecond` seconds. A token bucket of
/// that rate and burst accepts at most `burst + perSecond × window` = `2 × burst` in such
/// a window, so the edge never refuses what the shop's bucket (shared in Redis, exact)
/// would accept, and a flood beyond it is answered 429 at the edge without reaching a
/// pool.
fn limits(rates: &BTreeMap<String, String>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (group, condition) in LIMITED_ROUTES {
        let Some(text) = rates.get(group) else { continue };
        let (per_second, burst) = text
            .split_once(':')
            .and_then(|(r, b)| Some((r.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .filter(|(r, b)| *r > 0 && *b > 0)
            .with_context(|| format!("rate limit `{group}` is `{text}`, not PER_SECOND:BURST"))?;
        let window_ms = (burst * 1000).div_ceil(per_second).max(1);
        out.push(json!({ "group": group, "condition": condition, "window_ms": window_ms, "max": 2 * burst }));
    }
    if let Some(unknown) = rates.keys().find(|g| !LIMITED_ROUTES.iter().any(|(known, _)| known == g)) {
        anyhow::bail!("the edge cannot rate-limit `{unknown}`; it knows {}", LIMITED_ROUTES.map(|(g, _)| g).join(", "));
    }
    Ok(out)
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

/// Starts HAProxy, or reloads the edge in place: the edge runs as a master with
/// workers (`-W`), so a new configuration (the pools of another level, a shop added) is
/// taken over by a new worker on the same sockets while the old one finishes the
/// requests it holds and leaves (`option idle-close-on-response`, at most
/// `hard-stop-after`, which closes what it still holds then). No connection is refused
/// and no request cut, which is what lets an environment move between levels while it
/// serves. The database router is restarted instead: a new
/// worker would route writes before its first leader check.
pub fn apply(env: &Env, r: &Resource, action: &Action) -> Result<()> {
    let d = daemon(env, r);
    let files = config_files(env, r)?;
    let config = d.paths().dir.join("haproxy.cfg");
    let haproxy = tools::find("haproxy").context("`haproxy` not found; install it with `apt-get install haproxy`")?;
    let edge = !is_router(r);
    if edge && *action == Action::Update && d.pid().is_some_and(is_master) {
        return reload(&d, &haproxy, &files);
    }
    let mut cmd = Command::new(&haproxy);
    if edge {
        cmd.arg("-W");
    }
    // -db: stay in the foreground; we detach it ourselves and keep its pid.
    cmd.arg("-db").arg("-f").arg(&config);
    let mut listen = vec![d.endpoint()?, metrics_endpoint(r)?];
    if let (Some(a), Some(p)) = (r.address, spec::haproxy(r)?.read_port) {
        listen.push(SocketAddr::from((a, p)));
    }
    if edge {
        let _ = std::fs::remove_file(worker_file(&d));
        d.start(cmd, &files, &listen, true)?;
        return Ok(());
    }
    // The poolers behind a running router hold their clients' queries while it is
    // replaced and until it knows the leader again, so no query fails and none reaches a
    // node before its first check said what it is.
    let poolers: Vec<&Resource> = if d.pid().is_some() { poolers_behind(env, r) } else { Vec::new() };
    // A pooler that cannot be paused (its PAUSE undone, see `pgbouncer::pause`) keeps
    // serving while the router is replaced, as before pausing existed: its clients may
    // see a query fail, not an `up` that stops.
    let paused: Vec<&Resource> = poolers.into_iter().filter(|p| pgbouncer::pause(env, p).is_ok()).collect();
    let started = d.start(cmd, &files, &listen, true).map(drop);
    if started.is_ok() && !paused.is_empty() {
        let stats = metrics_endpoint(r)?;
        let deadline = std::time::Instant::now() + ROUTED_WITHIN;
        while routed(stats).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Every pooler is resumed, whatever happened to the others.
    let mut failed: Vec<String> = paused.iter().filter_map(|p| pgbouncer::resume(env, p).err()).map(|e| format!("{e:#}")).collect();
    started?;
    match failed.len() {
        0 => Ok(()),
        _ => Err(anyhow::anyhow!("{}; `scalectl chaos heal --env {}` resumes them", failed.remove(0), env.name)),
    }
}

/// How long paused poolers wait for a new router to find the leader.
const ROUTED_WITHIN: Duration = Duration::from_secs(10);

/// The running poolers whose writes or reads go through router `r`.
fn poolers_behind<'a>(env: &'a Env, r: &Resource) -> Vec<&'a Resource> {
    env.graph
        .resources
        .iter()
        .filter(|p| p.kind == scalectl_core::ResourceKind::Pgbouncer)
        .filter(|p| spec::pgbouncer(p).is_ok_and(|s| s.upstream == r.id || s.read_upstream.as_deref() == Some(r.id.as_str())))
        .collect()
}

/// Whether the router at `stats` routes writes: every server of `postgres_primary` has
/// been checked at least once (a server not yet checked counts as up) and one is up.
fn routed(stats: SocketAddr) -> Result<(), String> {
    let csv = health::http_get(stats, "/stats;csv", Duration::from_secs(1))?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").trim_start_matches("# ").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no `{name}` in HAProxy's stats"));
    let (status, check) = (column("status")?, column("check_status")?);
    let servers: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"postgres_primary") && !matches!(f.get(1), Some(&"FRONTEND") | Some(&"BACKEND")))
        .collect();
    // A check in progress is shown with a `* ` before its last result (`* INI` for the
    // first one).
    let unchecked = |f: &Vec<&str>| matches!(f.get(check).map(|c| c.trim_start_matches("* ")), None | Some("") | Some("INI"));
    if let Some(s) = servers.iter().find(|f| unchecked(f)) {
        return Err(format!("{} has not been checked yet", s[1]));
    }
    if servers.iter().any(|f| f.get(status).is_some_and(|s| s.starts_with("UP"))) {
        Ok(())
    } else {
        Err("no PostgreSQL node is routed to as the leader yet".into())
    }
}

/// Whether `pid` is an HAProxy master (started with `-W`, so it can reload in place).
fn is_master(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|b| *b == 0).any(|arg| arg == b"-W")
}

/// How long a new worker may take to appear after the master is asked to reload.
const NEW_WORKER_WITHIN: Duration = Duration::from_secs(10);

/// Checks `files`' configuration, writes it, and has the master start a worker on it;
/// returns once that worker runs. A configuration HAProxy refuses changes nothing.
fn reload(d: &Daemon, haproxy: &std::path::Path, files: &[(String, String)]) -> Result<()> {
    let dir = d.paths().dir;
    let (_, text) = files.iter().find(|(name, _)| name == "haproxy.cfg").context("no haproxy.cfg to reload")?;
    let candidate = dir.join("haproxy.cfg.new");
    crate::fsutil::write_atomic(&candidate, text.as_bytes(), 0o600)?;
    let mut check = Command::new(haproxy);
    check.arg("-c").arg("-q").arg("-f").arg(&candidate);
    let checked = process::run(check, "haproxy -c");
    let _ = std::fs::remove_file(&candidate);
    checked.context("HAProxy refuses the new configuration; the running one is kept")?;
    let master = d.pid().context("HAProxy stopped while it was being reloaded")?;
    let before = process::children(master);
    if !d.reload(files, nix::sys::signal::Signal::SIGUSR2)? {
        anyhow::bail!("HAProxy stopped while it was being reloaded; run `scalectl up` again to start it");
    }
    let deadline = std::time::Instant::now() + NEW_WORKER_WITHIN;
    while std::time::Instant::now() < deadline {
        if let Some(worker) = process::children(master).into_iter().find(|w| !before.contains(w)) {
            // Readiness holds the edge to this worker: the old ones must leave, and a
            // new one that dies must not leave them serving the old configuration.
            crate::fsutil::write_atomic(&worker_file(d), worker.to_string().as_bytes(), 0o644)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("HAProxy started no worker on the new configuration within {} s; see its log", NEW_WORKER_WITHIN.as_secs())
}

/// Where the edge's reload records the worker that runs the new configuration.
fn worker_file(d: &Daemon) -> std::path::PathBuf {
    d.paths().dir.join("worker.pid")
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let d = daemon(env, r);
    if is_router(r) {
        // Ready once some node is routed to as the leader: the write port accepts and
        // HAProxy's stats show an UP server in the primary backend.
        let stats = metrics_endpoint(r)?;
        return Ok(d.check(|| routed(stats)));
    }
    // After a reload, the edge is ready once only the new worker is left: until then
    // the old ones may still send requests to shops that are about to go.
    if let Some(master) = d.pid().filter(|p| is_master(*p))
        && let Some(new) = std::fs::read_to_string(worker_file(&d)).ok().and_then(|t| t.trim().parse::<u32>().ok())
    {
        if !process::alive(new) {
            return Ok(Readiness::Failed(format!("HAProxy's worker {new} on the new configuration exited; see `scalectl logs {}`", r.id)));
        }
        let old = process::children(master).into_iter().filter(|w| *w != new).count();
        if old > 0 {
            return Ok(Readiness::Pending(format!("{old} old HAProxy workers still finish their requests")));
        }
    }
    Ok(d.check_http(d.endpoint()?, "/readyz"))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
