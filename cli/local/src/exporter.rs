//! Prometheus exporters from the distribution's packages: one for each PostgreSQL node,
//! Redis, and the machine itself. (Debian's PgBouncer exporter, 1.7, cannot read
//! PgBouncer 1.18's statistics, so pools are reported by `status` and the shop.) Optional like Prometheus: a missing
//! exporter is reported and skipped, not fatal. (HAProxy and Patroni serve their own
//! metrics.)

use std::process::Command;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::Observed;

use crate::daemon::Daemon;
use crate::spec::{self, Exports};
use crate::{Env, postgres, tools};

/// The package's program for what `r` exports.
fn program(r: &Resource) -> Result<&'static str> {
    Ok(match spec::exporter(r)?.exports {
        Exports::Postgres => "prometheus-postgres-exporter",
        Exports::Redis => "prometheus-redis-exporter",
        Exports::Node => "prometheus-node-exporter",
    })
}

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Result<Daemon<'a>> {
    Ok(Daemon::new(env, r, program(r)?))
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    match program(r) {
        Ok(p) if tools::find(p).is_some() => Daemon::new(env, r, p).observe(),
        _ => Observed::Unknown,
    }
}

pub fn apply(env: &Env, r: &Resource) -> Result<Option<String>> {
    let name = program(r)?;
    let Some(bin) = tools::find(name) else {
        return Ok(Some(format!("{name} is not installed, so these metrics are not collected; install it with `apt-get install {name}`")));
    };
    let d = daemon(env, r)?;
    let listen = d.endpoint()?;
    let mut cmd = Command::new(bin);
    let spec = spec::exporter(r)?;
    let of = spec.of.as_deref().map(|id| env.resource(id)).transpose()?;
    let mut unprivileged = false;
    match spec.exports {
        Exports::Postgres => {
            let node = of.context("postgres exporter without its node")?;
            let socket = postgres::paths(env, node).socket_dir;
            // Over the node's private socket as the server user: no password needed.
            cmd.arg(format!("--web.listen-address={listen}")).env(
                "DATA_SOURCE_NAME",
                format!("host={} port={} user=postgres dbname=postgres sslmode=disable", socket.display(), node.port.unwrap_or(5432)),
            );
            unprivileged = true;
        }
        Exports::Redis => {
            let redis = of.context("redis exporter without its server")?;
            let addr = redis.address.context("redis without an address")?;
            cmd.arg(format!("-web.listen-address={listen}")).arg(format!("-redis.addr=redis://{addr}:{}", redis.port.unwrap_or(6379)));
            if spec.auth {
                // In the environment, which only the exporter's user can read, not argv.
                cmd.env("REDIS_PASSWORD", crate::redis::password(env)?);
            }
        }
        Exports::Node => {
            cmd.arg(format!("--web.listen-address={listen}"));
        }
    }
    d.start(cmd, &[], &[listen], unprivileged)?;
    Ok(None)
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    if !matches!(observe(env, r), Observed::Running { .. } | Observed::Down { .. }) {
        return Ok(Readiness::Ready);
    }
    let d = daemon(env, r)?;
    Ok(d.check_http(d.endpoint()?, "/metrics"))
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r)?.destroy(keep_data)
}
