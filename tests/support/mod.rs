//! Running the real `scalectl` binary in a private home, and cleaning up after it even
//! when a test fails (ripgrep's `tests/util.rs` in spirit).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_scalectl");

/// A private scalectl home. Every environment a test brings up is registered with
/// [`Home::env`] and torn down on drop, pass or fail.
pub struct Home {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    envs: std::sync::Mutex<Vec<String>>,
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::Builder::new().prefix("scalectl-test-").tempdir().expect("temp dir");
        // Servers run as an unprivileged user when tests run as root; they must be able
        // to reach their directories.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().join("home");
        Home { _tmp: tmp, root, envs: Default::default() }
    }

    /// A unique environment name for this test process, torn down when `self` drops.
    pub fn env(&self, stem: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{stem}-{}-{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst));
        self.envs.lock().unwrap().push(name.clone());
        name
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--home").arg(&self.root).args(args);
        c.env_remove("SCALECTL_HOME");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running scalectl")
    }

    /// Runs and insists on exit code `code`, showing the output when it differs.
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "scalectl {args:?}\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.expect(0, &all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
    }

    pub fn env_dir(&self, name: &str) -> PathBuf {
        self.root.join("envs").join(name)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for name in self.envs.lock().unwrap().iter() {
            if self.env_dir(name).exists() {
                let _ = self.run(&["down", "--env", name, "-q"]);
            }
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Pids of live processes whose command line mentions `needle` (a data directory, say).
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
}
