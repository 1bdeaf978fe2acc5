//! System tests: the real `scalectl` binary bringing level 1 up on the local target,
//! using it through the shop, and taking it down again.

mod support;

use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::shop::Shopper;
use support::{Home, alive, processes_mentioning, text};

/// A buyer and a seller doing what shoppers do, through the URL `up` printed.
fn shop_checkout(base: &str) {
    let s = Shopper::new(base, 5);
    let order = s.order("order-1");
    assert_eq!(s.stock(), 4, "stock went down by what was bought");
    assert_eq!(s.order_ids(), vec![order]);
}

/// The session a process belongs to (field 6 of /proc/PID/stat).
fn session(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").unwrap().1.split(' ').nth(3).unwrap().parse().unwrap()
}

fn component_pids(status: &Value) -> Vec<u32> {
    status["components"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_u64()).map(|p| p as u32).collect()
}

#[test]
fn level_1_comes_up_serves_a_checkout_and_goes_away_without_a_trace() {
    let home = Home::new();
    let env = home.env("one");
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    assert_eq!(up["level"], 1);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    let db = up["endpoints"]["database"].as_str().unwrap();
    assert!(db.starts_with("postgres://shop@127."), "the database URL names user and address without a password: {db}");

    shop_checkout(&shop);

    let plan = home.expect(0, &["plan", "--env", &env, "--exit-code"]);
    assert!(text(&plan.stdout).contains("No changes"), "{}", text(&plan.stdout));
    let again = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    assert_eq!(again["changed"], false, "a second up changes nothing");

    let status = home.json(&["status", "--env", &env]);
    assert_eq!(status["healthy"], true, "{status}");
    let pids = component_pids(&status);
    assert!(pids.len() >= 3, "postgres, shop and worker have pids: {status}");
    let ours = session(std::process::id());
    for pid in &pids {
        assert_ne!(session(*pid), ours, "process {pid} shares the session of whoever ran `up`, and dies with it");
    }
    let state = std::fs::read_to_string(home.env_dir(&env).join("state.json")).unwrap();
    let secret = std::fs::read_to_string(home.env_dir(&env).join("secrets/postgres-shop.password")).unwrap();
    assert!(!state.contains(secret.trim()), "the password never reaches the state file");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(home.env_dir(&env).join("secrets/postgres-shop.password")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let env_dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived `down`");
    }
    assert!(processes_mentioning(&env_dir).is_empty(), "nothing runs from the environment's directory");
    assert!(!env_dir.exists(), "down deletes the data");
    let list = home.json(&["list"]);
    assert_eq!(list["environments"], json!([]));
}

