//! Loopback blocks for environments. Each environment claims a slot `S` and with it
//! 127.S.0.0/16. Claims are files in one machine-wide directory, so environments kept
//! under different homes (parallel tests, several users) never share a block.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where claims live: `$SCALECTL_SLOTS_DIR`, else `/tmp/scalectl-slots`.
pub fn slots_dir() -> PathBuf {
    std::env::var_os("SCALECTL_SLOTS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/scalectl-slots"))
}

/// Claims a free slot for the environment in `owner` (its state directory). A claim
/// whose owner directory is gone is stale and is taken over.
pub fn claim(owner: &Path) -> Result<u8> {
    let dir = slots_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    let owner_text = owner.to_string_lossy().to_string();
    for slot in 10u8..=250 {
        let path = dir.join(slot.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(owner_text.as_bytes())?;
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                if holder == owner_text {
                    return Ok(slot);
                }
                // Stale: its environment was deleted without `down`. Take it over with a
                // rename, so two claimers cannot both win; unless what that environment
                // left still listens there (`scalectl gc` stops it).
                if !holder.is_empty() && !Path::new(&holder).exists() && crate::process::listening_in_block(slot).is_empty() {
                    let tmp = dir.join(format!(".{slot}.{}", std::process::id()));
                    fs::write(&tmp, owner_text.as_bytes())?;
                    if fs::rename(&tmp, &path).is_ok() && fs::read_to_string(&path).ok().as_deref() == Some(&owner_text) {
                        return Ok(slot);
                    }
                    let _ = fs::remove_file(&tmp);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("claiming {}", path.display())),
        }
    }
    bail!("every loopback slot in {} is taken; run `scalectl gc` or `scalectl down` on environments you no longer need", dir.display())
}

/// Releases `slot` if `owner` holds it.
pub fn release(slot: u8, owner: &Path) {
    let path = slots_dir().join(slot.to_string());
    if fs::read_to_string(&path).ok().as_deref() == Some(&*owner.to_string_lossy()) {
        let _ = fs::remove_file(path);
    }
}

/// A slot whose environment directory was deleted without `down`, and what was done
/// about the processes it left on its block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Abandoned {
    pub slot: u8,
    /// The deleted environment directory that claimed it.
    pub owner: String,
    /// Processes still listening on its block or left in its cgroup.
    pub processes: Vec<u32>,
}

/// Slots whose environment directory is gone, with the processes the environment left
/// behind: those listening on its block (127.S.0.0/16) and those in its cgroup, unless
/// a live environment has the same name. With `stop`, those processes are stopped and
/// the claim released, so the block can be used again.
pub fn abandoned(stop: bool) -> Result<Vec<Abandoned>> {
    let dir = slots_dir();
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let claims: Vec<(u8, String)> =
        entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse::<u8>().ok()?, fs::read_to_string(e.path()).ok()?))).collect();
    let live_names: Vec<String> = claims.iter().filter(|(_, o)| Path::new(o).exists()).filter_map(|(_, o)| name_of(o)).collect();
    let mut out = Vec::new();
    for (slot, owner) in claims {
        if owner.is_empty() || Path::new(&owner).exists() {
            continue;
        }
        let mut processes = crate::process::listening_in_block(slot);
        if let (Some(root), Some(name)) = (crate::cgroup::root(), name_of(&owner))
            && !live_names.contains(&name)
        {
            processes.extend(crate::cgroup::pids_under(&root.join("scalectl").join(&name)));
        }
        processes.sort_unstable();
        processes.dedup();
        if stop {
            for pid in &processes {
                crate::process::stop(*pid, "", std::time::Duration::from_secs(5))?;
            }
            if let (Some(root), Some(name)) = (crate::cgroup::root(), name_of(&owner))
                && !live_names.contains(&name)
            {
                crate::cgroup::remove_tree(&root.join("scalectl").join(&name));
            }
            release(slot, Path::new(&owner));
        }
        out.push(Abandoned { slot, owner, processes });
    }
    out.sort_by_key(|a| a.slot);
    Ok(out)
}

/// The environment name of a claim's owner directory (`…/envs/NAME`).
fn name_of(owner: &str) -> Option<String> {
    Path::new(owner).file_name()?.to_str().map(str::to_string)
}
