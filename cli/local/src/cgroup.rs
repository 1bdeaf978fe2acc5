//! Each node's processes in their own cgroup (v2), `scalectl/<env>/<node>`, when we are
//! root and the machine has cgroup v2. It is how the chaos faults find every process of a
//! node (PostgreSQL's backends do not name their data directory) and how a network
//! partition tells nodes apart: on loopback every connection leaves from 127.0.0.1, so
//! iptables matches the sender's cgroup instead of its address.

use std::path::{Path, PathBuf};

use scalectl_core::Resource;

use crate::Env;

/// Where cgroup v2 is mounted, if it is and we may create groups in it.
pub fn root() -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].iter().map(PathBuf::from).find(|p| p.join("cgroup.procs").exists() && is_cgroup2(p))
}

fn is_cgroup2(p: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == p.to_str() && l.split_whitespace().nth(2) == Some("cgroup2")))
}

/// The group's path relative to the cgroup root, as iptables' `--path` wants it.
pub fn relative(env: &Env, r: &Resource) -> String {
    format!("scalectl/{}/{}", env.name, r.id.replace('/', "-"))
}

/// The environment's parent group, relative to the root.
pub fn env_relative(env: &Env) -> String {
    format!("scalectl/{}", env.name)
}

/// The node's `cgroup.procs`, creating the group; `None` without cgroups. Pass it to
/// `user::launch` so the server (and all it starts) runs in the group.
pub fn procs_file(env: &Env, r: &Resource) -> Option<PathBuf> {
    let dir = root()?.join(relative(env, r));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("cgroup.procs"))
}

/// Every process in the node's group (empty without cgroups).
pub fn pids(env: &Env, r: &Resource) -> Vec<u32> {
    let Some(root) = root() else { return Vec::new() };
    read_pids(&root.join(relative(env, r)))
}

/// Every process in any of the environment's groups.
pub fn env_pids(env: &Env) -> Vec<u32> {
    let Some(root) = root() else { return Vec::new() };
    let Ok(nodes) = std::fs::read_dir(root.join(env_relative(env))) else { return Vec::new() };
    nodes.flatten().filter(|e| e.path().is_dir()).flat_map(|e| read_pids(&e.path())).collect()
}

/// Every process in `dir`'s group and the groups beneath it.
pub fn pids_under(dir: &Path) -> Vec<u32> {
    let mut out = read_pids(dir);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(pids_under(&e.path()));
        }
    }
    out
}

/// Removes `dir`'s group and the empty groups beneath it, deepest first.
pub fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Removes the node's group once it is empty, and the environment's when it is too.
pub fn remove(env: &Env, r: &Resource) {
    let Some(root) = root() else { return };
    let dir = root.join(relative(env, r));
    // A stopped server's last processes may take a moment to leave the group.
    for _ in 0..50 {
        if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(root.join(env_relative(env)));
}
