//! System tests of `scalectl chaos`: faults by hand and their undoing (also after the
//! injecting process was killed), experiments on level 3 that must pass, a gate over
//! several, and a broken shop the checker must catch.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{Home, eventually, text};

fn rules_of(env: &str) -> usize {
    let out = std::process::Command::new("iptables").args(["-w", "-S", "OUTPUT"]).output().expect("iptables");
    text(&out.stdout).lines().filter(|l| l.contains(&format!("scalectl:{env}"))).count()
}

/// A shipped experiment, shortened so that a test can afford it: the workload lasts
/// `workload`, the fault starts at `fault_at` and lasts `fault_for`.
fn short(home: &Home, name: &str, workload: &str, fault_at: &str, fault_for: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/chaos/{name}.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut out = String::new();
    let mut in_workload = false;
    for line in text.lines() {
        let t = line.trim_start();
        if !line.starts_with(' ') {
            in_workload = t.starts_with("workload:");
        }
        let indent = &line[..line.len() - t.len()];
        let line = if in_workload && t.starts_with("duration:") {
            format!("{indent}duration: {workload}")
        } else if in_workload && t.starts_with("rate:") {
            format!("{indent}rate: 50")
        } else if t.starts_with("at:") {
            format!("{indent}at: {fault_at}")
        } else if !in_workload && t.starts_with("duration:") && indent.len() >= 4 {
            format!("{indent}duration: {fault_for}")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    let text = out;
    let path = home.root.parent().unwrap().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn shipped_experiments_list_and_validate_and_a_bad_one_is_located() {
    let home = Home::new();
    let list = home.json(&["chaos", "list"]);
    let names: Vec<&str> = list["experiments"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    for want in ["primary-loss", "partition-primary-from-replicas", "flash-sale-under-failover", "switchover", "redis-loss"] {
        assert!(names.contains(&want), "{want} is shipped: {names:?}");
    }
    home.expect(0, &["chaos", "validate", "primary-loss", "switchover"]);
    let bad = home.root.parent().unwrap().join("bad.yaml");
    let text = std::fs::read_to_string(format!("{}/chaos/primary-loss.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("kind: node-loss", "kind: node-los");
    std::fs::write(&bad, &text).unwrap();
    let out = home.expect(1, &["chaos", "validate", bad.to_str().unwrap()]);
    let report = support::text(&out.stdout);
    assert!(report.contains("method.0.kind") && report.contains("node-loss"), "located, with the nearest kind: {report}");
}

#[test]
fn a_partition_is_undone_by_heal_and_by_the_next_command_when_its_injector_dies() {
    if !nix_is_root() {
        eprintln!("skipped: partitions need root");
        return;
    }
    let home = Home::new();
    let env = home.env("part");
    home.expect(0, &["up", "--level", "1", "--env", &env, "-q"]);
    home.expect(0, &["chaos", "inject", "--env", &env, "--fault", "partition", "--target", "shops,db", "-q"]);
    assert!(rules_of(&env) > 0, "the partition is in place");
    let status = home.run(&["status", "--env", &env, "-o", "json"]);
    assert!(rules_of(&env) > 0, "a fault injected on purpose survives other commands ({})", status.status);
    let healed = home.json(&["chaos", "heal", "--env", &env]);
    assert!(healed["undone"].as_str().unwrap_or("").contains("network rule"), "{healed}");
    assert_eq!(rules_of(&env), 0);

    // An injector that holds the fault and is killed leaves it to the next command.
    let mut held = home
        .cmd(&["chaos", "inject", "--env", &env, "--fault", "partition", "--target", "shops,db", "--for", "10m", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the partition", || (rules_of(&env) > 0).then_some(()));
    held.kill().unwrap();
    held.wait().unwrap();
    assert!(rules_of(&env) > 0, "killed in the middle, the rules are still there");
    let status = home.status(&env);
    assert_eq!(rules_of(&env), 0, "the next command undid them: {status}");
    eventually(Duration::from_secs(10), "a healthy environment again", || (home.status(&env)["healthy"] == true).then_some(()));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

#[test]
fn experiments_on_level_3_pass_and_a_non_idempotent_shop_is_caught() {
    let home = Home::new();
    let env = home.env("chaos3");
    home.expect(0, &["up", "--level", "3", "--env", &env, "-q"]);
    let experiment = short(&home, "primary-loss", "25s", "6s", "10s");
    let out = home.run(&["chaos", "run", &experiment, "--env", &env, "-q", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "primary-loss passes: {report:#}\n{}", text(&out.stderr));
    let run = &report["runs"][0];
    assert_eq!(run["rpo"], 0, "{run:#}");
    let rto = run["faults"][0]["rto_s"].as_f64().or_else(|| run["faults"][0]["rto"].as_f64());
    assert!(rto.is_some_and(|s| s > 0.0 && s < 60.0), "RTO is reported: {run:#}");
    assert!(std::path::Path::new(run["timeline"].as_str().unwrap()).exists(), "the SVG timeline is written");
    let during = &run["steady_state_during"];
    assert!(
        during["rounds"].as_u64().is_some_and(|n| n > 0) && during["failures"].to_string().contains("patroni-nodes"),
        "the probes ran during the method and saw the killed node missing: {during}"
    );
    eprintln!("primary-loss: {}", run["text"].as_str().unwrap_or(""));

    // A gate, as a pipeline runs it: every experiment runs, one that cannot run fails the
    // gate like one whose checks failed, and each is named with its result.
    let passing = short(&home, "shop-instance-loss", "12s", "4s", "4s");
    let out = home.run(&["chaos", "gate", "--env", &env, &passing, "no-such-experiment", "-q", "-o", "json"]);
    let gate: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "a gate that cannot run fails the whole: {gate:#}");
    let results: Vec<(&str, &str)> =
        gate["gates"].as_array().unwrap().iter().map(|g| (g["gate"].as_str().unwrap(), g["result"].as_str().unwrap())).collect();
    assert_eq!(results, [(passing.as_str(), "passed"), ("no-such-experiment", "failed")], "{gate:#}");
    assert_eq!(gate["gates"][0]["report"]["rpo"], 0, "each gate carries its run's report: {gate:#}");
    assert!(gate["gates"][1]["why"].as_str().unwrap().starts_with("did not run"), "{gate:#}");

    // The leader cut off from both replicas, and a flash sale while the leader dies.
    for (name, fault_at, fault_for) in [("partition-primary-from-replicas", "5s", "8s"), ("flash-sale-under-failover", "5s", "10s")] {
        let experiment = short(&home, name, "22s", fault_at, fault_for);
        let out = home.run(&["chaos", "run", &experiment, "--env", &env, "-q", "-o", "json"]);
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
        assert_eq!(out.status.code(), Some(0), "{name} passes: {report:#}");
        assert_eq!(report["runs"][0]["rpo"], 0, "{name}: no acknowledged write lost");
        eprintln!("{name}: {}", report["runs"][0]["text"].as_str().unwrap_or(""));
    }

    // Every outbox worker killed while it delivers: checkout goes on, and each order's
    // event is delivered exactly once when the workers are back.
    let experiment = short(&home, "worker-loss", "20s", "4s", "8s");
    let out = home.run(&["chaos", "run", &experiment, "--env", &env, "-q", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "worker-loss passes: {report:#}");
    let run = &report["runs"][0];
    assert!(run["faults"][0]["target"].to_string().contains("worker"), "the workers were what was killed: {run:#}");
    let outbox = run["checks"].as_array().unwrap().iter().find(|c| c["check"] == "outbox").cloned().unwrap_or_default();
    assert!(outbox["summary"].as_str().is_some_and(|s| s.contains("orders notified") && !s.starts_with("0 of")), "{run:#}");
    eprintln!("worker-loss: {}", run["text"].as_str().unwrap_or(""));

    // Issue 19: a switchover, then the new leader lost the moment it returns (faults on
    // one timeline, the second `after` the first): another node takes over, nothing lost.
    let compound = std::fs::read_to_string(format!("{}/chaos/switchover-then-leader-loss.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("duration: 90s", "duration: 40s")
        .replace("at: 20s", "at: 5s")
        .replace("duration: 30s", "duration: 15s");
    let path = home.root.parent().unwrap().join("switchover-then-leader-loss.yaml");
    std::fs::write(&path, compound).unwrap();
    let out = home.run(&["chaos", "run", path.to_str().unwrap(), "--env", &env, "-q", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "switchover then leader loss passes: {report:#}");
    let faults = report["runs"][0]["faults"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = faults.iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, ["switchover", "node-loss"], "both faults ran, in order: {report:#}");
    assert!(faults[1]["rto_s"].as_f64().is_some(), "writes were acknowledged after the second fault: {report:#}");
    eprintln!("switchover-then-leader-loss: {}", report["runs"][0]["text"].as_str().unwrap_or(""));

    // The same experiment against shops that do not honour idempotency keys: replays make
    // second orders, and the checker names them.
    home.expect(0, &["chaos", "inject", "--env", &env, "--fault", "shop-instance-loss", "--target", "shops", "-q"]);
    let up = home.cmd(&["up", "--env", &env, "-q"]).env("SHOP_UNSAFE_NON_IDEMPOTENT_CHECKOUT", "1").output().unwrap();
    assert!(up.status.success(), "{}", text(&up.stderr));
    let experiment = short(&home, "primary-loss", "12s", "4s", "4s");
    let out = home.run(&["chaos", "run", &experiment, "--env", &env, "-q", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "the broken shop fails the experiment: {}", text(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["runs"][0]["checks"].to_string();
    assert!(findings.contains("duplicate") || findings.contains("lost"), "the lost or duplicated orders are named: {findings}");
}
