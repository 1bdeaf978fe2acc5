//! etcd, where Patroni keeps its leader lock: one cluster per database cluster, with a
//! member in each region the database cluster spans (one in a single region), each on
//! its own loopback address.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;

use crate::daemon::Daemon;
use crate::{Env, health, spec, tools};

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
    let name = member_name(r);
    let spec = spec::etcd(r)?;
    let mut initial = Vec::new();
    for id in if spec.peers.is_empty() { vec![r.id.clone()] } else { spec.peers.clone() } {
        let member = env.resource(&id)?;
        let address = member.address.with_context(|| format!("{id} has no address"))?;
        initial.push(format!("{}=http://{}", member_name(member), SocketAddr::from((address, PEER_PORT))));
    }
    let mut cmd = Command::new(tools::find("etcd").context("`etcd` not found; install it with `apt-get install etcd-server`")?);
    cmd.arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", d.paths().dir.join("data").display()))
        .arg(format!("--listen-client-urls=http://{client}"))
        .arg(format!("--advertise-client-urls=http://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster={}", initial.join(",")))
        .arg(format!("--initial-cluster-token=scalectl-{}", env.name))
        .arg("--initial-cluster-state=new")
        .arg("--log-level=warn");
    d.start(cmd, &[], &[client, peer], true)?;
    Ok(())
}

fn member_name(r: &Resource) -> String {
    r.id.replace('/', "-")
}

/// The client addresses of the etcd cluster that `id` is a member of, as Patroni's
/// `etcd3.hosts` takes them (`host:port,host:port`), `id`'s own first.
pub fn client_urls(env: &Env, id: &str) -> Result<String> {
    let peers = spec::etcd(env.resource(id)?)?.peers;
    let mut ids = vec![id.to_string()];
    ids.extend(peers.into_iter().filter(|p| p != id));
    let urls: Vec<String> = ids.iter().map(|p| env.connect_to(p, false).map(|a| a.to_string())).collect::<Result<_>>()?;
    Ok(urls.join(","))
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
