//! PostgreSQL nodes from the distribution's packages: initdb, config from templates,
//! pg_ctl start/stop, and the shop's role and database.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::{Action, Observed};
use serde_json::json;

use crate::process::{self, last_lines};
use crate::user::as_user;
use crate::{Env, fsutil, health, secrets, templates, tools};

/// Where one node keeps its files.
pub struct NodePaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
}

pub fn paths(env: &Env, r: &Resource) -> NodePaths {
    let dir = env.node_dir(r);
    NodePaths { data: dir.join("data"), socket_dir: dir.join("run"), log: dir.join("log"), dir }
}

pub(crate) fn bin(name: &str) -> Result<PathBuf> {
    tools::find(name).with_context(|| format!("`{name}` not found; install PostgreSQL with `apt-get install postgresql` (see `scalectl doctor`)"))
}

/// A server program of the major version `node` asks for.
fn server_bin(node: &Resource, name: &str) -> Result<PathBuf> {
    Ok(tools::server_bindir(&crate::spec::server(node)?.version)?.join(name))
}

fn port(r: &Resource) -> u16 {
    r.port.unwrap_or(crate::expand::ports::POSTGRES)
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let p = paths(env, r);
    let ctx = json!({
        "env": env.name,
        "id": r.id,
        "address": r.address.map(|a| a.to_string()).unwrap_or_default(),
        "port": port(r),
        "socket_dir": p.socket_dir,
        "block": env.block(),
        "p": r.spec,
    });
    Ok(vec![
        ("postgresql.conf".into(), templates::render("postgresql.conf", templates::POSTGRESQL_CONF, &ctx)?),
        ("pg_hba.conf".into(), templates::render("pg_hba.conf", templates::PG_HBA_CONF, &ctx)?),
    ])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    let p = paths(env, r);
    if !p.data.join("PG_VERSION").exists() {
        return Observed::Down { reason: format!("no data directory at {}", p.data.display()) };
    }
    match process::running_pid(&p.data.join("postmaster.pid"), "postgres") {
        Some(pid) => Observed::Running { pid: Some(pid) },
        None => Observed::Down { reason: "postgres is not running".into() },
    }
}

