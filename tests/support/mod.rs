//! Running the real `scalectl` binary in a private home, and cleaning up after it even
//! when a test fails (ripgrep's `tests/util.rs` in spirit).

#![allow(dead_code)]

pub mod kube_mock;
pub mod shop;

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

    /// `status -o json`, which exits 1 (and still reports) when something is down.
    pub fn status(&self, env: &str) -> Value {
        let out = self.run(&["status", "--env", env, "-o", "json"]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "status: {}", text(&out.stderr));
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

/// Runs SQL as the superuser over a node's private socket and returns the rows, one
/// line each, columns separated by `|`.
pub fn psql(home: &Home, env: &str, node: &str, database: &str, sql: &str) -> String {
    let socket = home.env_dir(env).join("nodes").join(node.replace('/', "-")).join("run");
    let out = Command::new(find_pg_program("psql"))
        .arg("-h")
        .arg(&socket)
        .args(["-U", "postgres", "-d", database, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("running psql");
    assert!(out.status.success(), "psql on {node}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn find_pg_program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path().join("bin")).collect();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// SIGKILLs every process that runs from `dir` (a node's directory) and their children
/// (PostgreSQL's backends do not name the data directory): the abrupt loss of a node.
/// Returns how many processes there were.
pub fn kill_everything_in(dir: &Path) -> usize {
    let mut pids = processes_mentioning(dir);
    loop {
        let children: Vec<u32> = all_pids().into_iter().filter(|p| !pids.contains(p) && parent(*p).is_some_and(|pp| pids.contains(&pp))).collect();
        if children.is_empty() {
            break;
        }
        pids.extend(children);
    }
    for pid in &pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    pids.len()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `f` every 100 ms until it returns Some, or panics after `timeout` saying `what`.
pub fn eventually<T>(timeout: std::time::Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
