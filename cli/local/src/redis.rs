//! Redis for the shop's cache, rate limits and flash-sale gate. Nothing in it must
//! survive a restart: PostgreSQL holds the truth and the shop rebuilds what it needs.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, secrets, spec, templates, tools};

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
pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::redis(r)?;
    let auth = spec.auth.then(|| env.node_dir(r).join("auth.conf"));
    let primary = spec.replica_of.as_deref().map(|id| env.connect_to(id, false)).transpose()?;
    let extra = json!({"auth": auth, "primary": primary.map(|a| json!({"address": a.ip().to_string(), "port": a.port()}))});
    Ok(vec![templates::render_for(env, r, "redis.conf", templates::REDIS_CONF, extra)?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let mut files = config_files(env, r)?;
    let spec = spec::redis(r)?;
    if spec.auth {
        // A replica gives its primary the same password (`masterauth`), and asks its own
        // clients for it too, so that it can take over without reconfiguring them.
        let password = password(env)?;
        let masterauth = if spec.replica_of.is_some() { format!("masterauth {password}\n") } else { String::new() };
        files.push(("auth.conf".into(), format!("requirepass {password}\n{masterauth}")));
    }
    let mut cmd = Command::new(tools::find("redis-server").context("`redis-server` not found; install it with `apt-get install redis-server`")?);
    cmd.arg(d.paths().dir.join("redis.conf"));
    d.start(cmd, &files, &[d.endpoint()?], true)?;
    Ok(())
}

/// Sends one inline command (after the password, when Redis wants it) and returns the
/// reply.
pub fn command(env: &Env, r: &Resource, line: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from((r.address.ok_or("redis without an address")?, r.port.unwrap_or(6379)));
    let auth = match spec::redis(r).map_err(|e| e.to_string())?.auth {
        true => Some(password(env).map_err(|e| format!("{e:#}"))?),
        false => None,
    };
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    if let Some(password) = &auth {
        write!(s, "AUTH {password}\r\n").map_err(|e| e.to_string())?;
    }
    write!(s, "{line}\r\nQUIT\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if auth.is_some() {
        // The first reply is AUTH's: `+OK`, or why not.
        let (first, rest) = out.split_once("\r\n").unwrap_or((&out, ""));
        if first != "+OK" {
            return Err(format!("redis refused the password: {first}"));
        }
        return Ok(rest.to_string());
    }
    Ok(out)
}

/// A primary is ready when it answers PING; a replica when its link to the primary is
/// up and the first full copy has arrived, so that `up` returns with a warm replica.
pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(daemon(env, r).check(|| {
        if !is_replica(r) {
            return match command(env, r, "PING") {
                Ok(reply) if reply.starts_with("+PONG") => Ok(()),
                Ok(reply) => Err(format!("PING answered {}", reply.lines().next().unwrap_or(""))),
                Err(e) => Err(e),
            };
        }
        let info = command(env, r, "INFO replication")?;
        replica_state(&info)
    }))
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
    use super::replica_state;

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
