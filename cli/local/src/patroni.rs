//! PostgreSQL nodes managed by Patroni, which keeps its leader lock in etcd. The nodes
//! start one after another (the first bootstraps the cluster or takes over the data of
//! a standalone server, the others clone from it), and roles move afterwards through
//! failover and switchover, so the current leader is always asked for, never assumed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::{Action, Observed};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::spec::{self, PgServerSpec};
use crate::{Env, health, postgres, process, secrets, templates, tools};

const SUPERUSER_SECRET: &str = "postgres-postgres.password";
const REPLICATION_SECRET: &str = "postgres-replicator.password";
/// Patroni's REST API takes changes (switchover, configuration, reload, restart) only
/// with these credentials; reads (`/primary`, `/cluster`, `/metrics`) need none. They
/// reach Patroni in its environment (`PATRONI_RESTAPI_*`), never in `patroni.yml`,
/// which `scalectl render` shows.
const REST_SECRET: &str = "patroni-restapi.password";
const REST_USER: &str = "scalectl";
const TIMEOUT: Duration = Duration::from_secs(2);
/// Where Patroni keeps its clusters' keys in etcd (`<namespace><scope>/leader`, ...).
pub const NAMESPACE: &str = "/scalectl/";

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "patroni")
}

/// The node's name in Patroni, such as `r1-pg-1`.
pub fn member_name(r: &Resource) -> String {
    r.id.rsplit('/').next().unwrap_or(&r.id).to_string()
}

/// Where the node's Patroni REST API listens.
pub fn rest(r: &Resource) -> Result<SocketAddr> {
    let port = spec::patroni_node(r)?.patroni.patroni_port;
    Ok(SocketAddr::from((r.address.context("patroni node without an address")?, port)))
}

/// Settings that must be the same on every node; Patroni keeps them in etcd.
fn cluster_parameters(s: &PgServerSpec) -> BTreeMap<&'static str, String> {
    let mut p = BTreeMap::from([
        ("max_connections", s.max_connections.to_string()),
        ("shared_buffers", s.shared_buffers.postgres()),
        ("work_mem", s.work_mem.postgres()),
        ("effective_cache_size", s.effective_cache_size.postgres()),
        ("wal_compression", if s.wal_compression { "on" } else { "off" }.to_string()),
        ("max_wal_size", s.max_wal_size.postgres()),
        ("checkpoint_timeout", s.checkpoint_timeout.postgres()),
        ("synchronous_commit", s.synchronous_commit.as_pg().to_string()),
    ]);
    if !s.shared_preload_libraries.is_empty() {
        p.insert("shared_preload_libraries", s.shared_preload_libraries.join(","));
    }
    // pg_rewind lets a failed leader rejoin as a replica instead of being re-cloned.
    p.insert("wal_log_hints", "on".into());
    p.insert("max_wal_senders", "10".into());
    p.insert("max_replication_slots", "10".into());
    p.insert("wal_keep_size", "256MB".into());
    // After a promotion a standby's first try to stream from the new leader can fail
    // (its replication slot is made on the leader's next loop); it retries after this,
    // 5 s by default, and until it streams the new leader has no failover candidate.
    p.insert("wal_retrieve_retry_interval", "1s".into());
    p
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::patroni_node(r)?;
    let extra = json!({
        "scope": format!("{}-{}", env.name, spec.patroni.cluster),
        "namespace": NAMESPACE,
        "name": member_name(r),
        "port": r.port.unwrap_or(5432),
        "bindir": tools::server_bindir(&spec.server.version)?,
        "etcd": crate::etcd::client_urls(env, &spec.patroni.etcd)?,
        "cluster_parameters": cluster_parameters(&spec.server),
    });
    Ok(vec![templates::render_for(env, r, "patroni.yml", templates::PATRONI_YML, extra)?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

/// Starts (or reconfigures) the node; the note says when a standalone server's data was
/// taken over, since writes pause while PostgreSQL restarts under Patroni.
pub fn apply(env: &Env, r: &Resource, action: &Action) -> Result<Option<String>> {
    let d = daemon(env, r);
    let dir = d.paths().dir;
    let files = config_files(env, r)?;
    if d.pid().is_some() && *action == Action::Update {
        return reconfigure(env, r, &files);
    }
    let data = dir.join("data");
    let mut note = None;
    if data.join("PG_VERSION").exists() && !dir.join("patroni.yml").exists() {
        let paused = Instant::now();
        prepare_takeover(env, r)?;
        note = Some(paused);
    }
    // A postmaster left behind by a killed Patroni would keep the port; Patroni can
    // adopt a running one, but one from a different config is safer stopped.
    if d.pid().is_none()
        && let Some(pid) = process::running_pid(&data.join("postmaster.pid"), "postgres")
    {
        process::stop(pid, "postgres", Duration::from_secs(10))?;
    }
    let superuser = secrets::get_or_create(&env.secrets_dir(), SUPERUSER_SECRET)?;
    let replication = secrets::get_or_create(&env.secrets_dir(), REPLICATION_SECRET)?;
    let rest_password = secrets::get_or_create(&env.secrets_dir(), REST_SECRET)?;
    let mut cmd = Command::new(tools::find("patroni").context("`patroni` not found; install it with `apt-get install patroni`")?);
    cmd.arg(dir.join("patroni.yml"))
        .env("PATRONI_SUPERUSER_PASSWORD", superuser)
        .env("PATRONI_REPLICATION_PASSWORD", replication)
        .env("PATRONI_RESTAPI_USERNAME", REST_USER)
        .env("PATRONI_RESTAPI_PASSWORD", rest_password)
        .env("PYTHONUNBUFFERED", "1");
    let pg = SocketAddr::from((r.address.context("patroni node without an address")?, r.port.unwrap_or(5432)));
    d.start(cmd, &files, &[pg, rest(r)?], true)?;
    let Some(paused) = note else { return Ok(None) };
    // Writes resume once Patroni has started PostgreSQL again as the leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    while health::http_status(rest(r)?, "/primary", TIMEOUT) != Ok(200) && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    Ok(Some(format!(
        "Patroni took over the standalone server's data; the database did not accept writes for {:.1} s while it restarted",
        paused.elapsed().as_secs_f64()
    )))
}

