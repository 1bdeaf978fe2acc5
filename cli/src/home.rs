//! Where environments live on this machine, their state files, and the lock that keeps
//! two commands from acting on one environment at once.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use scalectl_core::{Manifest, Resource, Target};
use serde::{Deserialize, Serialize};

/// The directory holding every environment: `--home`, `$SCALECTL_HOME`, else
/// `/var/lib/scalectl` for root and `$XDG_STATE_HOME/scalectl` (or
/// `~/.local/state/scalectl`) for others.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SCALECTL_HOME") {
        return PathBuf::from(h);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/lib/scalectl");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("scalectl");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/scalectl")
}

pub struct Home {
    pub root: PathBuf,
}

/// The state file format this scalectl writes. Older files are migrated when read
/// ([`migrate`]); a newer one is refused, since this release cannot know what it means.
pub const STATE_VERSION: u64 = 3;

/// What scalectl remembers about one environment. Written atomically after every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`] when written.
    pub version: u64,
    pub name: String,
    pub level: u8,
    pub target: Target,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// When `gc` may destroy the environment (last `up` plus `--ttl`).
    #[serde(default)]
    pub expires_at: Option<u64>,
    pub slot: u8,
    /// The manifest as last applied (base, overlays and `--set` merged).
    pub manifest: Manifest,
    /// Resources as last applied successfully.
    #[serde(default)]
    pub resources: BTreeMap<String, Resource>,
    /// What each resource's provider reported creating (endpoints, cloud ids), by id.
    #[serde(default)]
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
}

impl State {
    /// A new environment's state, before anything of it exists.
    pub fn new(name: &str, target: Target, slot: u8, manifest: Manifest) -> State {
        State {
            version: STATE_VERSION,
            name: name.to_string(),
            level: manifest.metadata.level,
            target,
            created_at: now(),
            updated_at: now(),
            expires_at: None,
            slot,
            manifest,
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }
}

/// Brings a state file's JSON up to [`STATE_VERSION`].
///
/// - 1 (no `version`; scalectl before Core v2): the digests of generated files and of
///   the shop binary sat among a resource's `props`; they move to `digests`, where
///   `plan` now records them, so an environment brought up by 1 plans as a no-op.
/// - 2: a resource's definition was a flat map of text named `props`; it is the target's
///   typed spec named `spec` now. The local target's specs serialize every value as the
///   text 2 recorded, so the map is kept as it is, under its new name.
pub fn migrate(mut v: serde_json::Value) -> Result<serde_json::Value> {
    let version = v.get("version").and_then(serde_json::Value::as_u64).unwrap_or(1);
    if version > STATE_VERSION {
        bail!("written by a newer scalectl (state format {version}; this one reads up to {STATE_VERSION}); upgrade scalectl");
    }
    if version < 2
        && let Some(resources) = v.get_mut("resources").and_then(serde_json::Value::as_object_mut)
    {
        for r in resources.values_mut() {
            let Some(r) = r.as_object_mut() else { continue };
            let mut digests = serde_json::Map::new();
            if let Some(props) = r.get_mut("props").and_then(serde_json::Value::as_object_mut) {
                for key in ["config_digest", "program_digest"] {
                    if let Some(d) = props.remove(key) {
                        digests.insert(key.to_string(), d);
                    }
                }
            }
            if !digests.is_empty() {
                r.insert("digests".into(), digests.into());
            }
        }
    }
    if version < 3
        && let Some(resources) = v.get_mut("resources").and_then(serde_json::Value::as_object_mut)
    {
        for r in resources.values_mut().filter_map(serde_json::Value::as_object_mut) {
            if let Some(props) = r.remove("props") {
                r.insert("spec".into(), props);
            }
        }
    }
    v["version"] = STATE_VERSION.into();
    Ok(v)
}

/// Held while a command acts on an environment; released on drop (and by the kernel if
/// the process dies, so a `kill -9` never leaves a stale lock).
pub struct EnvLock {
    _file: File,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Home { root }
    }

    pub fn envs_dir(&self) -> PathBuf {
        self.root.join("envs")
    }

    pub fn env_dir(&self, name: &str) -> PathBuf {
        self.envs_dir().join(name)
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.env_dir(name).join("state.json")
    }

