//! What a shop process is entitled to and may use: the manifest's role `cpu` (a CPU
//! weight) and `memory` (a hard limit), the local counterpart of Kubernetes requests and
//! limits, so that an auth storm cannot take the cores checkout needs.
//!
//! Through the cgroup v1 `cpu` and `memory` controllers, when we are root and the
//! machine mounts them writable (where it has only cgroup v2 with those controllers, they
//! are not applied yet, and `plan` and `up` say so). Each process gets a group of its
//! own in each controller, `scalectl.<env>.<node>`, made directly in the group of the
//! process that runs `up` (the root group on a plain host), never under a parent group
//! of scalectl's: CPU weights count among siblings, and such a parent would compete as
//! one entity with every other process there, starving the shop of what it was given.
//! Each group is recorded in the node's `<node>.cgroups` file as soon as it is made, so
//! that `down` removes exactly those, even when it runs from another group.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use scalectl_core::{ByteSize, Cpu, Resource};

use crate::Env;

/// Where controller `name` (`cpu`, `memory`) of cgroup v1 is mounted writable, and the
/// group of this process in it, if it is and we may make groups there. From
/// `/proc/self/mountinfo` (a mount may show only part of the hierarchy: its root field
/// says which) and `/proc/self/cgroup` (`4:memory:/a/b`).
fn own_group(name: &str) -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mount_root, mount_point) = mounts.lines().find_map(|l| {
        // `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu`
        let (left, right) = l.split_once(" - ")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let writable = left.get(5)?.split(',').any(|o| o == "rw");
        let ours = right.first() == Some(&"cgroup") && right.get(2)?.split(',').any(|o| o == name);
        (writable && ours).then(|| (left[3].to_string(), PathBuf::from(left[4])))
    })?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == name).then(|| path.to_string())
    })?;
    let relative = Path::new(&path).strip_prefix(&mount_root).ok()?;
    Some(mount_point.join(relative))
}

/// Whether this machine (and user) can apply CPU weights and memory limits.
pub fn available() -> bool {
    own_group("cpu").is_some() && own_group("memory").is_some()
}

fn record(env: &Env, r: &Resource) -> PathBuf {
    let dir = env.node_dir(r);
    dir.with_file_name(format!("{}.cgroups", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()))
}

/// What a process asks for: the role's `cpu`, `cpuLimit` and `memory`.
pub struct Asked {
    pub cpu: Option<Cpu>,
    pub cpu_limit: Option<Cpu>,
    pub memory: Option<ByteSize>,
}

/// The CFS period a CPU limit is a quota of (the kernel's default, and the kubelet's).
const CFS_PERIOD_US: u64 = 100_000;

/// Makes the node's groups for what it asks, writes the weight, quota and limit, and
/// returns their `cgroup.procs` files for `user::launch`. Nothing is asked or
/// nothing can be applied: no files. Groups made earlier for the node go first, so a
/// limit taken out of the manifest is gone after the next `up`.
pub fn groups(env: &Env, r: &Resource, asked: &Asked) -> Result<Vec<PathBuf>> {
    remove(env, r);
    let name = format!("scalectl.{}.{}", env.name, r.id.replace('/', "-"));
    // (controller, files to write, in order): with swap, the memory limit covers swap too
    // (`memsw`, when the kernel accounts it), or the process would swap past its limit.
    let mut settings: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    let mut cpu_files = Vec::new();
    if let Some(cpu) = asked.cpu {
        cpu_files.push(("cpu.shares", cpu.cgroup_v1_shares().to_string()));
    }
    if let Some(limit) = asked.cpu_limit {
        // The kernel takes no quota under 1 ms per period.
        let quota = (u64::from(limit.millis()) * CFS_PERIOD_US / 1000).max(1000);
        cpu_files.extend([("cpu.cfs_period_us", CFS_PERIOD_US.to_string()), ("cpu.cfs_quota_us", quota.to_string())]);
    }
    if !cpu_files.is_empty() {
        settings.push(("cpu", cpu_files));
    }
    if let Some(memory) = asked.memory {
        let bytes = memory.bytes().to_string();
        settings.push(("memory", vec![("memory.limit_in_bytes", bytes.clone()), ("memory.memsw.limit_in_bytes", bytes)]));
    }
    let mut made = Vec::new();
    for (controller, files) in settings {
        let Some(parent) = own_group(controller) else { continue };
        let dir = parent.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        made.push(dir.clone());
        let text: String = made.iter().map(|d| format!("{}\n", d.display())).collect();
        crate::fsutil::write_atomic(&record(env, r), text.as_bytes(), 0o644)?;
        for (file, value) in files {
            let path = dir.join(file);
            if file.contains("memsw") && !path.exists() {
                continue;
            }
            std::fs::write(&path, &value).with_context(|| {
                format!("writing {value} to {}; remove the role's cpu, cpuLimit and memory from the manifest to run without them", path.display())
            })?;
        }
    }
    Ok(made.into_iter().map(|d| d.join("cgroup.procs")).collect())
}

/// The node's CPU weight, CPU limit (millicores) and memory limit as the kernel holds
/// them now, for `status`; `None` where the node has no group of its own.
pub fn applied(env: &Env, r: &Resource) -> Option<scalectl_core::ops::ProcessLimits> {
    let dirs = recorded(env, r);
    if dirs.is_empty() {
        return None;
    }
    let read = |file: &str| dirs.iter().find_map(|d| std::fs::read_to_string(d.join(file)).ok()?.trim().parse::<i64>().ok());
    let cpu_limit_millis = match (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
        (Some(quota), Some(period)) if quota > 0 && period > 0 => Some((quota * 1000 / period) as u64),
        _ => None,
    };
    let limits = scalectl_core::ops::ProcessLimits {
        cpu_weight: read("cpu.shares").map(|w| w as u64),
        cpu_limit_millis,
        memory_limit_bytes: read("memory.limit_in_bytes").map(|b| b as u64),
    };
    // Recorded groups that are gone (a reboot) hold nothing.
    (limits != scalectl_core::ops::ProcessLimits::default()).then_some(limits)
}

fn recorded(env: &Env, r: &Resource) -> Vec<PathBuf> {
    std::fs::read_to_string(record(env, r)).unwrap_or_default().lines().map(PathBuf::from).collect()
}

/// Removes the node's groups once their processes are gone, and the record of them.
pub fn remove(env: &Env, r: &Resource) {
    for dir in recorded(env, r) {
        remove_group(&dir);
    }
    let _ = std::fs::remove_file(record(env, r));
}

fn remove_group(dir: &Path) {
    // A stopped process may take a moment to leave its group.
    for _ in 0..50 {
        if !dir.exists() || std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