#[test]
fn two_environments_run_side_by_side() {
    let home = Home::new();
    let (a, b) = (home.env("side-a"), home.env("side-b"));
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|name| {
            let mut cmd = home.cmd(&["up", "--level", "1", "--env", &name, "-q", "-o", "json"]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    let outs: Vec<Value> = handles
        .into_iter()
        .map(|h| {
            let out = h.join().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let (url_a, url_b) = (outs[0]["endpoints"]["shop"].as_str().unwrap(), outs[1]["endpoints"]["shop"].as_str().unwrap());
    assert_ne!(url_a, url_b, "each environment has its own addresses");
    for url in [url_a, url_b] {
        let r = reqwest::blocking::get(format!("{url}/readyz")).unwrap();
        assert_eq!(r.status(), 200);
    }
    // Taking one down leaves the other serving.
    home.expect(0, &["down", "--env", &a, "-q"]);
    assert_eq!(reqwest::blocking::get(format!("{url_b}/readyz")).unwrap().status(), 200);
    let list = home.json(&["list"]);
    assert_eq!(list["environments"].as_array().unwrap().len(), 1);
}

#[test]
fn a_malformed_manifest_exits_2_with_every_error_located_and_starts_nothing() {
    let home = Home::new();
    let env = home.env("bad");
    let overlay = home.root.parent().unwrap().join("overlay.yaml");
    std::fs::write(&overlay, "spec:\n  shop:\n    wokers: 2\n    dbPoolSize: lots\n  edge:\n    loadBalancer: haproxi\n").unwrap();
    let out = home.expect(2, &["up", "--level", "1", "--env", &env, "-f", overlay.to_str().unwrap()]);
    let err = text(&out.stderr);
    let file = overlay.display().to_string();
    for (line, col, key) in [(3, 5, "spec.shop.wokers"), (4, 17, "spec.shop.dbPoolSize"), (6, 19, "spec.edge.loadBalancer")] {
        assert!(err.contains(&format!("{file}:{line}:{col}: {key}")), "missing {key} at {line}:{col} in:\n{err}");
    }
    assert!(err.contains("did you mean `workers`?"), "{err}");
    assert!(err.contains("did you mean `haproxy`?"), "{err}");
    assert!(!home.env_dir(&env).exists(), "nothing was created");

    let v = home.expect(1, &["validate", "--level", "1", "-f", overlay.to_str().unwrap(), "-o", "json"]);
    let report: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["results"][0]["errors"].as_array().unwrap().len(), 3, "{report}");
}

#[test]
fn an_up_killed_midway_converges_on_the_next_up() {
    let home = Home::new();
    let env = home.env("killed");
    let mut child = home.cmd(&["up", "--level", "1", "--env", &env, "-q"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill it once PostgreSQL has started and before the shop is recorded.
    let pg_pid = home.env_dir(&env).join("nodes/postgres-r1-pg-1/data/postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pg_pid.exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    assert_eq!(up["environment"], env.as_str());
    let plan = home.expect(0, &["plan", "--env", &env, "--exit-code"]);
    assert!(text(&plan.stdout).contains("No changes"));
    let status = home.json(&["status", "--env", &env]);
    assert_eq!(status["healthy"], true, "{status}");
}

#[test]
fn gc_removes_an_expired_environment() {
    let home = Home::new();
    let env = home.env("ttl");
    home.expect(0, &["up", "--level", "1", "--env", &env, "--ttl", "1s", "-q"]);
    let pids = component_pids(&home.json(&["status", "--env", &env]));
    sleep(Duration::from_millis(1500));
    let gc = home.json(&["gc", "-q"]);
    assert_eq!(gc["destroyed"], json!([env]));
    assert!(!home.env_dir(&env).exists());
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived gc");
    }
}

#[test]
fn a_stopped_component_shows_in_plan_and_up_restarts_it() {
    let home = Home::new();
    let env = home.env("heal");
    home.expect(0, &["up", "--level", "1", "--env", &env, "-q"]);
    let status = home.json(&["status", "--env", &env]);
    let shop = status["components"].as_array().unwrap().iter().find(|c| c["kind"] == "shop").unwrap().clone();
    let pid = shop["pid"].as_u64().unwrap() as i32;
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid as u32) && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    let plan = home.expect(1, &["plan", "--env", &env, "--exit-code"]);
    let plan = text(&plan.stdout);
    assert!(plan.contains("~ shop/r1-all-1") && plan.contains("not running"), "{plan}");
    let st = home.run(&["status", "--env", &env]);
    assert_eq!(st.status.code(), Some(1), "status exits 1 when something is down");
    home.expect(0, &["up", "--env", &env, "-q"]);
    assert_eq!(home.json(&["status", "--env", &env])["healthy"], true);
}

#[test]
fn keep_data_stops_processes_and_the_next_up_finds_the_orders() {
    let home = Home::new();
    let env = home.env("keep");
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    let base = up["endpoints"]["shop"].as_str().unwrap().to_string();
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{base}/register"))
        .json(&json!({"email": "k@example.com", "password": "correct horse battery", "roles": "buyer"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    home.expect(0, &["down", "--env", &env, "--keep-data", "-q"]);
    assert!(http.get(format!("{base}/healthz")).send().is_err(), "the shop is stopped");
    home.expect(0, &["up", "--env", &env, "-q"]);
    let r = http.post(format!("{base}/login")).json(&json!({"email": "k@example.com", "password": "correct horse battery"})).send().unwrap();
    assert_eq!(r.status(), 200, "the user registered before survived");
}

#[test]
fn a_rebuilt_shop_shows_in_the_plan_and_up_rolls_it_out() {
    let home = Home::new();
    let env = home.env("rebuilt");
    // A copy of the shop binary this test may "rebuild" without touching other tests'.
    std::fs::create_dir_all(&home.root).unwrap();
    let build = home.root.join("shop-build");
    let shop = std::path::Path::new(support::BIN).with_file_name("shop");
    std::fs::copy(&shop, &build).unwrap();
    let sc = |args: &[&str]| home.cmd(args).env("SCALECTL_SHOP_BIN", &build).output().unwrap();
    let up = sc(&["up", "--level", "1", "--env", &env, "-q", "-o", "json"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let pid_of_shop = || {
        let status = home.json(&["status", "--env", &env]);
        status["components"].as_array().unwrap().iter().find(|c| c["kind"] == "shop").unwrap()["pid"].as_u64().unwrap()
    };
    let before = pid_of_shop();

    // A new build replaces the file (as cargo does: a new file renamed over the old).
    sleep(Duration::from_millis(20));
    let fresh = home.root.join("shop-build.new");
    std::fs::copy(&shop, &fresh).unwrap();
    std::fs::rename(&fresh, &build).unwrap();
    let plan = sc(&["plan", "--env", &env, "--exit-code"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan.stderr));
    let plan = text(&plan.stdout);
    assert!(plan.contains("~ shop/r1-all-1") && plan.contains("program_digest"), "{plan}");

    let up = sc(&["up", "--env", &env, "-q"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_ne!(pid_of_shop(), before, "the shop was restarted on the new build");
    let plan = sc(&["plan", "--env", &env, "--exit-code"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
    assert!(sc(&["down", "--env", &env, "-q"]).status.success());
}

/// Rewrites a state file into the layout scalectl 0.1 wrote (state format 1): no
/// version, no outputs, the spec called `props` with the digests among them.
/// `cli/src/home.rs` checks this layout against a file recorded from a real 0.1 `up`.
fn rewrite_as_v1(path: &std::path::Path) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("version");
    o.remove("outputs");
    for r in o["resources"].as_object_mut().unwrap().values_mut() {
        let r = r.as_object_mut().unwrap();
        let mut props = r.remove("spec").unwrap();
        if let Some(Value::Object(d)) = r.remove("digests") {
            props.as_object_mut().unwrap().extend(d);
        }
        r.insert("props".into(), props);
    }
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn an_environment_brought_up_with_state_format_1_plans_as_a_no_op_and_keeps_serving() {
    let home = Home::new();
    let env = home.env("v1");
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    let path = home.env_dir(&env).join("state.json");
    rewrite_as_v1(&path);
    let v1: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(v1.get("version").is_none() && v1.get("outputs").is_none(), "{v1}");

    let plan = home.expect(0, &["plan", "--env", &env, "--exit-code"]);
    assert!(text(&plan.stdout).contains("No changes"), "{}", text(&plan.stdout));
    let again = home.json(&["up", "--env", &env, "-q"]);
    assert_eq!(again["changed"], false, "nothing restarts after the upgrade");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(state["version"], 3, "the next save writes the new format");
    assert!(state["resources"]["shop/r1-all-1"].get("props").is_none(), "{state}");
    assert!(state["resources"]["shop/r1-all-1"]["digests"]["program_digest"].is_string(), "{state}");
    shop_checkout(&shop);
    home.expect(0, &["down", "--env", &env, "-q"]);
}

/// Kills `pids` that are still alive when dropped, so a failing test leaks nothing.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|p| alive(**p)) {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
fn gc_stops_what_an_environment_deleted_without_down_left_and_frees_its_block() {
    let home = Home::new();
    let env = home.env("orphan");
    home.expect(0, &["up", "--level", "1", "--env", &env, "-q"]);
    let pids = component_pids(&home.json(&["status", "--env", &env]));
    let _reap = Reap(pids.clone());
    let dir = home.env_dir(&env);
    // Deleted by hand while everything runs (PostgreSQL may write a file meanwhile).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::remove_dir_all(&dir).is_err() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists());

    let gc = home.json(&["gc", "-q"]);
    let owner = dir.to_string_lossy();
    let ours = gc["abandoned"].as_array().unwrap().iter().find(|a| a["owner"] == *owner).unwrap_or_else(|| panic!("{gc}")).clone();
    assert!(ours["processes"].as_array().unwrap().len() >= pids.len(), "every process it left: {ours} against {pids:?}");
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} of the deleted environment outlived gc");
    }
    let claim = std::path::Path::new("/tmp/scalectl-slots").join(ours["slot"].to_string());
    assert!(std::fs::read_to_string(&claim).map_or(true, |holder| holder != *owner), "its block is free again");
}

#[test]
fn a_poison_event_is_retried_then_dead_lettered_and_a_corrected_replay_is_delivered_once() {
    let home = Home::new();
    let env = home.env("dlq");
    let up = home.json(&["up", "--level", "1", "--env", &env, "-q"]);
    let s = Shopper::new(up["endpoints"]["shop"].as_str().unwrap(), 5);
    s.order("order-1");
    let sql = |q: &str| support::psql(&home, &env, "postgres/r1-pg-1", "shop", q);

    // The order's event reaches the worker: nothing pending, one delivery with its lag.
    let delivered = support::eventually(Duration::from_secs(30), "the order's notification", || {
        let q = home.json(&["queue", "status", "--env", &env]);
        (q["pending"] == 0 && q["lag"]["events"].as_u64() >= Some(1)).then_some(q)
    });
    assert!(delivered["lag"]["p99_seconds"].as_f64().is_some_and(|l| (0.0..30.0).contains(&l)), "{delivered}");
    assert_eq!(delivered["dead"], 0, "{delivered}");

    // An event no gateway can deliver: retried with backoff, then dead after 5 attempts.
    let poison: i64 = sql(
        "INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"order_id\": 424242, \"email\": \"nobody\", \"total_cents\": 1}') RETURNING id",
    )
    .parse()
    .unwrap();
    support::eventually(Duration::from_secs(10), "the poison event waiting to retry", || {
        let q = home.json(&["queue", "status", "--env", &env]);
        (q["retrying"] == 1 && q["pending"] == 1).then_some(())
    });
    let dead = support::eventually(Duration::from_secs(60), "the poison event dead-lettered", || {
        let d = home.json(&["queue", "dlq", "list", "--env", &env]);
        (d["total"] == 1).then_some(d)
    });
    let letter = &dead["letters"][0];
    assert_eq!(letter["event"], poison, "{dead}");
    assert_eq!(letter["attempts"], 5, "{dead}");
    assert_eq!(letter["replays"], 0, "{dead}");
    assert!(letter["last_error"].as_str().unwrap().contains("undeliverable address `nobody`"), "{dead}");
    assert_eq!(home.json(&["queue", "status", "--env", &env])["dead"], 1);
    let table = text(&home.expect(0, &["queue", "dlq", "list", "--env", &env]).stdout);
    assert!(table.starts_with("EVENT") && table.contains(&poison.to_string()) && table.contains("undeliverable"), "{table}");

    // Replaying an event that is not dead replays nothing, not even the others named.
    let refused = home.expect(2, &["queue", "dlq", "replay", "--env", &env, &poison.to_string(), "999999"]);
    assert!(text(&refused.stderr).contains("no dead letter for event 999999; nothing was replayed"), "{}", text(&refused.stderr));
    assert_eq!(home.json(&["queue", "dlq", "list", "--env", &env])["total"], 1);

    // Replayed as it is, it dies again, counted as a replay.
    let replayed = home.json(&["queue", "dlq", "replay", "--env", &env, &poison.to_string()]);
    assert_eq!(replayed["replayed"], json!([poison]));
    let again = support::eventually(Duration::from_secs(60), "the replayed poison dead again", || {
        let d = home.json(&["queue", "dlq", "list", "--env", &env]);
        (d["letters"][0]["replays"] == 1).then_some(d)
    });
    assert_eq!(again["letters"][0]["attempts"], 5, "{again}");

    // With the payload corrected where it is stored, the replay is delivered, once.
    sql(&format!("UPDATE dead_letters SET payload = jsonb_set(payload, '{{email}}', '\"buyer@example.com\"') WHERE outbox_id = {poison}"));
    let all = home.json(&["queue", "dlq", "replay", "--env", &env, "--all"]);
    assert_eq!(all["replayed"], json!([poison]));
    support::eventually(Duration::from_secs(30), "the corrected event delivered", || {
        (sql(&format!("SELECT count(*) FROM notifications WHERE outbox_id = {poison} AND recipient = 'buyer@example.com'")) == "1").then_some(())
    });
    let q = home.json(&["queue", "status", "--env", &env]);
    assert_eq!((q["pending"].clone(), q["dead"].clone()), (json!(0), json!(0)), "{q}");
    assert_eq!(sql(&format!("SELECT count(*) FROM notifications WHERE outbox_id = {poison}")), "1", "delivered exactly once");
    let nothing = text(&home.expect(0, &["queue", "dlq", "replay", "--env", &env, "--all"]).stdout);
    assert!(nothing.contains("nothing to replay"), "{nothing}");

    // A primary that does not answer (frozen) makes the queue's commands fail with a
    // reason instead of hanging; thawed, it answers again.
    home.expect(0, &["chaos", "inject", "--env", &env, "--fault", "freeze", "--target", "leader", "-q"]);
    let frozen = home.run(&["queue", "status", "--env", &env]);
    let why = text(&frozen.stderr);
    assert!(!frozen.status.success() && why.contains("postgres/r1-pg-1 did not answer within"), "{why}");
    home.expect(0, &["chaos", "heal", "--env", &env, "-q"]);
    assert_eq!(home.json(&["queue", "status", "--env", &env])["dead"], 0);
}

#[test]
fn an_alert_fires_while_a_shop_is_down_reaches_the_receiver_and_resolves_once_up_restarts_it() {
    let home = Home::new();
    let env = home.env("alerts");
    let up: Vec<&str> = vec![
        "up",
        "--level",
        "1",
        "--env",
        &env,
        "-q",
        "--set",
        "spec.observability.burnRateAlerts=true",
        "--set",
        "spec.observability.prometheus.scrapeInterval=1s",
    ];
    let started = home.json(&up);
    assert!(started["endpoints"]["alertmanager"].as_str().is_some_and(|a| a.ends_with(":9093")), "{started}");
    let quiet = text(&home.expect(0, &["alerts", "--env", &env, "--exit-code"]).stdout);
    assert!(quiet.contains("No alert has been delivered"), "{quiet}");

    let status = home.json(&["status", "--env", &env]);
    let pid_of = |kind: &str| status["components"].as_array().unwrap().iter().find(|c| c["kind"] == kind).unwrap()["pid"].as_u64().unwrap() as u32;
    let (shop, manager, receiver) = (pid_of("shop"), pid_of("alertmanager"), pid_of("alert-receiver"));
    std::process::Command::new("kill").args(["-9", &shop.to_string()]).status().unwrap();

    // Prometheus raises ScrapeTargetDown after its minute, Alertmanager delivers it.
    let shop_down = |a: &Value| a["name"] == "ScrapeTargetDown" && a["labels"]["job"] == "shop";
    let fired = support::eventually(Duration::from_secs(150), "ScrapeTargetDown delivered as firing", || {
        let report = home.json(&["alerts", "--env", &env]);
        report["alerts"].as_array()?.iter().find(|a| shop_down(a) && a["state"] == "firing").cloned()
    });
    assert!(fired["ends_at"].is_null(), "{fired}");
    let firing = home.expect(1, &["alerts", "--env", &env, "--exit-code"]);
    let table = text(&firing.stdout);
    assert!(table.starts_with("STATE") && table.contains("firing") && table.contains("ScrapeTargetDown"), "{table}");

    // `up` restarts the shop; the resolution is delivered too.
    home.json(&up);
    let resolved = support::eventually(Duration::from_secs(120), "ScrapeTargetDown delivered as resolved", || {
        let report = home.json(&["alerts", "--env", &env]);
        report["alerts"].as_array()?.iter().find(|a| shop_down(a) && a["state"] == "resolved").cloned()
    });
    assert!(resolved["ends_at"].as_str().is_some_and(|t| t > fired["starts_at"].as_str().unwrap()), "{resolved}");
    home.expect(0, &["alerts", "--env", &env, "--exit-code"]);

    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(!alive(manager) && !alive(receiver), "Alertmanager and the receiver stop with the environment");
}
