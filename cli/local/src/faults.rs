//! Faults for the chaos runner on the local target, and undoing them. They act only on
//! this environment's processes (found through its cgroups, or its directories) and its
//! loopback addresses. Whatever a fault leaves behind — a stopped process, an iptables
//! rule — is undone by [`heal`], which the runner's rollbacks call and which every later
//! scalectl command on the environment calls too, so an interrupted run leaves nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use scalectl_core::fault::{FaultKind, Selector};
use scalectl_core::{Resource, ResourceKind};
use serde::Serialize;

use crate::{Env, cgroup, process};

/// Every process of a node: its cgroup when there is one; else every process whose
/// command line names the node's directory, and their descendants.
pub fn node_pids(env: &Env, r: &Resource) -> Vec<u32> {
    node_pids_among(env, r, &process::all())
}

/// [`node_pids`] over a process list read once for several nodes.
fn node_pids_among(env: &Env, r: &Resource, all: &[(u32, u32, String)]) -> Vec<u32> {
    let mut pids: BTreeSet<u32> = cgroup::pids(env, r).into_iter().collect();
    let dir = env.node_dir(r).to_string_lossy().to_string();
    pids.extend(all.iter().filter(|(_, _, cmd)| cmd.contains(&dir)).map(|(p, _, _)| *p));
    loop {
        let children: Vec<u32> = all.iter().filter(|(p, pp, _)| !pids.contains(p) && pids.contains(pp)).map(|(p, _, _)| *p).collect();
        if children.is_empty() {
            break;
        }
        pids.extend(children);
    }
    pids.into_iter().collect()
}

fn signal_all(pids: &[u32], sig: Signal) -> usize {
    pids.iter().filter(|p| kill(Pid::from_raw(**p as i32), sig).is_ok()).count()
}

/// The abrupt loss of a node: SIGKILL to every process of it.
pub fn kill_node(env: &Env, r: &Resource) -> Result<usize> {
    // Stopped processes die of SIGKILL too; no SIGCONT needed.
    let n = signal_all(&node_pids(env, r), Signal::SIGKILL);
    if n == 0 {
        bail!("{} has no running process to kill", r.id);
    }
    Ok(n)
}

/// A node that hangs: SIGSTOP to every process of it, until [`thaw`] or [`heal`].
pub fn freeze(env: &Env, r: &Resource) -> Result<usize> {
    let n = signal_all(&node_pids(env, r), Signal::SIGSTOP);
    if n == 0 {
        bail!("{} has no running process to freeze", r.id);
    }
    Ok(n)
}

pub fn thaw(env: &Env, r: &Resource) -> usize {
    signal_all(&node_pids(env, r), Signal::SIGCONT)
}

/// The comment that marks this environment's iptables rules, so `heal` finds them all.
fn rule_tag(env: &Env) -> String {
    format!("scalectl:{}", env.name)
}

fn iptables(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(crate::tools::find("iptables").context("partitions need iptables; install it with `apt-get install iptables`")?);
    cmd.arg("-w").args(args);
    process::run(cmd, "iptables")
}

/// Cuts the network between two sides: packets from one side's processes (matched by
/// cgroup, since on loopback every connection leaves from 127.0.0.1) to the other
/// side's addresses are dropped, both ways. Needs root and cgroup v2, and says so.
pub fn partition(env: &Env, a: &[&Resource], b: &[&Resource]) -> Result<usize> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("a network partition needs root (iptables); run scalectl as root or choose another experiment");
    }
    if cgroup::root().is_none() {
        bail!("a network partition on loopback needs cgroup v2 to tell nodes apart, and this machine has none mounted");
    }
    let mut rules = 0;
    for (from, to) in [(a, b), (b, a)] {
        let addrs: BTreeSet<Ipv4Addr> = to.iter().filter_map(|r| r.address).collect();
        for r in from.iter() {
            for addr in &addrs {
                let path = cgroup::relative(env, r);
                let dst = format!("{addr}/32");
                let tag = rule_tag(env);
                iptables(&["-I", "OUTPUT", "-m", "cgroup", "--path", &path, "-d", &dst, "-m", "comment", "--comment", &tag, "-j", "DROP"])?;
                rules += 1;
            }
        }
    }
    Ok(rules)
}

/// What [`heal`] undid.
#[derive(Debug, Default, Serialize)]
pub struct Healed {
    pub rules_removed: usize,
    pub processes_resumed: usize,
    /// Poolers left paused by an `up` that died while it replaced their router.
    pub poolers_resumed: usize,
}