/// A standalone server (level 2) becomes this node's data: Patroni adopts a data
/// directory when etcd knows no cluster yet, but the users it would create at bootstrap
/// must exist first.
fn prepare_takeover(env: &Env, r: &Resource) -> Result<()> {
    if matches!(postgres::observe(env, r), Observed::Down { .. }) {
        postgres::start(env, r)?;
    }
    let superuser = secrets::get_or_create(&env.secrets_dir(), SUPERUSER_SECRET)?;
    let replication = secrets::get_or_create(&env.secrets_dir(), REPLICATION_SECRET)?;
    postgres::psql(
        env,
        r,
        "postgres",
        &format!(
            "ALTER ROLE postgres PASSWORD '{}';\n\
             SELECT 'CREATE ROLE replicator REPLICATION LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator')\\gexec\n\
             ALTER ROLE replicator PASSWORD '{}';\n",
            secrets::scram_verifier(&superuser),
            secrets::scram_verifier(&replication),
        ),
    )?;
    postgres::stop(env, r)
}

/// Applies a changed definition without a restart of the node: the file is reloaded,
/// cluster-wide settings go to etcd through the REST API, and settings that need a
/// restart are applied by Patroni's rolling restart of pending nodes. A note says so
/// when the node's REST API still takes changes without credentials (started by a
/// scalectl from before they existed): its environment changes only when it restarts.
fn reconfigure(env: &Env, r: &Resource, files: &[(String, String)]) -> Result<Option<String>> {
    let dir = env.node_dir(r);
    for (name, text) in files {
        crate::fsutil::write_atomic(&dir.join(name), text.as_bytes(), 0o600)?;
    }
    if let Some(w) = &env.run_as {
        w.own(&dir.join("patroni.yml"))?;
    }
    let api = rest(r)?;
    let spec = spec::patroni_node(r)?;
    let patch = json!({
        "ttl": spec.patroni.ttl,
        "loop_wait": spec.patroni.loop_wait,
        "retry_timeout": spec.patroni.retry_timeout,
        "synchronous_mode": spec.patroni.synchronous_mode,
        "synchronous_node_count": spec.patroni.synchronous_node_count,
        "postgresql": {"parameters": cluster_parameters(&spec.server)},
    });
    call(env, api, "PATCH", "/config", Some(&patch.to_string()))?;
    // Without credentials first: a reload is harmless, and a node that takes it so has an
    // open API; every other node refuses it (401) and gets it with them.
    if matches!(health::http(api, "POST", "/reload", None, Duration::from_secs(30)), Ok((200..300, _))) {
        return Ok(Some(format!(
            "{}: Patroni's REST API takes changes without credentials until the node restarts (it was started by an earlier scalectl)",
            member_name(r)
        )));
    }
    call(env, api, "POST", "/reload", None)?;
    Ok(None)
}

