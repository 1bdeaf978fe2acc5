//! What every long-running server of the local target has in common: a directory with
//! its config files, a log and a pid file; started detached, found again by its pid
//! file, waited on with a probe, and stopped by signal. The modules for PgBouncer,
//! HAProxy, etcd, Redis and the exporters only say how to configure and probe theirs.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use scalectl_core::Resource;
use scalectl_core::plan::Observed;

use crate::process::{self, Paths};
use crate::user::launch;
use crate::{Env, fsutil, health};
use scalectl_core::Readiness;

/// One server process of one resource.
pub struct Daemon<'a> {
    pub env: &'a Env,
    pub r: &'a Resource,
    /// A word of the process's command line, to tell it from a recycled pid.
    pub program: &'static str,
}

impl<'a> Daemon<'a> {
    pub fn new(env: &'a Env, r: &'a Resource, program: &'static str) -> Self {
        Daemon { env, r, program }
    }

    pub fn paths(&self) -> Paths {
        Paths { dir: self.env.node_dir(self.r) }
    }

    /// The address and port the resource declares.
    pub fn endpoint(&self) -> Result<SocketAddr> {
        let r = self.r;
        Ok(SocketAddr::from((
            r.address.with_context(|| format!("{} has no address", r.id))?,
            r.port.with_context(|| format!("{} has no port", r.id))?,
        )))
    }

    pub fn pid(&self) -> Option<u32> {
        process::running_pid(&self.paths().pid(), self.program)
    }

    pub fn observe(&self) -> Observed {
        match self.pid() {
            Some(pid) => Observed::Running { pid: Some(pid) },
            None => Observed::Down { reason: format!("{} is not running", self.program) },
        }
    }

    /// Writes `files` into the directory (mode 0600, since some hold secrets), stops the
    /// old process, checks that `listen` is free, and starts `cmd` as the server user when
    /// `unprivileged` (some servers refuse to run as root).
    pub fn start(&self, cmd: Command, files: &[(String, String)], listen: &[SocketAddr], unprivileged: bool) -> Result<u32> {
        let p = self.paths();
        std::fs::create_dir_all(p.dir.join("run"))?;
        for (name, text) in files {
            fsutil::write_atomic(&p.dir.join(name), text.as_bytes(), 0o600)?;
        }
        let who = if unprivileged { self.env.run_as.as_ref() } else { None };
        if let Some(w) = who {
            w.check_reachable(&p.dir)?;
            w.own(&p.dir)?;
        }
        p.stop(self.program)?;
        for addr in listen {
            if health::port_taken(*addr) {
                return Err(crate::PortTaken(*addr).into());
            }
        }
        process::spawn_detached(launch(cmd, who, crate::cgroup::procs_file(self.env, self.r)), &p.log(), &p.pid())
    }

    /// Makes the directory readable by its owner only, for servers that rewrite their
    /// own config files with the mode they choose (Redis and Sentinel on `CONFIG
    /// REWRITE`), files that hold the password.
    pub fn keep_private(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.paths().dir;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("making {} private", dir.display()))
    }

    /// Rewrites `files` and asks the running process to reload them with `signal`, for
    /// servers that can (PgBouncer with SIGHUP, HAProxy's master with SIGUSR2): clients
    /// stay connected. False when it is not running.
    pub fn reload(&self, files: &[(String, String)], signal: nix::sys::signal::Signal) -> Result<bool> {
        let Some(pid) = self.pid() else { return Ok(false) };
        let dir = self.paths().dir;
        for (name, text) in files {
            fsutil::write_atomic(&dir.join(name), text.as_bytes(), 0o600)?;
            if let Some(w) = &self.env.run_as {
                w.own(&dir.join(name))?;
            }
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(true)
    }

    /// Ready when `probe` passes; failed, with the end of its log, when the process has
    /// exited (waiting will not bring it back).
    pub fn check(&self, probe: impl FnOnce() -> Result<(), String>) -> Readiness {
        exited(self.r, &self.paths()).unwrap_or_else(|| match probe() {
            Ok(()) => Readiness::Ready,
            Err(why) => Readiness::Pending(why),
        })
    }

    /// Ready when an HTTP `GET path` answers 200.
    pub fn check_http(&self, addr: SocketAddr, path: &str) -> Readiness {
        self.check(|| match health::http_status(addr, path, Duration::from_secs(1))? {
            200 => Ok(()),
            code => Err(format!("GET {path} answered {code}")),
        })
    }

    pub fn destroy(&self, keep_data: bool) -> Result<()> {
        self.paths().destroy(self.program, keep_data)?;
        crate::cgroup::remove(self.env, self.r);
        Ok(())
    }
}

/// `Failed` with the last lines of its log when the process recorded in `paths` has
/// exited; `None` while it runs.
pub fn exited(r: &Resource, paths: &Paths) -> Option<Readiness> {
    if process::recorded_alive(&paths.pid()) {
        return None;
    }
    let log = process::tail(&paths.log(), 15).unwrap_or_default();
    Some(Readiness::Failed(format!("{} exited; last lines of {}:\n{log}", r.id, paths.log().display())))
}
