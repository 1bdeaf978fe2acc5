//! Processes that outlive the CLI: started in their own process group with output to a
//! log file and a pid file beside it, found again by that pid file, stopped by signal.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Starts `cmd` detached from the CLI (in a session of its own, no stdin, output
/// appended to `log`) and records its pid in `pid_file`.
///
/// A session of its own, as pg_ctl gives PostgreSQL: a terminal that closes or a CI
/// runner that kills the session that ran `scalectl up` must not take half an
/// environment with it. `setsid` (util-linux) calls setsid(2) and execs in place, since
/// the child is not a process group leader, so the recorded pid is the server's.
pub fn spawn_detached(cmd: Command, log: &Path, pid_file: &Path) -> Result<u32> {
    let out = OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = exec_via(Command::new("setsid"), &cmd);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id();
    crate::fsutil::write_atomic(pid_file, format!("{pid}\n").as_bytes(), 0o644)?;
    // The child is reparented to init when the CLI exits; it is reaped there.
    drop(child);
    Ok(pid)
}

/// `wrapper` with `cmd` appended as the program it execs: `cmd`'s program, arguments,
/// environment and working directory carried over.
pub fn exec_via(mut wrapper: Command, cmd: &Command) -> Command {
    wrapper.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapper.env(k, v),
            None => wrapper.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapper.current_dir(d);
    }
    wrapper
}

/// The pid recorded in `pid_file` if that process is alive and runs `program`.
pub fn running_pid(pid_file: &Path, program: &str) -> Option<u32> {
    let text = fs::read_to_string(pid_file).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    is_alive(pid, program).then_some(pid)
}

/// Whether the process recorded in `pid_file` still exists (not a zombie), whatever it
/// runs: right after a start its command line may still be the launcher's, or empty
/// while it execs.
pub fn recorded_alive(pid_file: &Path) -> bool {
    fs::read_to_string(pid_file).ok().and_then(|t| t.lines().next()?.trim().parse::<u32>().ok()).is_some_and(alive)
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `program`;
/// the second check guards against a recycled pid.
pub fn is_alive(pid: u32, program: &str) -> bool {
    if !alive(pid) {
        return false;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(program)
}

/// (pid, parent pid, command line) of every process.
pub fn all() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(ppid) = stat.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()) else { continue };
        let cmd = String::from_utf8_lossy(&fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        out.push((pid, ppid, cmd));
    }
    out
}

/// The live processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    all().into_iter().filter(|(child, parent, _)| *parent == pid && alive(*child)).map(|(child, _, _)| child).collect()
}

/// The processes with a TCP socket listening on an address of 127.`slot`.0.0/16.
pub fn listening_in_block(slot: u8) -> Vec<u32> {
    // /proc/net/tcp: `sl local_address rem_address st …  inode`, addresses as
    // little-endian hex (127.S.R.N is `NNRRSS7F`), state 0A is LISTEN.
    let mut inodes = std::collections::BTreeSet::new();
    for line in fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
        let ip = local.split(':').next().and_then(|h| u32::from_str_radix(h, 16).ok()).map(|n| n.to_le_bytes());
        if *state == "0A" && ip.is_some_and(|b| b[0] == 127 && b[1] == slot) {
            inodes.insert(format!("socket:[{inode}]"));
        }
    }
    let mut out = Vec::new();
    if inodes.is_empty() {
        return out;
    }
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let fds = fs::read_dir(e.path().join("fd")).into_iter().flatten().flatten();
        if fds.filter_map(|fd| fs::read_link(fd.path()).ok()).any(|l| inodes.contains(&*l.to_string_lossy())) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    !matches!(stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()), Some('Z') | Some('X') | None)
}

/// Sends SIGTERM to the process group of `pid`, waits up to `grace`, then SIGKILL.
pub fn stop(pid: u32, program: &str, grace: Duration) -> Result<()> {
    if !is_alive(pid, program) {
        return Ok(());
    }
    let p = Pid::from_raw(pid as i32);
    let _ = killpg(p, Signal::SIGTERM).or_else(|_| kill(p, Signal::SIGTERM));
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid, program) {
            return Ok(());
        }
        sleep(Duration::from_millis(25));
    }
    let _ = killpg(p, Signal::SIGKILL).or_else(|_| kill(p, Signal::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_alive(pid, program) {
            return Ok(());
        }
        sleep(Duration::from_millis(25));
    }
    bail!("process {pid} ({program}) did not stop after SIGKILL")
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("no log yet at {}", path.display()))?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// Runs `cmd` to completion; on failure the error carries its output.
pub fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, last_lines(&text, 15));
    }
    Ok(text)
}

pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Where a component keeps its files.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    /// Stops the process in the pid file, if it runs.
    pub fn stop(&self, program: &str) -> Result<()> {
        match running_pid(&self.pid(), program) {
            Some(pid) => stop(pid, program, Duration::from_secs(10)),
            None => Ok(()),
        }
    }

    /// Stops the process and, unless `keep_data`, deletes the directory.
    pub fn destroy(&self, program: &str, keep_data: bool) -> Result<()> {
        self.stop(program)?;
        if !keep_data {
            crate::fsutil::remove_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
}
