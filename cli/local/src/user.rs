//! Who database processes run as. PostgreSQL refuses to run as root, so when scalectl
//! runs as root, servers run as an unprivileged user (`postgres` from the Debian package,
//! else `nobody`), and their directories are handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User, chown};

#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user to run servers as, or `None` when we are not root (then we are that user).
pub fn server_user() -> Result<Option<RunAs>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(u) = User::from_name(name).context("reading the user database")? {
            return Ok(Some(RunAs { name: name.to_string(), uid: u.uid.as_raw(), gid: u.gid.as_raw() }));
        }
    }
    bail!("running as root, but there is neither a `postgres` nor a `nobody` user to run PostgreSQL as; create one with `useradd --system postgres`")
}

impl RunAs {
    pub fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
        cmd.env("HOME", "/tmp").env("USER", &self.name);
    }

    /// Gives `path` (and, recursively, what is in it) to this user.
    pub fn own(&self, path: &Path) -> Result<()> {
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            chown(&p, Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
                .with_context(|| format!("giving {} to user {}", p.display(), self.name))?;
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(&p)? {
                    stack.push(e?.path());
                }
            }
        }
        Ok(())
    }

    /// Checks that this user can reach `path`: every parent must be searchable by others.
    pub fn check_reachable(&self, path: &Path) -> Result<()> {
        for dir in path.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(dir) else { continue };
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 && (meta_uid(&meta) != self.uid) {
                bail!(
                    "{} is not searchable by user `{}`, which runs the database servers as root cannot; \
                     run `chmod o+x {}` or choose another --home",
                    dir.display(),
                    self.name,
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

fn meta_uid(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.uid()
}

/// Applies `who` to `cmd` when there is one.
pub fn as_user(mut cmd: Command, who: Option<&RunAs>) -> Command {
    if let Some(w) = who {
        w.apply(&mut cmd);
    }
    cmd
}

/// The command that runs `cmd` as `who` (when given) inside the cgroups whose
/// `cgroup.procs` files are `procs` (a node's group, and the groups of its CPU weight and
/// memory limit). Joining a cgroup needs root, so a small shell joins them first and then
/// becomes the program, dropping to `who` with `setpriv`; the pid stays the same through
/// both execs, so pid files still name the server.
pub fn launch(cmd: Command, who: Option<&RunAs>, procs: impl IntoIterator<Item = std::path::PathBuf>) -> Command {
    let procs: Vec<std::path::PathBuf> = procs.into_iter().collect();
    if procs.is_empty() {
        return as_user(cmd, who);
    }
    let mut w = Command::new("/bin/sh");
    // "0" moves the writing process itself; the files come first, up to `--`.
    w.arg("-c").arg(r#"while [ "$1" != -- ]; do echo 0 > "$1" || exit 1; shift; done; shift; exec "$@""#).arg("scalectl-launch");
    w.args(&procs).arg("--");
    if let Some(u) = who {
        w.arg("setpriv").arg(format!("--reuid={}", u.uid)).arg(format!("--regid={}", u.gid)).args(["--clear-groups", "--"]);
        w.env("HOME", "/tmp").env("USER", &u.name);
    }
    crate::process::exec_via(w, &cmd)
}
