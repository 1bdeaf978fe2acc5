//! Our own service: `shop migrate` as a task, `shop serve` and `shop worker` as detached
//! processes wired to the environment's database through environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Readiness;
use scalectl_core::manifest::PoolMode;
use scalectl_core::plan::Observed;
use scalectl_core::{Resource, ResourceKind};

use crate::process::{self, Paths};
use crate::spec::{self, ShopSpec, WorkerSpec};
use crate::{Env, fsutil, health, postgres, secrets, tools};

fn bin() -> Result<std::path::PathBuf> {
    tools::shop_binary().context("the `shop` binary was not found beside scalectl or in PATH; build it with `cargo build --release --workspace`")
}

/// The path prefixes each role serves, as the shop binary itself reports them (`shop
/// routes -o json`), so the edge's routing and the shop cannot drift apart.
pub fn route_table() -> Result<BTreeMap<String, Vec<String>>> {
    #[derive(serde::Deserialize)]
    struct Table {
        roles: BTreeMap<String, Vec<String>>,
    }
    let bin = bin()?;
    let out = Command::new(&bin).args(["routes", "-o", "json"]).output().with_context(|| format!("running {} routes", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "`{} routes -o json` failed ({}): {}; is it older than scalectl? rebuild both with `cargo build --release --workspace`",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let table: Table = serde_json::from_slice(&out.stdout).with_context(|| format!("reading the route table of {}", bin.display()))?;
    Ok(table.roles)
}

fn paths(env: &Env, r: &Resource) -> Paths {
    Paths { dir: env.node_dir(r) }
}

/// The URL of the shop's database through `via`: a server, the database router or the
/// pooler, whichever the resource names.
fn url_via(env: &Env, via: &str, database: &str, read: bool) -> Result<String> {
    let password = secrets::get_or_create(&env.secrets_dir(), &postgres::password_file("shop"))?;
    Ok(format!("postgres://shop:{password}@{}/{database}", env.connect_to(via, read)?))
}

/// The shop binary's size and modification time, hashed: it changes with every build
/// and costs one `stat`, where hashing the contents would read tens of megabytes.
pub fn program_digest() -> Option<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(tools::shop_binary()?).ok()?;
    let mut h = sha2::Sha256::new();
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    Some(hex::encode(&h.finalize()[..6]))
}

/// The shop binary with `args` and what every shop command reads from its environment.
fn command(env: &Env, args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(bin()?);
    cmd.args(args).env("SHOP_LOG_FORMAT", "json").env("SHOP_REDIS_PREFIX", format!("{}:", env.name));
    Ok(cmd)
}

/// A long-running process's connections: writes through `writes_via`, and Redis.
fn wire(cmd: &mut Command, env: &Env, writes_via: &str, redis: Option<&str>, redis_auth: bool, sentinels: &[String]) -> Result<()> {
    cmd.env("DATABASE_URL", url_via(env, writes_via, "shop", false)?);
    let pooler = env.resource(writes_via)?;
    if pooler.kind == ResourceKind::Pgbouncer && spec::pgbouncer(pooler)?.pool_mode != PoolMode::Session {
        // Transaction pooling cannot keep prepared statements; the shop adapts.
        cmd.env("SHOP_DB_POOLER", "transaction");
    }
    if let Some(redis) = redis {
        let password = if redis_auth { format!(":{}@", crate::redis::password(env)?) } else { String::new() };
        // Where Sentinels watch Redis, the shop asks them where the primary is (at start
        // and whenever Redis fails it); the URL gives the password and a first guess.
        let primary = match crate::sentinel::current_primary(env, sentinels, None) {
            Some(now) => now,
            None => env.connect_to(redis, false)?,
        };
        cmd.env("REDIS_URL", format!("redis://{password}{primary}/"));
        if !sentinels.is_empty() {
            let addresses: Vec<String> = sentinels.iter().map(|id| env.connect_to(id, false).map(|a| a.to_string())).collect::<Result<_>>()?;
            cmd.env("SHOP_REDIS_SENTINELS", addresses.join(",")).env("SHOP_REDIS_SENTINEL_MASTER", crate::sentinel::MASTER_NAME);
        }
    }
    Ok(())
}

/// `shop serve` with its roles, connections, pool size and rate limits.
fn serve(env: &Env, s: &ShopSpec) -> Result<Command> {
    let mut cmd = command(env, &["serve", "--roles", &s.roles])?;
    wire(&mut cmd, env, &s.writes_via, s.redis.as_deref(), s.redis_auth, &s.redis_sentinels)?;
    if s.reads_via != s.writes_via || s.read_database != "shop" {
        cmd.env("READ_DATABASE_URL", url_via(env, &s.reads_via, &s.read_database, true)?);
    }
    cmd.env("SHOP_DB_POOL_SIZE", s.db_pool_size.to_string());
    if let Some(n) = threads(s.pool_replicas) {
        cmd.env("SHOP_THREADS", n.to_string());
    }
    for (rate, var) in [(&s.rate_login, "SHOP_RATE_LOGIN"), (&s.rate_register, "SHOP_RATE_REGISTER"), (&s.rate_search, "SHOP_RATE_SEARCH")] {
        cmd.env(var, if rate == "off" { "0" } else { rate });
    }
    Ok(cmd)
}

/// Threads for one of a pool's `replicas` on this machine: its part of the cores, at
/// least one; `None` (the shop's default, one per core) for a pool of one. A pool's
/// replicas are busy together, and more threads than cores between them only add
/// context switches and work stealing: at level 3 (two shops, two cores) one thread
/// each cut the flash sale's losers' p99 by about a quarter (BENCHMARKS.md, "The flash
/// sale's losers at level 3"). Pools of different roles are not counted together: they
/// rarely peak at once, and an idle pool's threads cost nothing.
pub fn threads(replicas: u32) -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (replicas > 1).then(|| (cores / replicas as usize).max(1))
}

