//! The leader watch: releases a dead leader's lock at once.
//!
//! Patroni's leader lock in etcd outlives its holder by up to `ttl` seconds, and that
//! wait was almost all of level 3's recovery time after the primary's node was lost
//! (lease expiry 7.9 s of an RTO of about 9 s at the default timing). On one machine
//! scalectl knows when a node is dead rather than slow: its cgroup has no process left
//! (without cgroups: neither Patroni nor the postmaster runs). A node without processes
//! cannot write, so its lock can go at once. This process deletes the leader key when,
//! and only when, it names a dead node, in an etcd transaction that compares the key's
//! value first, which is what Patroni itself does when it stops cleanly. The standbys
//! watch that key and the synchronous one takes over in its next breath.
//!
//! A frozen or partitioned leader still has processes, so its lock still expires by TTL
//! as before: the watch never shortens the wait where the old leader could still write.
//!
//! One watch per Patroni cluster runs as `scalectl __leader-watch --config FILE`, outside
//! the nodes' cgroups (a node's loss does not take it along), started by `up` like any
//! server and stopped by `down`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use scalectl_core::plan::Observed;
use scalectl_core::{Readiness, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Env, cgroup, health, patroni, process, spec};

/// A word of the watch's command line, to find it again by its pid.
const PROGRAM: &str = "__leader-watch";
/// How often nodes are looked at: a read of one small file each.
const TICK: Duration = Duration::from_millis(100);
/// How often the lock is read again while a node stays dead (it cannot become leader,
/// but the lock may have named it when the watch started).
const RECHECK: Duration = Duration::from_secs(1);

/// What the watch process is told, written by `apply` next to its pid file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// etcd's client addresses, any of which may answer.
    pub etcd: Vec<SocketAddr>,
    /// Patroni's leader key: `/scalectl/<scope>/leader`.
    pub key: String,
    pub nodes: Vec<Node>,
}

/// One Patroni node and how to tell that nothing of it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Its member name in Patroni, the value the leader key holds.
    pub name: String,
    /// Its cgroup, when nodes have one.
    pub cgroup: Option<PathBuf>,
    /// Pid files and the program each must run: Patroni's, the postmaster's.
    pub pid_files: Vec<(PathBuf, String)>,
}

impl Node {
    /// Whether nothing of the node runs: an empty (or absent) cgroup, or, without one,
    /// no process behind any of its pid files.
    pub fn is_dead(&self) -> bool {
        match &self.cgroup {
            Some(dir) => std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |procs| procs.trim().is_empty()),
            None => self.pid_files.iter().all(|(file, program)| process::running_pid(file, program).is_none()),
        }
    }
}

fn paths(env: &Env, r: &Resource) -> process::Paths {
    process::Paths { dir: env.node_dir(r) }
}

/// The watch's configuration for the cluster `r` keeps.
pub fn config(env: &Env, r: &Resource) -> Result<Config> {
    let s = spec::leader_watch(r)?;
    let etcd = s.etcd.iter().map(|id| env.connect_to(id, false)).collect::<Result<Vec<_>>>()?;
    let mut nodes = Vec::new();
    for id in &s.nodes {
        let node = env.resource(id)?;
        let dir = env.node_dir(node);
        nodes.push(Node {
            name: patroni::member_name(node),
            cgroup: cgroup::root().map(|root| root.join(cgroup::relative(env, node))),
            pid_files: vec![(dir.join("pid"), "patroni".into()), (dir.join("data").join("postmaster.pid"), "postgres".into())],
        });
    }
    Ok(Config { etcd, key: format!("{}{}-{}/leader", patroni::NAMESPACE, env.name, s.cluster), nodes })
}

pub fn config_files(env: &Env, r: &Resource) -> Result<Vec<(String, String)>> {
    Ok(vec![("config.json".into(), serde_json::to_string_pretty(&config(env, r)?)?)])
}

pub fn observe(env: &Env, r: &Resource) -> Observed {
    match process::running_pid(&paths(env, r).pid(), PROGRAM) {
        Some(pid) => Observed::Running { pid: Some(pid) },
        None => Observed::Down { reason: "the leader watch is not running".into() },
    }
}

/// Writes the configuration and (re)starts the watch from this very scalectl program.
pub fn apply(env: &Env, r: &Resource) -> Result<()> {
    let p = paths(env, r);
    p.stop(PROGRAM)?;
    std::fs::create_dir_all(&p.dir).with_context(|| format!("creating {}", p.dir.display()))?;
    let file = p.dir.join("config.json");
    crate::fsutil::write_atomic(&file, serde_json::to_string_pretty(&config(env, r)?)?.as_bytes(), 0o600)?;
    let me = std::env::current_exe().context("finding the scalectl program to run the leader watch")?;
    let mut cmd = Command::new(me);
    cmd.arg(PROGRAM).arg("--config").arg(&file);
    process::spawn_detached(cmd, &p.log(), &p.pid())?;
    Ok(())
}

pub fn readiness(env: &Env, r: &Resource) -> Result<Readiness> {
    Ok(match process::running_pid(&paths(env, r).pid(), PROGRAM) {
        Some(_) => Readiness::Ready,
        None if process::recorded_alive(&paths(env, r).pid()) => Readiness::Pending("starting".into()),
        None => Readiness::Failed(format!("the leader watch exited; see {}", paths(env, r).log().display())),
    })
}