    /// Creates the home (searchable by others, so servers running unprivileged can reach
    /// their directories inside it).
    pub fn ensure(&self) -> Result<()> {
        fs::create_dir_all(self.envs_dir()).with_context(|| format!("creating {}", self.envs_dir().display()))?;
        for d in [&self.root, &self.envs_dir()] {
            let _ = fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        }
        Ok(())
    }

    /// Locks environment `name` against other commands, failing at once if one holds it.
    pub fn lock(&self, name: &str) -> Result<EnvLock> {
        validate_name(name)?;
        self.ensure()?;
        let path = self.envs_dir().join(format!("{name}.lock"));
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(EnvLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                bail!("environment `{name}` is busy: another scalectl command is acting on it; wait for it to finish")
            }
            Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    pub fn load(&self, name: &str) -> Result<Option<State>> {
        let path = self.state_path(name);
        match fs::read(&path) {
            Ok(bytes) => {
                let read = || -> Result<State> { Ok(serde_json::from_value(migrate(serde_json::from_slice(&bytes)?)?)?) };
                Ok(Some(read().with_context(|| format!("reading {}", path.display()))?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state atomically: a crash leaves the old file or the new one.
    pub fn save(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        crate::driver::write_atomic(&self.state_path(&state.name), &bytes, 0o600)
    }

    /// Names of every environment with a state file.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.envs_dir()) else { return Ok(out) };
        for e in rd.flatten() {
            if e.path().join("state.json").is_file()
                && let Some(n) = e.file_name().to_str()
            {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        crate::driver::remove_dir(&self.env_dir(name))?;
        let _ = fs::remove_file(self.envs_dir().join(format!("{name}.lock")));
        Ok(())
    }
}

/// Environment names become directory names and labels: keep them simple.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !ok {
        bail!("`{name}` is not a valid environment name: use 1-40 lowercase letters, digits and `-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_on_the_same_environment_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path().to_path_buf());
        let first = home.lock("ci-1").unwrap();
        let err = home.lock("ci-1").err().expect("the environment is busy").to_string();
        assert!(err.contains("busy"), "{err}");
        assert!(home.lock("ci-2").is_ok(), "other environments are independent");
        drop(first);
        assert!(home.lock("ci-1").is_ok(), "released when the holder ends");
    }

    /// A level-1 state file as scalectl 0.1 (state format 1) wrote it, recorded from a
    /// real `up`: digests among the props, no version, no outputs.
    const V1_LEVEL_1: &str = include_str!("../../tests/fixtures/state-v1-level-1.json");

    #[test]
    fn a_v1_state_file_migrates_with_its_digests_moved_out_of_props() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path().to_path_buf());
        let v1: serde_json::Value = serde_json::from_str(V1_LEVEL_1).unwrap();
        let name = v1["name"].as_str().unwrap().to_string();
        fs::create_dir_all(home.env_dir(&name)).unwrap();
        fs::write(home.state_path(&name), V1_LEVEL_1).unwrap();

        let state = home.load(&name).unwrap().unwrap();
        assert_eq!(state.version, STATE_VERSION);
        let shop = &state.resources["shop/r1-all-1"];
        let leaves = shop.spec.leaves();
        assert!(!leaves.contains_key("program_digest") && !leaves.contains_key("config_digest"), "{leaves:?}");
        assert_eq!(
            shop.digests.get("program_digest"),
            v1["resources"]["shop/r1-all-1"]["props"]["program_digest"].as_str().map(String::from).as_ref()
        );
        let pg = &state.resources["postgres/r1-pg-1"];
        assert_eq!(pg.digests.get("config_digest").map(String::as_str), v1["resources"]["postgres/r1-pg-1"]["props"]["config_digest"].as_str());
        assert_eq!(pg.spec.leaves().get("max_connections").map(String::as_str), Some("100"), "the rest is kept, as the spec");
        assert_eq!(state.resources.len(), v1["resources"].as_object().unwrap().len());

        home.save(&state).unwrap();
        let again = home.load(&name).unwrap().unwrap();
        assert_eq!(again.resources, state.resources, "migrating a migrated file changes nothing");
    }

    #[test]
    fn a_state_file_from_a_newer_scalectl_is_refused_with_what_to_do() {
        let err = migrate(serde_json::json!({"version": 99})).unwrap_err().to_string();
        assert!(err.contains("newer scalectl (state format 99") && err.contains("upgrade scalectl"), "{err}");
    }

    #[test]
    fn environment_names_are_checked() {
        assert!(validate_name("ci-42").is_ok());
        for bad in ["", "Upper", "../x", "-x", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
