//! PgBouncer between the shop and PostgreSQL, in the pool mode the manifest names. It
//! authenticates clients with the shop's password from a userlist file and logs in to
//! the upstream with it; with a database router upstream it offers a second logical
//! database, `shop_ro`, that reaches the replicas.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use scalectl_core::Readiness;
use scalectl_core::Resource;
use scalectl_core::plan::{Action, Observed};
use serde_json::json;

use crate::daemon::Daemon;
use crate::{Env, fsutil, postgres, process, secrets, spec, templates, tools, user};

fn daemon<'a>(env: &'a Env, r: &'a Resource) -> Daemon<'a> {
    Daemon::new(env, r, "pgbouncer")
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    let spec = spec::pgbouncer(r)?;
    let mut databases = Vec::new();
    let up = env.connect_to(&spec.upstream, false)?;
    databases.push(json!({"name": "shop", "host": up.ip().to_string(), "port": up.port()}));
    if let Some(read) = &spec.read_upstream {
        let up = env.connect_to(read, true)?;
        databases.push(json!({"name": "shop_ro", "host": up.ip().to_string(), "port": up.port()}));
    }
    Ok(vec![templates::render_for(env, r, "pgbouncer.ini", templates::PGBOUNCER_INI, json!({"databases": databases}))?])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    daemon(env, r).observe()
}

/// Starts PgBouncer, or, when it runs, reloads its config in place so that the shop's
/// connections survive a change of upstream (moving from level 2 to 3, say).
pub fn apply(env: &Env, r: &Resource, action: &Action) -> Result<()> {
    let d = daemon(env, r);
    let password = secrets::get_or_create(&env.secrets_dir(), &postgres::password_file("shop"))?;
    let mut files = config_files(env, r)?;
    // The userlist is not part of the config digest: it holds the password.
    files.push(("userlist.txt".into(), format!("\"shop\" \"{password}\"\n")));
    if *action == Action::Update && d.reload(&files, nix::sys::signal::Signal::SIGHUP)? {
        return Ok(());
    }
    let mut cmd = Command::new(tools::find("pgbouncer").context("`pgbouncer` not found; install it with `apt-get install pgbouncer`")?);
    cmd.arg(d.paths().dir.join("pgbouncer.ini"));
    // PgBouncer refuses to run as root.
    d.start(cmd, &files, &[d.endpoint()?], true)?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    let d = daemon(env, r);
    let addr = d.endpoint()?;
    // The admin console answers without a server behind it, so this checks PgBouncer
    // itself and its client authentication.
    Ok(d.check(|| client(env, r).and_then(|c| c.query("pgbouncer", "SHOW VERSION")).map(drop).map_err(|e| format!("{addr}: {e:#}"))))
}

/// A client of this pooler, logged in as the shop.
pub fn client(env: &Env, r: &Resource) -> Result<postgres::TcpClient> {
    let addr = r.address.context("pgbouncer without an address")?;
    let password = secrets::get_or_create(&env.secrets_dir(), &postgres::password_file("shop"))?;
    Ok(postgres::TcpClient { host: addr.to_string(), port: r.port.unwrap_or(6432), user: "shop".into(), password })
}

/// How long PAUSE may wait for the server connections in use to be released.
const PAUSE_WITHIN: Duration = Duration::from_secs(10);

/// Holds every client's next query (none fails) and closes the server connections once
/// the queries running now are done, so that what is upstream can be replaced under
/// it; [`resume`] lets the held queries go. The pause is recorded with this process's
/// pid before it is asked for (`paused-by`), so that if scalectl dies before resuming,
/// the next command that heals resumes it once this process is gone
/// ([`resume_if_abandoned`]). A PAUSE that does not finish in time is undone at once:
/// PgBouncer keeps a pause when the client that asked for it goes away.
pub fn pause(env: &Env, r: &Resource) -> Result<()> {
    fsutil::write_atomic(&pause_marker(env, r), std::process::id().to_string().as_bytes(), 0o600)?;
    if let Err(e) = admin(env, r, "PAUSE", PAUSE_WITHIN) {
        let _ = resume(env, r);
        return Err(e.context(format!("pausing {}", r.id)));
    }
    Ok(())
}

/// Lets the held queries go. A pooler that is not paused (restarted meanwhile, say)
/// counts as resumed.
pub fn resume(env: &Env, r: &Resource) -> Result<()> {
    match admin(env, r, "RESUME", Duration::from_secs(5)) {
        Ok(_) => {}
        Err(e) if format!("{e:#}").contains("not paused") => {}
        Err(e) => return Err(e.context(format!("resuming {}", r.id))),
    }
    let _ = std::fs::remove_file(pause_marker(env, r));
    Ok(())
}

/// Resumes `r` if a pause was left by a process that is gone (a killed `up`); whether
/// it did. A pause whose owner still runs is that command's to undo.
pub fn resume_if_abandoned(env: &Env, r: &Resource) -> Result<bool> {
    let marker = pause_marker(env, r);
    let Ok(text) = std::fs::read_to_string(&marker) else { return Ok(false) };
    if text.trim().parse::<u32>().is_ok_and(process::alive) {
        return Ok(false);
    }
    if daemon(env, r).pid().is_none() {
        // Stopped, so not paused: it starts unpaused.
        let _ = std::fs::remove_file(&marker);
        return Ok(false);
    }
    resume(env, r)?;
    Ok(true)
}

/// Where a pause is recorded with the pid of the process that asked for it.
fn pause_marker(env: &Env, r: &Resource) -> std::path::PathBuf {
    daemon(env, r).paths().dir.join("paused-by")
}

/// One command on PgBouncer's admin console, as the user PgBouncer runs as over its
/// Unix socket: PgBouncer lets that user in as `pgbouncer` without a password, so the
/// shop's role stays a mere stats user. Killed after `within`.
fn admin(env: &Env, r: &Resource, command: &str, within: Duration) -> Result<String> {
    let socket_dir = daemon(env, r).paths().dir.join("run");
    let mut cmd = Command::new(postgres::bin("psql")?);
    cmd.arg("-h").arg(&socket_dir).args(["-p", &r.port.unwrap_or(6432).to_string(), "-U", "pgbouncer", "-d", "pgbouncer"]);
    cmd.args(["-X", "-q", "-t", "-A", "-c", command]);
    let mut child = user::as_user(cmd, env.run_as.as_ref()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting psql")?;
    let deadline = Instant::now() + within;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command}` did not finish within {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{command}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    daemon(env, r).destroy(keep_data)
}