/// Initialises the node if needed, writes its config, and (re)starts it.
pub fn apply(env: &Env, r: &Resource, action: &Action) -> Result<()> {
    let p = paths(env, r);
    let who = env.run_as.as_ref();
    std::fs::create_dir_all(&p.dir)?;
    if let Some(w) = who {
        w.check_reachable(&p.dir)?;
        w.own(&p.dir)?;
    }
    if !p.data.join("PG_VERSION").exists() {
        // initdb into a temporary directory and rename it, so that a kill during
        // initdb leaves nothing that looks like a cluster.
        let tmp = p.dir.join("data.init");
        fsutil::remove_dir(&tmp)?;
        fsutil::remove_dir(&p.data)?;
        let mut cmd = Command::new(server_bin(r, "initdb")?);
        cmd.arg("-D").arg(&tmp).args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"]);
        process::run(as_user(cmd, who), "initdb")?;
        std::fs::rename(&tmp, &p.data)?;
    }
    std::fs::create_dir_all(&p.socket_dir)?;
    std::fs::set_permissions(&p.socket_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    for (name, text) in config_files(env, r)? {
        fsutil::write_atomic(&p.data.join(name), text.as_bytes(), 0o600)?;
    }
    if let Some(w) = who {
        w.own(&p.socket_dir)?;
        w.own(&p.data)?;
        w.own(&p.dir)?;
    }
    let running = matches!(observe(env, r), Observed::Running { .. });
    if running && *action == Action::Update {
        pg_ctl(env, r, &["restart", "-m", "fast"])?;
    } else if !running {
        start(env, r)?;
    }
    Ok(())
}

/// Starts the server, after checking that nothing else holds its address.
pub fn start(env: &Env, r: &Resource) -> Result<()> {
    if let (Some(a), port) = (r.address, port(r))
        && health::port_taken(SocketAddr::from((a, port)))
    {
        return Err(crate::PortTaken(SocketAddr::from((a, port))).into());
    }
    pg_ctl(env, r, &["start"])
}

/// Stops the server quickly (open transactions are rolled back).
pub fn stop(env: &Env, r: &Resource) -> Result<()> {
    pg_ctl(env, r, &["stop", "-m", "fast"])
}

fn pg_ctl(env: &Env, r: &Resource, args: &[&str]) -> Result<()> {
    let p = paths(env, r);
    let mut cmd = Command::new(server_bin(r, "pg_ctl")?);
    cmd.args(args).arg("-D").arg(&p.data).arg("-l").arg(&p.log).args(["-w", "-t", "60", "-s"]);
    // The server pg_ctl starts inherits pg_ctl's cgroup.
    let cmd = crate::user::launch(cmd, env.run_as.as_ref(), crate::cgroup::procs_file(env, r));
    process::run(cmd, &format!("pg_ctl {}", args[0])).map_err(|e| {
        let log = process::tail(&p.log, 10).unwrap_or_default();
        e.context(format!("last lines of {}:\n{log}", p.log.display()))
    })?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let p = paths(env, r);
    let mut cmd = Command::new(bin("pg_isready")?);
    cmd.arg("-h").arg(&p.socket_dir).args(["-p", &port(r).to_string(), "-U", "postgres", "-q"]);
    Ok(if as_user(cmd, env.run_as.as_ref()).status().is_ok_and(|s| s.success()) {
        Readiness::Ready
    } else {
        Readiness::Pending("not accepting connections yet".into())
    })
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    let p = paths(env, r);
    if let Some(pid) = process::running_pid(&p.data.join("postmaster.pid"), "postgres")
        && pg_ctl(env, r, &["stop", "-m", "fast"]).is_err()
    {
        process::stop(pid, "postgres", Duration::from_secs(10))?;
    }
    crate::cgroup::remove(env, r);
    if !keep_data {
        fsutil::remove_dir(&p.dir)?;
    }
    Ok(())
}

/// Runs SQL as the superuser over the node's private socket; the SQL goes through
/// stdin so that passwords never appear in a process list.
pub fn psql(env: &Env, node: &Resource, database: &str, sql: &str) -> Result<String> {
    run_psql(env, node, database, &["-f", "-"], Some(sql), None)
}

/// How long a read asked for by a user (`db`, `queue`) waits for the server: a frozen
/// or overloaded primary makes the command fail with a reason, never hang.
pub const ASK_DEADLINE: Duration = Duration::from_secs(15);

/// Like [`psql`], but gives up when the server has not answered within `deadline`.
pub fn psql_within(env: &Env, node: &Resource, database: &str, sql: &str, deadline: Duration) -> Result<String> {
    run_psql(env, node, database, &["-f", "-"], Some(sql), Some(deadline))
}

/// Like [`psql`], each statement passed as its own `-c`: psql sends such a string to
/// the server as it is, so a statement from a user cannot run psql's own backslash
/// commands (`\!` runs a shell). Prints what each statement returns.
pub fn psql_each(env: &Env, node: &Resource, database: &str, statements: &[&str], deadline: Option<Duration>) -> Result<String> {
    let args: Vec<&str> = statements.iter().flat_map(|s| ["-c", s]).collect();
    run_psql(env, node, database, &args, None, deadline)
}

fn run_psql(env: &Env, node: &Resource, database: &str, args: &[&str], stdin: Option<&str>, deadline: Option<Duration>) -> Result<String> {
    let p = paths(env, node);
    let mut cmd = Command::new(bin("psql")?);
    cmd.arg("-h")
        .arg(&p.socket_dir)
        .args(["-p", &port(node).to_string(), "-U", "postgres", "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A"])
        .args(args);
    if let Some(d) = deadline {
        // The server gives up too, where it still can: a statement the deadline cut off
        // does not go on (and commit) unseen.
        cmd.env("PGOPTIONS", format!("-c statement_timeout={}", d.as_millis()));
    }
    let input = if stdin.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = as_user(cmd, env.run_as.as_ref()).stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting psql")?;
    if let Some(sql) = stdin {
        child.stdin.take().context("psql stdin")?.write_all(sql.as_bytes())?;
    }
    let out = match deadline {
        None => child.wait_with_output()?,
        Some(d) => wait_within(child, d)?.with_context(|| {
            format!("{} did not answer within {} s: it may be frozen or overloaded (`scalectl status` shows its state)", node.id, d.as_secs())
        })?,
    };
    if !out.status.success() {
        bail!("psql on {} failed:\n{}", node.id, last_lines(&String::from_utf8_lossy(&out.stderr), 10));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `child`'s output, or `None` when it has not finished within `deadline`: then it is
/// killed. (Its output is read meanwhile, so a large one cannot stall it.)
fn wait_within(child: std::process::Child, deadline: Duration) -> Result<Option<std::process::Output>> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(deadline) {
        Ok(out) => Ok(Some(out?)),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            Ok(None)
        }
    }
}

/// The name of the file holding the password of database role `owner`.
pub fn password_file(owner: &str) -> String {
    format!("postgres-{owner}.password")
}

/// The server that takes writes among `ids`: the one server, or Patroni's leader.
pub fn primary<'a>(env: &'a Env, ids: &[String]) -> Result<&'a Resource> {
    let nodes: Vec<&Resource> = ids.iter().map(|id| env.resource(id)).collect::<Result<_>>()?;
    let first = *nodes.first().context("no database server")?;
    if first.kind != scalectl_core::ResourceKind::PatroniNode {
        return Ok(first);
    }
    let patroni: Vec<&Resource> = nodes.into_iter().filter(|n| n.kind == scalectl_core::ResourceKind::PatroniNode).collect();
    crate::patroni::leader(&patroni, Duration::from_secs(30))
}