/// `shop worker`, which also keeps order partitions made ahead.
fn worker(env: &Env, r: &Resource, s: &WorkerSpec) -> Result<Command> {
    let mut cmd = command(env, &["worker"])?;
    wire(&mut cmd, env, &s.writes_via, s.redis.as_deref(), s.redis_auth, &s.redis_sentinels)?;
    if s.order_partitions_premake > 0 {
        cmd.env("SHOP_ORDER_PARTITIONS_PREMAKE", s.order_partitions_premake.to_string());
    }
    if let Some(broker) = &s.broker {
        // The consumer name is the resource's, so a restarted worker settles at once
        // what it held. The worker sizes its database pool to its consumers.
        cmd.env("SHOP_BROKER_URL", crate::broker::url(env, broker)?)
            .env("SHOP_BROKER_POOLS", &s.broker_pools)
            .env("SHOP_BROKER_CONSUMER", &r.id)
            .env("SHOP_BROKER_PREFIX", format!("{}:", env.name));
    }
    if s.max_attempts > 0 {
        cmd.env("SHOP_WORKER_MAX_ATTEMPTS", s.max_attempts.to_string());
    }
    Ok(cmd)
}

/// `shop migrate`, straight to the server that takes writes (migrations hold a session
/// lock, which a transaction pooler cannot keep), then, when the level partitions
/// orders, `shop partition-orders`. Both are safe to run again.
pub fn migrate(env: &Env, r: &Resource) -> Result<()> {
    let spec = spec::migration(r)?;
    let database = env.resource(&spec.database)?;
    let server = postgres::primary(env, &database.depends_on)?;
    let url = postgres::url(env, server, "shop", "shop")?;
    let mut cmd = command(env, &["migrate"])?;
    cmd.env("DATABASE_URL", &url);
    let mut out = process::run(cmd, "shop migrate")?;
    if spec.order_partitions_premake > 0 {
        let mut cmd = command(env, &["partition-orders", "--premake", &spec.order_partitions_premake.to_string()])?;
        cmd.env("DATABASE_URL", &url);
        out.push_str(&process::run(cmd, "shop partition-orders")?);
    }
    let log = env.node_dir(r).with_extension("log");
    fsutil::write_atomic(&log, out.as_bytes(), 0o644)
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    match process::running_pid(&paths(env, r).pid(), "shop") {
        Some(pid) => Observed::Running { pid: Some(pid) },
        None => Observed::Down { reason: "process is not running".into() },
    }
}

/// (Re)starts the process with its current definition.
pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let p = paths(env, r);
    std::fs::create_dir_all(&p.dir)?;
    p.stop("shop")?;
    let mut groups: Vec<std::path::PathBuf> = crate::cgroup::procs_file(env, r).into_iter().collect();
    let cmd = match r.kind {
        ResourceKind::Shop => {
            let addr = endpoint(r)?;
            if health::port_taken(addr) {
                return Err(crate::PortTaken(addr).into());
            }
            let spec = spec::shop(r)?;
            groups.extend(crate::limits::groups(env, r, &crate::limits::Asked { cpu: spec.cpu, cpu_limit: spec.cpu_limit, memory: spec.memory })?);
            let mut cmd = serve(env, &spec)?;
            cmd.env("SHOP_BIND", addr.to_string());
            cmd
        }
        _ => worker(env, r, &spec::worker(r)?)?,
    };
    let cmd = crate::user::launch(cmd, None, groups);
    process::spawn_detached(cmd, &p.log(), &p.pid())?;
    Ok(())
}

fn endpoint(r: &Resource) -> Result<SocketAddr> {
    Ok(SocketAddr::from((r.address.context("shop without an address")?, r.port.context("shop without a port")?)))
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let p = paths(env, r);
    if let Some(failed) = crate::daemon::exited(r, &p) {
        return Ok(failed);
    }
    Ok(match r.kind {
        ResourceKind::Shop => match health::http_status(endpoint(r)?, "/readyz", Duration::from_secs(1)) {
            Ok(200) => Readiness::Ready,
            Ok(code) => Readiness::Pending(format!("/readyz answered {code}")),
            Err(e) => Readiness::Pending(e),
        },
        // A worker is ready once it has stayed up past its start.
        _ if started_ago(&p.pid()).is_some_and(|d| d >= Duration::from_millis(500)) => Readiness::Ready,
        _ => Readiness::Pending("just started".into()),
    })
}

/// How long ago the pid file was written, that is, the process started.
fn started_ago(pid_file: &std::path::Path) -> Option<Duration> {
    std::fs::metadata(pid_file).ok()?.modified().ok()?.elapsed().ok()
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    paths(env, r).destroy("shop", keep_data)?;
    crate::cgroup::remove(env, r);
    crate::limits::remove(env, r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::threads;

    #[test]
    fn the_replicas_of_a_pool_share_the_machines_cores() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(threads(1), None, "a pool of one keeps the default, one thread per core");
        assert_eq!(threads(2), Some((cores / 2).max(1)));
        assert_eq!(threads(1000), Some(1), "never none");
    }
}
