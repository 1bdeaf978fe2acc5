//! The message broker (level 5 and up): order events as Redis Streams on a Redis server
//! of its own, which the workers relay the outbox to and consume by priority (the shop's
//! `src/broker.rs` says why Redis Streams and how events flow).
//!
//! Unlike the cache, it must lose nothing it acknowledged: its append-only file is synced
//! before every reply and replayed at start, it never evicts (once full it refuses new
//! entries, whose events wait in the outbox), and `down --keep-data` keeps its directory
//! like a database's. It has no exporter: what it holds is also in the outbox, which the
//! shops' metrics and `scalectl queue status` report.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use scalectl_core::plan::Observed;
use scalectl_core::{Readiness, Resource};
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, redis, secrets, templates};

/// The file of the generated password every client must give: the broker's own, not the
/// cache's, since what may reach one need not reach the other.
pub const PASSWORD_FILE: &str = "broker.password";

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "redis-server")
}

pub fn password(env: &Env) -> Result<String> {
    secrets::get_or_create(&env.secrets_dir(), PASSWORD_FILE)
}

/// `broker.conf`, which includes `auth.conf` (the password, never rendered).
pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    Ok(vec![templates::render_for(env, r, "broker.conf", templates::BROKER_CONF, json!({"auth": env.node_dir(r).join("auth.conf")}))?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let mut files = config_files(env, r)?;
    files.push(("auth.conf".into(), format!("requirepass {}\n", password(env)?)));
    let cmd = redis::server(&d.paths().dir.join("broker.conf"))?;
    // Redis writes its append-only files here with its own modes.
    d.keep_private()?;
    d.start(cmd, &files, &[address(r)?], true)?;
    Ok(())
}

fn address(r: &Resource) -> Result<SocketAddr> {
    Ok(SocketAddr::from((r.address.context("the broker has no address")?, r.port.context("the broker has no port")?)))
}

/// What a worker connects with: `redis://:PASSWORD@ADDRESS:PORT/`.
pub fn url(env: &Env, id: &str) -> Result<String> {
    Ok(format!("redis://:{}@{}/", password(env)?, env.connect_to(id, false)?))
}

/// One inline command, after the password; the reply.
pub fn command(env: &Env, r: &Resource, line: &str) -> Result<String, String> {
    let password = password(env).map_err(|e| format!("{e:#}"))?;
    redis::command_at(address(r).map_err(|e| e.to_string())?, Some(&password), line)
}

/// Ready when it answers `PING`: not while it replays its append-only file (`LOADING`).
pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(daemon(env, r).check(|| {
        let reply = command(env, r, "PING")?;
        match reply.trim_end() {
            "+PONG" => Ok(()),
            other => Err(format!("PING answered {other}")),
        }
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