/// Undoes every fault that can linger: removes the environment's iptables rules,
/// resumes its stopped processes and any pooler paused by a command that is gone. Safe to call at any time; cheap when there is nothing.
pub fn heal(env: &Env) -> Result<Healed> {
    let mut healed = Healed::default();
    if nix::unistd::Uid::effective().is_root() && crate::tools::find("iptables").is_some() {
        let tag = rule_tag(env);
        let listing = iptables(&["-S", "OUTPUT"])?;
        for rule in listing.lines().filter(|l| l.contains(&format!("\"{tag}\"")) || l.contains(&format!("--comment {tag} "))) {
            let spec: Vec<String> = shell_words(rule.trim_start_matches("-A ").trim());
            let mut args = vec!["-D".to_string()];
            args.extend(spec);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            iptables(&args)?;
            healed.rules_removed += 1;
        }
    }
    let mut pids: BTreeSet<u32> = cgroup::env_pids(env).into_iter().collect();
    let all = process::all();
    for r in &env.graph.resources {
        pids.extend(node_pids_among(env, r, &all));
    }
    let stopped: Vec<u32> = pids.into_iter().filter(|p| state(*p) == Some('T')).collect();
    healed.processes_resumed = signal_all(&stopped, Signal::SIGCONT);
    for r in env.graph.resources.iter().filter(|r| r.kind == ResourceKind::Pgbouncer) {
        if crate::pgbouncer::resume_if_abandoned(env, r).unwrap_or(false) {
            healed.poolers_resumed += 1;
        }
    }
    Ok(healed)
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Splits an `iptables -S` line into arguments, keeping quoted comments whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The resources a chaos target names, found now (roles move with failovers).
pub fn resolve(env: &Env, target: Selector) -> Result<Vec<&Resource>> {
    let of = |k: ResourceKind| env.graph.resources.iter().filter(move |r| r.kind == k);
    let nodes: Vec<&Resource> = of(ResourceKind::PatroniNode).chain(of(ResourceKind::Postgres)).collect();
    let role_of = |role: &str| -> Result<Vec<&Resource>> {
        let cluster = crate::patroni::cluster(of(ResourceKind::PatroniNode))?;
        let names: Vec<String> = cluster["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == role)
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        // A node killed moments ago is still listed, in its last role, until its member
        // key expires (the leader watch releases only the leader's lock): it is no
        // standby now, and a fault on it would find nothing to act on.
        let all = process::all();
        Ok(of(ResourceKind::PatroniNode)
            .filter(|n| names.contains(&crate::patroni::member_name(n)) && !node_pids_among(env, n, &all).is_empty())
            .collect())
    };
    let found: Vec<&Resource> = match target {
        Selector::Leader => vec![crate::postgres::primary(env, &nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>())?],
        // One of them: level 3 lists two, and a fault on "the" synchronous standby must
        // not take both away.
        Selector::SyncStandby => role_of("sync_standby")?.into_iter().take(1).collect(),
        Selector::Replica => {
            let mut r = role_of("replica")?;
            if r.is_empty() {
                r = role_of("sync_standby")?;
            }
            r.into_iter().take(1).collect()
        }
        Selector::Replicas => {
            let mut r = role_of("replica")?;
            r.extend(role_of("sync_standby")?);
            r
        }
        Selector::Db => {
            let mut r = nodes.clone();
            r.extend(of(ResourceKind::Pgbouncer));
            r.extend(env.graph.resources.iter().filter(|r| crate::haproxy::is_router(r)));
            r
        }
        // The Redis the shop writes to now: after a Sentinel failover, a node that
        // started as a replica.
        Selector::Redis => of(ResourceKind::Redis).filter(|r| crate::redis::serves_writes(env, r)).collect(),
        Selector::ShopAny => of(ResourceKind::Shop).take(1).collect(),
        Selector::Shops => of(ResourceKind::Shop).collect(),
        Selector::Workers => of(ResourceKind::Worker).collect(),
        Selector::Broker => of(ResourceKind::Broker).collect(),
    };
    if found.is_empty() {
        bail!("this environment has nothing that is `{target}` now");
    }
    Ok(found)
}

/// One fault, by its name in experiment files, on what `targets` select now.
pub fn inject(env: &Env, kind: FaultKind, targets: &[Selector]) -> Result<String> {
    let one = |i: usize| -> Result<Vec<&Resource>> { resolve(env, *targets.get(i).context("the fault needs a target")?) };
    let names = |rs: &[&Resource]| rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
    Ok(match kind {
        FaultKind::NodeLoss | FaultKind::RedisLoss | FaultKind::ShopInstanceLoss => {
            let rs = one(0)?;
            let n: usize = rs.iter().map(|r| kill_node(env, r)).sum::<Result<usize>>()?;
            format!("killed {n} process(es) of {}", names(&rs))
        }
        FaultKind::Freeze => {
            let rs = one(0)?;
            let n: usize = rs.iter().map(|r| freeze(env, r)).sum::<Result<usize>>()?;
            format!("froze {n} process(es) of {}", names(&rs))
        }
        FaultKind::Restart => {
            let rs = one(0)?;
            for r in &rs {
                kill_node(env, r)?;
            }
            format!("killed {}; `scalectl up` (or the experiment's restart rollback) starts it again", names(&rs))
        }
        FaultKind::Partition => {
            let (a, b) = (one(0)?, one(1)?);
            let n = partition(env, &a, &b)?;
            format!("cut {} from {} ({n} rules)", names(&a), names(&b))
        }
        FaultKind::Switchover => {
            let to = one(0)?.first().map(|r| r.id.clone());
            let report = crate::ops::switchover(env, to.as_deref())?;
            format!("switched over from {} to {}", report.from, report.to)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn iptables_rules_split_with_their_quoted_comment() {
        let rule = r#"OUTPUT -d 127.5.1.1/32 -m cgroup --path scalectl/x/postgres-r1-pg-1 -m comment --comment "scalectl:x" -j DROP"#;
        let w = shell_words(rule);
        assert_eq!(w[0], "OUTPUT");
        assert!(w.contains(&"scalectl:x".to_string()));
        assert_eq!(w.last().unwrap(), "DROP");
    }
}
