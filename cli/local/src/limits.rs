//! What a shop process is entitled to and may use: the manifest's role `cpu` (a CPU
//! weight) and `memory` (a hard limit), the local counterpart of Kubernetes requests and
//! limits, so that an auth storm cannot take the cores checkout needs.
//!
//! Through the cgroup v1 `cpu` and `memory` controllers, when we are root and the
//! machine mounts them (where it has only cgroup v2 with those controllers, they are not
//! applied yet, and `up` says so). Each process gets its own group in each controller,
//! `scalectl.<env>.<node>`, made beside the groups of the process that runs `up` rather
//! than below a common parent: CPU weights are relative among siblings, and a parent
//! group would compete as one entity against every other process of the machine,
//! starving the shop of what it was given. The groups made are recorded in the node's
//! `<node>.cgroups` file, so that `down` removes exactly those even when it runs from
//! another group.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use scalectl_core::{ByteSize, Cpu, Resource};

use crate::Env;

/// Where controller `name` (`cpu`, `memory`) of cgroup v1 is mounted, if it is and we
/// may make groups in it.
fn mount(name: &str) -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == name)).then(|| PathBuf::from(f[1]))
    })
}

/// The group this process is in for v1 controller `name`, from `/proc/self/cgroup`
/// (`4:memory:/a/b`).
fn own_group(name: &str) -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers.split(',').any(|c| c == name).then(|| path.trim_start_matches('/').to_string())
        })
        .unwrap_or_default()
}

/// Whether this machine (and user) can apply CPU weights and memory limits.
pub fn available() -> bool {
    mount("cpu").is_some() && mount("memory").is_some()
}

fn record(env: &Env, r: &Resource) -> PathBuf {
    env.node_dir(r).with_extension("cgroups")
}

/// Makes the node's groups for what it asks (`cpu`, `memory`), writes the weight and the
/// limit, and returns their `cgroup.procs` files for `user::launch`. Nothing is asked or
/// nothing can be applied: no files. Groups made earlier for the node go first, so a
/// limit taken out of the manifest is gone after the next `up`.
pub fn groups(env: &Env, r: &Resource, cpu: Option<Cpu>, memory: Option<ByteSize>) -> Result<Vec<PathBuf>> {
    remove(env, r);
    let name = format!("scalectl.{}.{}", env.name, r.id.replace('/', "-"));
    let mut settings: Vec<(&str, &str, String)> = Vec::new();
    if let Some(cpu) = cpu {
        settings.push(("cpu", "cpu.shares", cpu.cgroup_v1_shares().to_string()));
    }
    if let Some(memory) = memory {
        settings.push(("memory", "memory.limit_in_bytes", memory.bytes().to_string()));
    }
    let mut made = Vec::new();
    for (controller, file, value) in settings {
        let Some(mount) = mount(controller) else { continue };
        let dir = mount.join(own_group(controller)).join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        made.push(dir.clone());
        std::fs::write(dir.join(file), &value).with_context(|| format!("writing {value} to {}", dir.join(file).display()))?;
    }
    let text: String = made.iter().map(|d| format!("{}\n", d.display())).collect();
    if !made.is_empty() {
        crate::fsutil::write_atomic(&record(env, r), text.as_bytes(), 0o644)?;
    }
    Ok(made.into_iter().map(|d| d.join("cgroup.procs")).collect())
}

/// The node's CPU weight and memory limit as the kernel holds them now, for `status`.
pub fn applied(env: &Env, r: &Resource) -> (Option<u64>, Option<u64>) {
    let dirs = recorded(env, r);
    let read = |file: &str| dirs.iter().find_map(|d| std::fs::read_to_string(d.join(file)).ok()?.trim().parse().ok());
    (read("cpu.shares"), read("memory.limit_in_bytes"))
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
