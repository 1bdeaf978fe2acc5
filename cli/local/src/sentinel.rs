//! Redis Sentinel: three per region where Redis has replicas. Together they watch the
//! primary, promote a replica when it is lost (two must agree), turn the old primary
//! into a replica when it returns, and tell the shop where the primary is now.
//!
//! Sentinel owns the group's topology once it runs: it rewrites its own config file as
//! it learns, and the Redis nodes' roles move with failovers. So what `plan` compares
//! (the rendered files, [`config_files`]) is the topology the manifest starts from,
//! and what a (re)start writes is that file pointed at the primary the running
//! Sentinels know ([`current_primary`]); a failover is never a planned change.

use std::net::SocketAddr;

use anyhow::Result;
use scalectl_core::plan::Observed;
use scalectl_core::{Readiness, Resource, ResourceKind};
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, redis, spec, templates};

/// The name the Sentinels know the group's primary by; clients ask for it.
pub const MASTER_NAME: &str = "shop";

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "redis-server")
}

/// `sentinel.conf` aimed at `primary`. The password lines are added at start, never
/// rendered.
fn render(env: &Env, r: &Resource, primary: SocketAddr) -> Result<(String, String)> {
    let extra = json!({"master": MASTER_NAME, "primary": {"address": primary.ip().to_string(), "port": primary.port()}});
    templates::render_for(env, r, "sentinel.conf", templates::SENTINEL_CONF, extra)
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::sentinel(r)?;
    Ok(vec![render(env, r, env.connect_to(&spec.monitors, false)?)?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

/// A Sentinel's id, derived from the environment and the resource: a restarted
/// Sentinel keeps it, so its peers never count a stale copy of it among the living.
fn my_id(env: &Env, r: &Resource) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(format!("{}/{}", env.name, r.id))[..20])
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let spec = spec::sentinel(r)?;
    // Stopped first: a running Sentinel rewrites its file, and would overwrite this one.
    d.paths().stop(d.program)?;
    let primary = match current_primary(env, &group(env, &spec.monitors), Some(&r.id)) {
        Some(addr) => addr,
        None => env.connect_to(&spec.monitors, false)?,
    };
    let (name, mut text) = render(env, r, primary)?;
    let password = redis::password(env)?;
    // Clients and peers give the password; the Sentinel gives it to Redis and its peers.
    text.push_str(&format!(
        "requirepass {password}\nsentinel auth-pass {MASTER_NAME} {password}\nsentinel sentinel-pass {password}\nsentinel myid {}\n",
        my_id(env, r)
    ));
    // The epochs it voted and failed over in: a restarted Sentinel that forgot them could
    // vote twice in one election.
    let file = d.paths().dir.join(&name);
    text.push_str(&epochs(&std::fs::read_to_string(&file).unwrap_or_default()));
    let mut cmd = redis::server(&file)?;
    cmd.arg("--sentinel");
    d.keep_private()?;
    d.start(cmd, &[(name, text)], &[d.endpoint()?], true)?;
    Ok(())
}

/// The epoch lines of a config file Sentinel rewrote.
fn epochs(conf: &str) -> String {
    conf.lines()
        .filter(|l| ["sentinel current-epoch ", "sentinel config-epoch ", "sentinel leader-epoch "].iter().any(|p| l.starts_with(p)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Ready when it answers and a majority of the group's Sentinels can authorize a
/// failover (`SENTINEL CKQUORUM`): only then does `up` count Redis as highly available.
pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let addr = daemon(env, r).endpoint()?;
    let password = redis::password(env)?;
    Ok(daemon(env, r).check(|| {
        let reply = redis::command_at(addr, Some(&password), &format!("SENTINEL CKQUORUM {MASTER_NAME}"))?;
        match reply.lines().next() {
            Some(line) if line.starts_with("+OK") => Ok(()),
            Some(line) => Err(line.trim_start_matches(['-', '+']).to_string()),
            None => Err("no answer to SENTINEL CKQUORUM".into()),
        }
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}

/// The Sentinels of the environment that watch the group `primary` starts with.
pub fn group(env: &Env, primary: &str) -> Vec<String> {
    env.graph
        .resources
        .iter()
        .filter(|s| s.kind == ResourceKind::RedisSentinel && spec::sentinel(s).is_ok_and(|s| s.monitors == primary))
        .map(|s| s.id.clone())
        .collect()
}

/// Where the primary of the group the Sentinels `group` watch is now: what the first of
/// them (but `except`, the one being restarted) that answers says; when none answers,
/// the node of the group that says it is a primary; `None` when neither knows (nothing
/// runs yet): then the manifest's topology holds. Never the manifest's guess while a
/// node knows better, so that a node or Sentinel restarted while the Sentinels are down
/// does not make a second primary.
pub fn current_primary(env: &Env, group: &[String], except: Option<&str>) -> Option<SocketAddr> {
    if group.is_empty() {
        return None;
    }
    let password = redis::password(env).ok()?;
    let said = group.iter().filter(|id| Some(id.as_str()) != except).find_map(|id| {
        let addr = env.connect_to(id, false).ok()?;
        let reply = redis::command_at(addr, Some(&password), &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER_NAME}")).ok()?;
        parse_address(&reply)
    });
    said.or_else(|| {
        let node = watched(env, group).into_iter().find(|n| redis::says_primary(env, n) == Some(true))?;
        env.connect_to(&node.id, false).ok()
    })
}

/// The Redis nodes the Sentinels `group` watch.
fn watched<'a>(env: &'a Env, group: &[String]) -> Vec<&'a Resource> {
    env.graph.resources.iter().filter(|n| n.kind == ResourceKind::Redis && spec::redis(n).is_ok_and(|s| s.sentinels == group)).collect()
}

/// The address in a reply to `SENTINEL GET-MASTER-ADDR-BY-NAME`: an array of the host
/// and the port (`*2`, `$len`, host, `$len`, port), or a null array when it knows none.
fn parse_address(reply: &str) -> Option<SocketAddr> {
    let mut values = reply.lines().filter(|l| !l.starts_with(['*', '$']));
    let host = values.next()?.trim().parse::<std::net::IpAddr>().ok()?;
    let port = values.next()?.trim().parse::<u16>().ok()?;
    Some(SocketAddr::from((host, port)))
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn the_primary_is_read_from_the_sentinel_reply() {
        let reply = "*2\r\n$10\r\n127.5.1.30\r\n$4\r\n6379\r\n";
        assert_eq!(parse_address(reply), Some("127.5.1.30:6379".parse().unwrap()));
        assert_eq!(parse_address("*-1\r\n"), None, "a Sentinel that knows no primary");
        assert_eq!(parse_address("-NOAUTH Authentication required.\r\n"), None);
    }
}