pub fn destroy(env: &Env, r: &Resource, keep_data: bool) -> Result<()> {
    paths(env, r).destroy(PROGRAM, keep_data)
}

/// The etcd v3 JSON API's form of a key or value.
fn b64(s: &str) -> String {
    B64.encode(s)
}

/// The body that reads the lock.
pub fn range_request(key: &str) -> Value {
    json!({ "key": b64(key) })
}

/// The body that deletes the lock only while it still names `holder`.
pub fn release_request(key: &str, holder: &str) -> Value {
    json!({
        "compare": [{ "key": b64(key), "result": "EQUAL", "target": "VALUE", "value": b64(holder) }],
        "success": [{ "request_delete_range": { "key": b64(key) } }],
    })
}

/// Who holds the lock, from a range answer (`None`: nobody).
pub fn holder(range_answer: &Value) -> Option<String> {
    let value = range_answer["kvs"][0]["value"].as_str()?;
    String::from_utf8(B64.decode(value).ok()?).ok()
}

/// One call to etcd's JSON gateway, on whichever member answers first.
fn etcd(c: &Config, path: &str, body: &Value) -> Result<Value, String> {
    let text = body.to_string();
    let mut last = String::from("no etcd member configured");
    for addr in &c.etcd {
        match health::http(*addr, "POST", path, Some(&text), Duration::from_secs(1)) {
            Ok((200, answer)) => return serde_json::from_str(&answer).map_err(|e| format!("etcd answered {answer}: {e}")),
            Ok((code, answer)) => last = format!("{addr}: {code} {answer}"),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Releases the lock if it names a dead node; returns what it did, if anything.
fn release_if_dead(c: &Config, dead: &[&Node]) -> Result<Option<String>, String> {
    let Some(leader) = holder(&etcd(c, "/v3/kv/range", &range_request(&c.key))?) else { return Ok(None) };
    if !dead.iter().any(|n| n.name == leader) {
        return Ok(None);
    }
    let answer = etcd(c, "/v3/kv/txn", &release_request(&c.key, &leader))?;
    Ok(Some(if answer["succeeded"] == true {
        format!("released the leader lock of {leader}: its node has no process left")
    } else {
        format!("the leader lock moved on from {leader} before it could be released")
    }))
}

/// The watch itself: runs until stopped, or until its configuration file is removed
/// with the environment.
pub fn run(config_file: &Path) -> Result<()> {
    let read = || -> Result<Config> {
        let text = std::fs::read_to_string(config_file).with_context(|| format!("reading {}", config_file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", config_file.display()))
    };
    let c = read()?;
    println!("watching {} for a leader whose node dies ({} nodes)", c.key, c.nodes.len());
    let mut was_dead: Vec<bool> = c.nodes.iter().map(Node::is_dead).collect();
    let mut checked = Instant::now() - RECHECK;
    loop {
        if !config_file.exists() {
            println!("{} is gone with its environment; stopping", config_file.display());
            return Ok(());
        }
        let now_dead: Vec<bool> = c.nodes.iter().map(Node::is_dead).collect();
        let newly = now_dead.iter().zip(&was_dead).any(|(now, before)| *now && !before);
        let dead: Vec<&Node> = c.nodes.iter().zip(&now_dead).filter(|(_, d)| **d).map(|(n, _)| n).collect();
        if !dead.is_empty() && (newly || checked.elapsed() >= RECHECK) {
            checked = Instant::now();
            match release_if_dead(&c, &dead) {
                Ok(Some(what)) => println!("{what}"),
                Ok(None) => {}
                Err(e) => eprintln!("could not read the leader lock: {e}"),
            }
        }
        was_dead = now_dead;
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_released_only_while_it_names_the_dead_node() {
        let r = release_request("/scalectl/e-r1/leader", "r1-pg-1");
        assert_eq!(r["compare"][0]["value"], b64("r1-pg-1"), "compared with the dead holder");
        assert_eq!(r["compare"][0]["target"], "VALUE");
        assert_eq!(r["success"][0]["request_delete_range"]["key"], b64("/scalectl/e-r1/leader"));
        assert_eq!(holder(&json!({"kvs": [{"key": b64("k"), "value": b64("r1-pg-2")}]})), Some("r1-pg-2".into()));
        assert_eq!(holder(&json!({"count": "0"})), None, "no lock, nobody to release");
    }

    #[test]
    fn a_node_is_dead_only_when_nothing_of_it_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let group = tmp.path().join("group");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("cgroup.procs"), "123\n").unwrap();
        let n = Node { name: "pg".into(), cgroup: Some(group.clone()), pid_files: vec![] };
        assert!(!n.is_dead(), "a process in the group");
        std::fs::write(group.join("cgroup.procs"), "").unwrap();
        assert!(n.is_dead(), "an empty group");
        let gone = Node { name: "pg".into(), cgroup: Some(tmp.path().join("never-made")), pid_files: vec![] };
        assert!(gone.is_dead(), "no group at all");

        // Without cgroups: our own pid counts as a running "patroni" only if its command
        // line says so, so a recycled pid is not mistaken for the node.
        let pid_file = tmp.path().join("pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let me = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
        let alive = Node { name: "pg".into(), cgroup: None, pid_files: vec![(pid_file.clone(), me)] };
        assert!(!alive.is_dead());
        let other = Node { name: "pg".into(), cgroup: None, pid_files: vec![(pid_file, "patroni".into())] };
        assert!(other.is_dead(), "the pid runs something else");
    }
}
