//! Redis for the shop's cache, rate limits and flash-sale gate. Nothing in it must
//! survive a restart: PostgreSQL holds the truth and the shop rebuilds what it needs.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, secrets, sentinel, spec, templates, tools};

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "redis-server")
}

/// The file of the generated password every client must give.
pub const PASSWORD_FILE: &str = "redis.password";

/// The environment's Redis password, generated on first use.
pub fn password(env: &Env) -> Result<String> {
    secrets::get_or_create(&env.secrets_dir(), PASSWORD_FILE)
}

/// `redis.conf`, which includes `auth.conf` when clients must authenticate: that file
/// holds the password, so it is written beside it but never rendered nor digested.
/// This is the topology the manifest starts from; see [`apply`] for a group that
/// Sentinels watch.
pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::redis(r)?;
    let primary = spec.replica_of.as_deref().map(|id| env.connect_to(id, false)).transpose()?;
    Ok(vec![render(env, r, &spec, primary)?])
}

/// `redis.conf` following `primary` (a primary itself when `None`).
fn render(env: &Env, r: &Resource, spec: &spec::RedisSpec, primary: Option<SocketAddr>) -> Result<(String, String)> {
    let auth = spec.auth.then(|| env.node_dir(r).join("auth.conf"));
    let extra = json!({
        "auth": auth,
        "sentinels": !spec.sentinels.is_empty(),
        "primary": primary.map(|a| json!({"address": a.ip().to_string(), "port": a.port()})),
    });
    templates::render_for(env, r, "redis.conf", templates::REDIS_CONF, extra)
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

/// Starts the node. In a group that Sentinels watch it starts as what they say it is
/// now, not as the manifest began it: after a failover the old primary comes back as a
/// replica of the new one, so there are never two primaries.
pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let spec = spec::redis(r)?;
    let own = d.endpoint()?;
    let primary = match sentinel::current_primary(env, &spec.sentinels, None) {
        Some(now) => (now != own).then_some(now),
        None => spec.replica_of.as_deref().map(|id| env.connect_to(id, false)).transpose()?,
    };
    let mut files = vec![render(env, r, &spec, primary)?];
    if spec.auth {
        // A replica gives its primary the same password (`masterauth`), and asks its own
        // clients for it too, so that it can take over without reconfiguring them. A
        // primary that Sentinels may turn into a replica needs it as well.
        let password = password(env)?;
        let replica = spec.replica_of.is_some() || !spec.sentinels.is_empty();
        let masterauth = if replica { format!("masterauth {password}\n") } else { String::new() };
        files.push(("auth.conf".into(), format!("requirepass {password}\n{masterauth}")));
    }
    let cmd = server(&d.paths().dir.join("redis.conf"))?;
    d.keep_private()?;
    d.start(cmd, &files, &[own], true)?;
    Ok(())
}

/// `redis-server CONFIG`: a cache node, a Sentinel (with `--sentinel`) or the broker.
pub fn server(config: &std::path::Path) -> Result<Command> {
    let mut cmd = Command::new(tools::find("redis-server").context("`redis-server` not found; install it with `apt-get install redis-server`")?);
    cmd.arg(config);
    Ok(cmd)
}

/// Sends one inline command (after the password, when Redis wants it) and returns the
/// reply.
pub fn command(env: &Env, r: &Resource, line: &str) -> Result<String, String> {
    let addr = SocketAddr::from((r.address.ok_or("redis without an address")?, r.port.unwrap_or(6379)));
    let auth = match spec::redis(r).map_err(|e| e.to_string())?.auth {
        true => Some(password(env).map_err(|e| format!("{e:#}"))?),
        false => None,
    };
    command_at(addr, auth.as_deref(), line)
}