/// Creates the shop's role (with a generated password) and database, and extensions.
pub fn apply_database(env: &Env, r: &Resource) -> Result<()> {
    let node = primary(env, &r.depends_on)?;
    let spec = crate::spec::database(r)?;
    let (name, owner) = (spec.name.as_str(), spec.owner.as_str());
    check_ident(name)?;
    check_ident(owner)?;
    let password = secrets::get_or_create(&env.secrets_dir(), &password_file(owner))?;
    let verifier = secrets::scram_verifier(&password);
    psql(
        env,
        node,
        "postgres",
        &format!(
            "SELECT format('CREATE ROLE %I LOGIN', '{owner}') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}')\\gexec\n\
             ALTER ROLE {owner} PASSWORD '{verifier}';\n\
             SELECT format('CREATE DATABASE %I OWNER %I', '{name}', '{owner}') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
        ),
    )?;
    if !spec.extensions.is_empty() {
        let mut sql = String::new();
        for e in &spec.extensions {
            check_ident(e)?;
            sql.push_str(&format!("CREATE EXTENSION IF NOT EXISTS {e};\n"));
        }
        psql(env, node, name, &sql)?;
    }
    Ok(())
}

/// The URL the shop uses to reach `node`, with the password from the secrets file.
pub fn url(env: &Env, node: &Resource, database: &str, owner: &str) -> Result<String> {
    let password = secrets::get_or_create(&env.secrets_dir(), &password_file(owner))?;
    let addr = node.address.context("database server without an address")?;
    Ok(format!("postgres://{owner}:{password}@{addr}:{}/{database}", port(node)))
}

fn check_ident(s: &str) -> Result<()> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        bail!("`{s}` is not a plain SQL identifier (lowercase letters, digits, _)");
    }
    Ok(())
}

/// A psql client over TCP with a password, for what goes through PgBouncer or the
/// router the way the shop's connections do. The password travels in the environment.
pub struct TcpClient {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl TcpClient {
    /// Runs `sql` in `database` and returns psql's unaligned output, rows only.
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        self.run(database, sql, &["-t"])
    }

    /// Runs `sql` and returns each row as column name → value.
    pub fn table(&self, database: &str, sql: &str) -> Result<Vec<std::collections::BTreeMap<String, String>>> {
        let text = self.run(database, sql, &["-P", "footer=off"])?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
        Ok(lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split('\t').map(str::to_string)).collect()).collect())
    }

    fn run(&self, database: &str, sql: &str, extra: &[&str]) -> Result<String> {
        let mut cmd = Command::new(bin("psql")?);
        cmd.args(["-h", &self.host, "-p", &self.port.to_string(), "-U", &self.user, "-d", database])
            .args(["-X", "-q", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
            .args(extra)
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "3");
        let out = cmd.stdin(Stdio::null()).output().context("starting psql")?;
        if !out.status.success() {
            bail!("{}", last_lines(String::from_utf8_lossy(&out.stderr).trim(), 3));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}