/// One REST call that changes something, with the credentials it needs; it must succeed.
fn call(env: &Env, api: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let password = secrets::get_or_create(&env.secrets_dir(), REST_SECRET)?;
    match health::http_as(api, method, path, body, Some((REST_USER, &password)), Duration::from_secs(30)) {
        Ok((code, body)) if (200..300).contains(&code) => Ok(body),
        Ok((code, body)) => bail!("Patroni at {api} answered {method} {path} with {code}: {}", body.trim()),
        Err(e) => bail!("Patroni at {api}: {e}"),
    }
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let d = daemon(env, r);
    let api = rest(r)?;
    let may_be_sync = spec::patroni_node(r)?.may_be_sync();
    Ok(d.check(|| {
        health::http_get(api, "/health", TIMEOUT).map_err(|_| "PostgreSQL is not running under Patroni yet".to_string())?;
        let cluster: Value = serde_json::from_str(&health::http_get(api, "/cluster", TIMEOUT)?).map_err(|e| e.to_string())?;
        let members = cluster["members"].as_array().cloned().unwrap_or_default();
        if !members.iter().any(|m| m["role"] == "leader") {
            return Err("the cluster has no leader yet".into());
        }
        let me = members.iter().find(|m| m["name"] == member_name(r)).ok_or("not a member of the cluster yet")?;
        if !matches!(me["state"].as_str(), Some("running") | Some("streaming")) {
            return Err(format!("state {}", me["state"].as_str().unwrap_or("unknown")));
        }
        // A standby that may be synchronous is ready once the leader waits for a
        // synchronous standby: only then does an acknowledged commit survive the leader.
        if may_be_sync && me["role"] != "leader" && !members.iter().any(|m| m["role"] == "sync_standby") {
            return Err("no synchronous standby yet".into());
        }
        Ok(())
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    let d = daemon(env, r);
    d.paths().stop("patroni")?;
    let data = d.paths().dir.join("data");
    if let Some(pid) = process::running_pid(&data.join("postmaster.pid"), "postgres") {
        process::stop(pid, "postgres", Duration::from_secs(10))?;
    }
    d.destroy(keep_data)
}

/// Patroni's view of the cluster, asked of the first node that answers.
pub fn cluster<'a>(nodes: impl IntoIterator<Item = &'a Resource>) -> Result<Value> {
    let mut last = String::from("no nodes");
    for n in nodes {
        match health::http_get(rest(n)?, "/cluster", TIMEOUT) {
            Ok(body) => return serde_json::from_str(&body).context("Patroni's /cluster"),
            Err(e) => last = e,
        }
    }
    bail!("no Patroni node answers ({last})")
}

/// The members Patroni would promote if the leader were lost now, by member name. In
/// synchronous mode it promotes only a member listed as synchronous standby (any other
/// could lack acknowledged commits); in any mode only one whose PostgreSQL runs.
pub fn failover_candidates(cluster: &Value, synchronous_mode: bool) -> Vec<String> {
    let members = cluster["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    members
        .iter()
        .filter(|m| m["role"] != "leader" && matches!(m["state"].as_str(), Some("running" | "streaming")))
        .filter(|m| !synchronous_mode || m["role"] == "sync_standby")
        .filter(|m| m["tags"]["nofailover"] != true)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

/// Why no member could replace the leader now, for `status`; none when one could.
pub fn no_failover_candidate(cluster: &Value, synchronous_mode: bool) -> Option<String> {
    if !failover_candidates(cluster, synchronous_mode).is_empty() {
        return None;
    }
    let members = cluster["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    let leader = members.iter().find(|m| m["role"] == "leader").and_then(|m| m["name"].as_str());
    let standbys: Vec<&str> = members
        .iter()
        .filter(|m| m["role"] != "leader" && matches!(m["state"].as_str(), Some("running" | "streaming")))
        .filter_map(|m| m["name"].as_str())
        .collect();
    Some(match (leader, standbys.as_slice()) {
        (Some(l), []) => format!(
            "{l} leads with no standby running, so losing {l} would leave the cluster without a leader until it returns; \
             bring the lost nodes back with `scalectl up`"
        ),
        (Some(l), catching_up) => format!(
            "{l} leads but no standby is synchronous yet ({} catching up; Patroni promotes only a synchronous standby), \
             so losing {l} now would leave the cluster without a leader until it returns; this passes once a standby \
             has caught up (seconds after a switchover or a node's return), else see `scalectl logs`",
            catching_up.join(", ")
        ),
        (None, _) => "no leader, and no synchronous standby that Patroni may promote; the last leader's data is needed: \
                      bring the lost nodes back with `scalectl up`"
            .to_string(),
    })
}

/// Waits until the cluster has a leader and a failover candidate again; returns the
/// candidate (after a promotion Patroni lists no synchronous standby until one of the
/// others has caught up with the new leader).
pub fn wait_for_failover_candidate(nodes: &[&Resource], synchronous_mode: bool, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match cluster(nodes.iter().copied()) {
            Ok(c) => match failover_candidates(&c, synchronous_mode).into_iter().next() {
                Some(name) if c["members"].as_array().is_some_and(|ms| ms.iter().any(|m| m["role"] == "leader")) => return Ok(name),
                _ => no_failover_candidate(&c, synchronous_mode).unwrap_or_else(|| "no leader yet".into()),
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("no failover candidate after {timeout:?}: {why}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// The node that leads now, waiting up to `timeout` for one to be elected.
pub fn leader<'a>(nodes: &[&'a Resource], timeout: Duration) -> Result<&'a Resource> {
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes {
            if health::http_status(rest(n)?, "/primary", TIMEOUT) == Ok(200) {
                return Ok(n);
            }
        }
        if Instant::now() >= deadline {
            bail!("no PostgreSQL node is the leader; see `scalectl status` and `scalectl logs`");
        }
        sleep(Duration::from_millis(200));
    }
}

/// A planned switchover to `to`, or to the synchronous standby; returns the new leader's
/// member name once it runs as primary.
pub fn switchover(env: &Env, nodes: &[&Resource], to: Option<&str>, timeout: Duration) -> Result<String> {
    let current = leader(nodes, Duration::from_secs(5))?;
    let cluster = cluster(nodes.iter().copied())?;
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    let candidate = match to {
        Some(name) => {
            let name = name.rsplit('/').next().unwrap_or(name);
            if !members.iter().any(|m| m["name"] == name) {
                let names: Vec<_> = members.iter().filter_map(|m| m["name"].as_str()).collect();
                bail!("no node `{name}` in the cluster; it has {}", names.join(", "));
            }
            name.to_string()
        }
        None => members
            .iter()
            .find(|m| m["role"] == "sync_standby")
            .or_else(|| members.iter().find(|m| m["role"] == "replica" && m["state"] == "streaming"))
            .and_then(|m| m["name"].as_str())
            .context("no healthy standby to switch over to")?
            .to_string(),
    };
    if candidate == member_name(current) {
        bail!("{candidate} already leads");
    }
    let body = json!({"leader": member_name(current), "candidate": candidate}).to_string();
    call(env, rest(current)?, "POST", "/switchover", Some(&body))?;
    let target = nodes.iter().find(|n| member_name(n) == candidate).context("candidate is not a known node")?;
    let deadline = Instant::now() + timeout;
    while health::http_status(rest(target)?, "/primary", TIMEOUT) != Ok(200) {
        if Instant::now() >= deadline {
            bail!("{candidate} did not become the leader in {timeout:?}");
        }
        sleep(Duration::from_millis(100));
    }
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{failover_candidates, no_failover_candidate};

    fn cluster(members: &[(&str, &str, &str)]) -> serde_json::Value {
        json!({"members": members.iter().map(|(n, role, state)| json!({"name": n, "role": role, "state": state})).collect::<Vec<_>>()})
    }

    #[test]
    fn only_running_synchronous_standbys_may_replace_the_leader_in_synchronous_mode() {
        let c = cluster(&[("pg-1", "leader", "running"), ("pg-2", "sync_standby", "streaming"), ("pg-3", "replica", "streaming")]);
        assert_eq!(failover_candidates(&c, true), ["pg-2"]);
        assert_eq!(failover_candidates(&c, false), ["pg-2", "pg-3"], "without synchronous mode any running replica may");
        assert_eq!(no_failover_candidate(&c, true), None);
    }

    #[test]
    fn right_after_a_promotion_status_says_there_is_no_candidate_and_why() {
        // Patroni has promoted pg-2 and lists no synchronous standby until one catches up.
        let c = cluster(&[("pg-2", "leader", "running"), ("pg-1", "replica", "starting"), ("pg-3", "replica", "streaming")]);
        let why = no_failover_candidate(&c, true).expect("no candidate");
        assert!(why.starts_with("pg-2 leads but no standby is synchronous yet (pg-3 catching up"), "{why}");
        let alone = cluster(&[("pg-2", "leader", "running"), ("pg-1", "sync_standby", "stopped")]);
        assert!(no_failover_candidate(&alone, true).unwrap().contains("with no standby running"), "a stopped standby is no candidate");
        let none = cluster(&[("pg-1", "replica", "running")]);
        assert!(no_failover_candidate(&none, true).unwrap().starts_with("no leader"));
    }
}