/// One inline command to the Redis or Sentinel at `addr`, after `AUTH password` when
/// given; the reply. Reads exactly the replies asked for (Sentinel knows no `QUIT`).
pub fn command_at(addr: SocketAddr, password: Option<&str>, line: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    if let Some(password) = password {
        write!(s, "AUTH {password}\r\n").map_err(|e| e.to_string())?;
    }
    write!(s, "{line}\r\n").map_err(|e| e.to_string())?;
    let wanted = if password.is_some() { 2 } else { 1 };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let ends = loop {
        let ends = replies(&buf);
        if ends.len() >= wanted {
            break ends;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("{addr} closed the connection")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    };
    if password.is_some() {
        // The first reply is AUTH's: `+OK`, or why not.
        let (first, rest) = buf.split_at(ends[0]);
        let first = String::from_utf8_lossy(first);
        if first.trim_end() != "+OK" {
            return Err(format!("{addr} refused the password: {}", first.trim_end()));
        }
        return Ok(String::from_utf8_lossy(rest).into_owned());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Where each complete RESP reply in `buf` ends, in order.
fn replies(buf: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while let Some(end) = reply_end(buf, at) {
        ends.push(end);
        at = end;
    }
    ends
}

/// The end of the RESP reply starting at `at`, when all of it is in `buf`.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(buf.get(at + 1..line_end)?).ok()?;
    let after = line_end + 2;
    match buf.get(at)? {
        b'+' | b'-' | b':' => Some(after),
        b'$' => {
            let len: i64 = head.parse().ok()?;
            if len < 0 {
                return Some(after);
            }
            let end = after + len as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' => {
            let n: i64 = head.parse().ok()?;
            (0..n.max(0)).try_fold(after, |pos, _| reply_end(buf, pos))
        }
        _ => None,
    }
}

/// A primary is ready when `INFO replication` says it is one; a replica when its link to
/// the primary is up and the first full copy has arrived, so that `up` returns with a
/// warm replica. In a group that Sentinels watch, a node is whichever of the two it is
/// now.
pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let watched = spec::redis(r).is_ok_and(|s| !s.sentinels.is_empty());
    // Where no Sentinel moves roles, the node must be what the manifest made it.
    let must_be_replica = !watched && is_replica(r);
    Ok(daemon(env, r).check(|| {
        let info = command(env, r, "INFO replication")?;
        match (is_primary(&info), must_be_replica) {
            (true, false) => Ok(()),
            (false, false) if !watched => Err(format!("not a primary (role {})", info_field(&info, "role").unwrap_or("unknown"))),
            _ => replica_state(&info),
        }
    }))
}

/// Whether `r` serves the shop's writes now: in a group that Sentinels watch, whether
/// it answers as a primary (a node that does not answer serves nothing); else whether
/// the manifest made it one.
pub fn serves_writes(env: &Env, r: &Resource) -> bool {
    let Ok(spec) = spec::redis(r) else { return false };
    if spec.sentinels.is_empty() {
        return spec.replica_of.is_none();
    }
    says_primary(env, r) == Some(true)
}

/// Whether `r` answers `INFO replication` as a primary; `None` when it does not answer.
pub fn says_primary(env: &Env, r: &Resource) -> Option<bool> {
    command(env, r, "INFO replication").ok().map(|info| is_primary(&info))
}

/// Whether an `INFO replication` reply is a primary's.
fn is_primary(info: &str) -> bool {
    info_field(info, "role") == Some("master")
}

/// Field `name` of an `INFO` reply (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

/// Whether `r` is a replica (it follows another Redis) rather than a primary.
pub fn is_replica(r: &Resource) -> bool {
    spec::redis(r).is_ok_and(|s| s.replica_of.is_some())
}

/// Whether `INFO replication` shows a replica in sync: `Ok` when its link is up and no
/// full copy is under way, else what it is waiting for.
pub fn replica_state(info: &str) -> Result<(), String> {
    let field = |name: &str| info_field(info, name);
    if field("role") != Some("slave") {
        return Err(format!("not a replica (role {})", field("role").unwrap_or("unknown")));
    }
    match (field("master_link_status"), field("master_sync_in_progress")) {
        (Some("up"), Some("0") | None) => Ok(()),
        (Some("up"), _) => Err("copying the primary's data".into()),
        (link, _) => Err(format!("link to the primary is {}", link.unwrap_or("unknown"))),
    }
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}

#[cfg(test)]
mod tests {
    use super::{replica_state, replies};

    #[test]
    fn replies_are_counted_only_when_complete() {
        assert_eq!(replies(b"+OK\r\n-NOQUORUM 1 usable\r\n"), vec![5, 25]);
        let bulk = b"+OK\r\n$11\r\nrole:master\r\n";
        assert_eq!(replies(bulk), vec![5, bulk.len()]);
        assert_eq!(replies(&bulk[..bulk.len() - 3]), vec![5], "a bulk string cut short is not a reply yet");
        let array = b"*2\r\n$10\r\n127.5.1.30\r\n$4\r\n6379\r\n";
        assert_eq!(replies(array), vec![array.len()]);
        assert_eq!(replies(b"*-1\r\n"), vec![5], "a null array");
        assert_eq!(replies(b"*2\r\n$1\r\na\r\n"), Vec::<usize>::new(), "an array missing an element");
    }

    #[test]
    fn a_replica_is_ready_only_with_its_link_up_and_no_copy_under_way() {
        let up = "# Replication\r\nrole:slave\r\nmaster_host:127.5.1.22\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n";
        assert_eq!(replica_state(up), Ok(()));
        let down = up.replace("master_link_status:up", "master_link_status:down");
        assert_eq!(replica_state(&down), Err("link to the primary is down".into()));
        let copying = up.replace("master_sync_in_progress:0", "master_sync_in_progress:1");
        assert_eq!(replica_state(&copying), Err("copying the primary's data".into()));
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n";
        assert_eq!(replica_state(primary), Err("not a replica (role master)".into()));
    }
}
