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
    let auth = spec::redis(r)?.auth.then(|| env.node_dir(r).join("auth.conf"));
    Ok(vec![templates::render_for(env, r, "redis.conf", templates::REDIS_CONF, json!({"auth": auth}))?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let mut files = config_files(env, r)?;
    if spec::redis(r)?.auth {
        files.push(("auth.conf".into(), format!("requirepass {}\n", password(env)?)));
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

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(daemon(env, r).check(|| match command(env, r, "PING") {
        Ok(reply) if reply.starts_with("+PONG") => Ok(()),
        Ok(reply) => Err(format!("PING answered {}", reply.lines().next().unwrap_or(""))),
        Err(e) => Err(e),
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
