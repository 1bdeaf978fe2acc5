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
use crate::{Env, templates, tools};

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "redis-server")
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    Ok(vec![templates::render_for(env, r, "redis.conf", templates::REDIS_CONF, json!({}))?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let files = config_files(env, r)?;
    let mut cmd = Command::new(tools::find("redis-server").context("`redis-server` not found; install it with `apt-get install redis-server`")?);
    cmd.arg(d.paths().dir.join("redis.conf"));
    d.start(cmd, &files, &[d.endpoint()?], true)?;
    Ok(())
}

/// Sends one inline command and returns the reply.
pub fn command(r: &Resource, line: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from((r.address.ok_or("redis without an address")?, r.port.unwrap_or(6379)));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    write!(s, "{line}\r\nQUIT\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(daemon(env, r).check(|| match command(r, "PING") {
        Ok(reply) if reply.starts_with("+PONG") => Ok(()),
        Ok(reply) => Err(format!("PING answered {}", reply.lines().next().unwrap_or(""))),
        Err(e) => Err(e),
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
