//! etcd, where Patroni keeps its leader lock: one member per environment on the local
//! target, on its own loopback address.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;

use crate::daemon::Daemon;
use crate::{Env, health, tools};

/// etcd's peer port, next to the client port.
const PEER_PORT: u16 = 2380;

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "etcd")
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let d = daemon(env, r);
    let client = d.endpoint()?;
    let peer = SocketAddr::from((client.ip(), PEER_PORT));
    let name = r.id.replace('/', "-");
    let mut cmd = Command::new(tools::find("etcd").context("`etcd` not found; install it with `apt-get install etcd-server`")?);
    cmd.arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", d.paths().dir.join("data").display()))
        .arg(format!("--listen-client-urls=http://{client}"))
        .arg(format!("--advertise-client-urls=http://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster={name}=http://{peer}"))
        .arg(format!("--initial-cluster-token=scalectl-{}", env.name))
        .arg("--initial-cluster-state=new")
        .arg("--log-level=warn");
    d.start(cmd, &[], &[client, peer], true)?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let d = daemon(env, r);
    let addr = d.endpoint()?;
    Ok(d.check(|| {
        let body = health::http_get(addr, "/health", Duration::from_secs(1))?;
        if body.contains("\"true\"") { Ok(()) } else { Err(format!("etcd reports {body}")) }
    }))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
