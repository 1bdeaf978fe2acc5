//! Finding the programs the local target runs, and saying how to install missing ones
//! (`scalectl doctor`, and `up` before it starts anything).

use std::env;
use std::path::{Path, PathBuf};

use scalectl_core::ResourceKind;

/// A program some resource kind needs.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    /// Debian package that provides it (or how to build it).
    pub install: &'static str,
    /// Optional programs are skipped with a note when missing.
    pub optional: bool,
}

const fn prog(name: &'static str, install: &'static str) -> Program {
    Program { name, install, optional: false }
}

/// What each kind of resource needs on this machine.
pub fn requirements(kind: ResourceKind) -> Vec<Program> {
    let pg = vec![prog("initdb", "postgresql"), prog("pg_ctl", "postgresql"), prog("postgres", "postgresql"), prog("psql", "postgresql-client")];
    match kind {
        ResourceKind::Postgres | ResourceKind::Database => pg,
        ResourceKind::Migration | ResourceKind::Shop | ResourceKind::Worker => vec![prog("shop", "cargo build --release --workspace")],
        ResourceKind::Prometheus => vec![Program { name: "prometheus", install: "prometheus", optional: true }],
        // Sentinel is redis-server in sentinel mode.
        ResourceKind::Redis | ResourceKind::RedisSentinel | ResourceKind::Broker => vec![prog("redis-server", "redis-server")],
        ResourceKind::Pgbouncer => vec![prog("pgbouncer", "pgbouncer")],
        ResourceKind::Haproxy => vec![prog("haproxy", "haproxy")],
        ResourceKind::Etcd => vec![prog("etcd", "etcd-server")],
        ResourceKind::PatroniNode => vec![prog("patroni", "patroni"), prog("postgres", "postgresql")],
        ResourceKind::Exporter => ["prometheus-postgres-exporter", "prometheus-redis-exporter", "prometheus-node-exporter"]
            .into_iter()
            .map(|name| Program { name, install: name, optional: true })
            .collect(),
        ResourceKind::CitusWorker => {
            vec![Program { name: "citus", install: "the citus extension (not packaged in Debian bookworm)", optional: false }]
        }
        ResourceKind::Alertmanager => vec![prog("prometheus-alertmanager", "prometheus-alertmanager")],
        ResourceKind::Namespace | ResourceKind::Ingress | ResourceKind::LeaderWatch | ResourceKind::AlertReceiver => Vec::new(),
    }
}

/// Where a program is, if it is installed.
pub fn find(name: &str) -> Option<PathBuf> {
    match name {
        "shop" => shop_binary(),
        "initdb" | "pg_ctl" | "postgres" | "psql" | "pg_isready" | "pg_basebackup" => pg_bindir().map(|d| d.join(name)).filter(|p| p.is_file()),
        "citus" => pg_bindir().and_then(|d| {
            let lib = d.parent()?.join("lib/citus.so");
            lib.is_file().then_some(lib)
        }),
        other => in_path(other),
    }
}

/// PostgreSQL's server binaries: `$SCALECTL_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them out of PATH), else PATH.
pub fn pg_bindir() -> Option<PathBuf> {
    if let Some(d) = env::var_os("SCALECTL_PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).or_else(|| in_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

/// The server programs of PostgreSQL `version` (`spec.postgres.version`):
/// `$SCALECTL_PG_BINDIR` when set (the user chose), else Debian's
/// `/usr/lib/postgresql/VERSION/bin`. A version that is not installed is an error that
/// names the ones that are, rather than a silent run of another major version.
pub fn server_bindir(version: &str) -> anyhow::Result<PathBuf> {
    if let Some(d) = env::var_os("SCALECTL_PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let dir = Path::new("/usr/lib/postgresql").join(version).join("bin");
    if dir.join("initdb").is_file() {
        return Ok(dir);
    }
    let mut installed: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/initdb").is_file())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    installed.sort();
    match installed.last() {
        Some(newest) => anyhow::bail!(
            "PostgreSQL {version} (spec.postgres.version) is not installed; found {}. Install postgresql-{version}, \
             or set spec.postgres.version to \"{newest}\"",
            installed.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
        None => anyhow::bail!("PostgreSQL {version} is not installed; install it with `apt-get install postgresql-{version}`"),
    }
}

/// The shop binary: `$SCALECTL_SHOP_BIN`, else beside scalectl (cargo builds both into
/// one folder), else PATH.
pub fn shop_binary() -> Option<PathBuf> {
    if let Some(p) = env::var_os("SCALECTL_SHOP_BIN") {
        return Some(PathBuf::from(p));
    }
    let beside = env::current_exe().ok()?.parent()?.join("shop");
    if beside.is_file() {
        return Some(beside);
    }
    // Integration tests run from target/debug/deps; the binaries are one level up.
    let up = env::current_exe().ok()?.parent()?.parent()?.join("shop");
    if up.is_file() {
        return Some(up);
    }
    in_path("shop")
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
