//! System tests: level 3 on the local target. Three PostgreSQL nodes under Patroni
//! (a leader and two synchronous standbys) behind a router that follows the
//! leader; the shop must keep every acknowledged order through a failover, a planned
//! switchover, and a move up from level 2.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::shop::Shopper;
use support::{Home, eventually, kill_everything_in, psql};

fn leader(home: &Home, env: &str) -> Option<String> {
    let status = home.status(env);
    status["insights"]["database"]["leader"].as_str().map(str::to_string)
}

fn members_with_role(home: &Home, env: &str, role: &str) -> Vec<String> {
    let status = home.status(env);
    let members = status["insights"]["database"]["members"].as_array().cloned().unwrap_or_default();
    members.iter().filter(|m| m["role"] == role).filter_map(|m| m["id"].as_str().map(str::to_string)).collect()
}

fn member_with_role(home: &Home, env: &str, role: &str) -> Option<String> {
    let status = home.status(env);
    status["insights"]["database"]["members"].as_array()?.iter().find(|m| m["role"] == role)?["id"].as_str().map(str::to_string)
}

/// Checks on the leader that each acknowledged order exists exactly once with its
/// payment, that no idempotency key made two orders, and that no stock was lost.
fn assert_orders_intact(home: &Home, env: &str, s: &Shopper, acknowledged: &[(String, i64)], initial_stock: i64) {
    let leader = leader(home, env).expect("a leader");
    for (key, id) in acknowledged {
        let found =
            psql(home, env, &leader, "shop", &format!("SELECT count(*) FROM orders o JOIN payments p ON p.order_id = o.id WHERE o.id = {id}"));
        assert_eq!(found, "1", "acknowledged order {id} (key {key}) exists exactly once with its payment");
    }
    let per_key = psql(home, env, &leader, "shop", "SELECT count(*) - count(DISTINCT idempotency_key) FROM orders WHERE idempotency_key IS NOT NULL");
    assert_eq!(per_key, "0", "no idempotency key made two orders");
    let sold: i64 = psql(home, env, &leader, "shop", &format!("SELECT coalesce(sum(quantity), 0) FROM order_items WHERE product_id = {}", s.product))
        .parse()
        .unwrap();
    let stock: i64 = psql(home, env, &leader, "shop", &format!("SELECT stock FROM products WHERE id = {}", s.product)).parse().unwrap();
    assert!(stock >= 0);
    assert_eq!(sold + stock, initial_stock, "sold + remaining = initial");
}

/// Orders with fresh keys until one is acknowledged, retrying each key until the shop
/// answers it; returns the order and how long it took.
fn first_order_after(s: &Shopper, stem: &str, timeout: Duration) -> ((String, i64), Duration) {
    let started = Instant::now();
    let key = format!("{stem}-first");
    let id = eventually(timeout, "an acknowledged order", || s.try_order(&key).ok());
    ((key, id), started.elapsed())
}

#[test]
fn level_3_keeps_every_acknowledged_order_through_failover_and_switchover() {
    let home = Home::new();
    let env = home.env("three");
    let up = home.json(&["up", "--level", "3", "--env", &env, "-q"]);
    let s = Shopper::new(up["endpoints"]["shop"].as_str().unwrap(), 1000);
    assert_eq!(leader(&home, &env).as_deref(), Some("postgres/r1-pg-1"));
    let standbys = members_with_role(&home, &env, "sync_standby");
    assert_eq!(standbys.len(), 2, "both standbys are synchronous");

    let mut acknowledged: Vec<(String, i64)> = (0..20).map(|i| (format!("before-{i}"), s.order(&format!("before-{i}")))).collect();

    // Reads go to the replicas: their transaction counters move while the shop browses.
    let replica_commits = || -> i64 {
        ["postgres/r1-pg-2", "postgres/r1-pg-3"]
            .iter()
            .map(|n| {
                psql(&home, &env, n, "postgres", "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'shop'")
                    .parse::<i64>()
                    .unwrap()
            })
            .sum()
    };
    let before = replica_commits();
    let http = reqwest::blocking::Client::new();
    for i in 0..30 {
        let r = http.get(format!("{}/products?q=phone{i}&limit=5", s.base)).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    // Backends of pooled connections report their counters when idle, within seconds.
    eventually(Duration::from_secs(30), "catalog reads counted on a replica", || (replica_commits() >= before + 10).then_some(()));

    // `db explain` asks a standby by default, and the primary when told.
    let on_replica = home.json(&[
        "db",
        "explain",
        "--env",
        &env,
        "SELECT o.id, i.quantity FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.user_id = 1",
    ]);
    assert!(standbys.iter().any(|n| on_replica["server"] == n.as_str()) && on_replica["role"] == "replica", "{on_replica}");
    assert!(on_replica["plan"][0]["Execution Time"].is_number(), "analyzed: {on_replica}");
    let on_primary = home.json(&["db", "explain", "--env", &env, "--primary", "--no-analyze", "SELECT count(*) FROM orders"]);
    assert_eq!(on_primary["server"], "postgres/r1-pg-1", "{on_primary}");
    assert!(on_primary["plan"][0]["Execution Time"].is_null() && on_primary["analyzed"] == false, "planned only: {on_primary}");

    // Lose the leader abruptly: every process of its node, SIGKILL.
    let killed = kill_everything_in(&home.env_dir(&env).join("nodes/postgres-r1-pg-1"));
    assert!(killed >= 2, "Patroni and PostgreSQL of the leader were killed ({killed})");
    let (first, rto) = first_order_after(&s, "after-failover", Duration::from_secs(90));
    eprintln!("failover: first acknowledged order {:.1} s after the leader was killed", rto.as_secs_f64());
    acknowledged.push(first);
    let promoted = leader(&home, &env).expect("a leader");
    assert!(standbys.contains(&promoted), "Patroni promoted a synchronous standby ({promoted})");
    acknowledged.extend((0..10).map(|i| (format!("after-{i}"), s.order(&format!("after-{i}")))));
    assert_orders_intact(&home, &env, &s, &acknowledged, 1000);

    // `up` brings the lost node back; it rejoins as a replica of the new leader.
    let plan = home.run(&["plan", "--env", &env]);
    assert!(support::text(&plan.stdout).contains("postgres/r1-pg-1"), "plan shows the lost node: {}", support::text(&plan.stdout));
    home.expect(0, &["up", "--env", &env, "-q"]);
    eventually(Duration::from_secs(60), "the old leader back as synchronous standby", || {
        members_with_role(&home, &env, "sync_standby").contains(&"postgres/r1-pg-1".to_string()).then_some(())
    });

    // A planned switchover back to it loses nothing and says how long writes paused.
    let report: Value = home.json(&["switchover", "--env", &env, "--to", "r1-pg-1", "-q"]);
    assert_eq!(report["to"], "postgres/r1-pg-1", "{report}");
    let (resumed, paused) = (report["writes_resumed_after_seconds"].as_f64().unwrap(), report["writes_paused_seconds"].as_f64().unwrap());
    assert!(paused > 0.0 && paused <= resumed + 0.5, "a pause measured by writing all along, within the switchover: {report}");
    acknowledged.extend((0..10).map(|i| (format!("switched-{i}"), s.order(&format!("switched-{i}")))));
    assert_orders_intact(&home, &env, &s, &acknowledged, 1000);
    let mut want: Vec<i64> = acknowledged.iter().map(|(_, id)| *id).collect();
    want.sort();
    // Order history is read from a replica when the shop instance serving the read did not
    // see the buyer's last write (read-your-writes is tracked per instance), so it may
    // lag for a moment behind the leader.
    eventually(Duration::from_secs(15), "the shop listing exactly the acknowledged orders", || {
        let mut listed = s.order_ids();
        listed.sort();
        (listed == want).then_some(())
    });

    // With both standbys lost, catalog reads fall back to the leader through the router.
    for node in ["postgres-r1-pg-2", "postgres-r1-pg-3"] {
        kill_everything_in(&home.env_dir(&env).join("nodes").join(node));
    }
    let page = eventually(Duration::from_secs(20), "a catalog read served by the leader alone", || {
        let r = http.get(format!("{}/products?limit=5", s.base)).send().ok()?;
        (r.status() == 200).then(|| r.json::<Value>().unwrap())
    });
    assert!(!page["items"].as_array().unwrap().is_empty(), "the catalog read found the product: {page}");

    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(support::processes_mentioning(&dir).is_empty(), "no Patroni, PostgreSQL or etcd process outlives `down`");
}

#[test]
fn a_level_2_environment_moves_up_to_level_3_with_its_orders() {
    let home = Home::new();
    let env = home.env("move");
    let up = home.json(&["up", "--level", "2", "--env", &env, "-q"]);
    let s = Shopper::new(up["endpoints"]["shop"].as_str().unwrap(), 100);
    let mut acknowledged: Vec<(String, i64)> = (0..10).map(|i| (format!("l2-{i}"), s.order(&format!("l2-{i}")))).collect();

    let plan = home.run(&["plan", "--level", "3", "--env", &env]);
    let plan = support::text(&plan.stdout);
    for line in ["+ etcd/r1", "+ postgres/r1-pg-2", "+ haproxy/r1-db", "~ postgres/r1-pg-1", "~ pgbouncer/r1"] {
        assert!(plan.contains(line), "plan shows `{line}`:\n{plan}");
    }
    // The shop is asked every 100 ms while the environment moves; it may pause briefly.
    let moving = std::sync::atomic::AtomicBool::new(true);
    let (moved, longest_outage) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let (mut longest, mut since) = (Duration::ZERO, None::<Instant>);
            while moving.load(std::sync::atomic::Ordering::Relaxed) {
                match (s.history_answers(), since) {
                    (true, Some(t)) => {
                        longest = longest.max(t.elapsed());
                        since = None;
                    }
                    (false, None) => since = Some(Instant::now()),
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            since.map_or(longest, |t| longest.max(t.elapsed()))
        });
        let moved = home.json(&["up", "--level", "3", "--env", &env, "-q"]);
        moving.store(false, std::sync::atomic::Ordering::Relaxed);
        (moved, poller.join().unwrap())
    });
    eprintln!("move to level 3: longest time the shop did not answer: {:.1} s", longest_outage.as_secs_f64());
    assert!(longest_outage < Duration::from_secs(10), "the shop kept serving but for a brief switch ({longest_outage:?})");
    assert_eq!(moved["level"], 3);
    let notes = moved["notes"].to_string();
    assert!(notes.contains("took over"), "up reports the brief switch: {moved}");
    assert_eq!(moved["endpoints"]["shop"], up["endpoints"]["shop"], "the shop keeps its URL");
    assert_eq!(leader(&home, &env).as_deref(), Some("postgres/r1-pg-1"), "the level-2 server leads the new cluster");
    assert!(member_with_role(&home, &env, "sync_standby").is_some());

    acknowledged.extend((0..10).map(|i| (format!("l3-{i}"), s.order(&format!("l3-{i}")))));
    assert_orders_intact(&home, &env, &s, &acknowledged, 100);
    let partitions = psql(&home, &env, "postgres/r1-pg-1", "shop", "SELECT count(*) FROM pg_inherits WHERE inhparent = 'orders'::regclass");
    assert!(partitions.parse::<i64>().unwrap() >= 4, "orders are partitioned by month, future months made ahead ({partitions})");
    home.expect(0, &["plan", "--env", &env, "--exit-code"]);
}

/// The level's recovery-time objective (`spec.slos.rtoSeconds` of level 3).
fn level_3_rto() -> Duration {
    let manifest = include_str!("../environments/level-3.yaml");
    let seconds = manifest.lines().find_map(|l| l.trim().strip_prefix("rtoSeconds:")).expect("level 3 sets rtoSeconds");
    Duration::from_secs(seconds.trim().parse().unwrap())
}

/// Issue 19: a second fault right after a switchover. Patroni promotes only a
/// synchronous standby, and right after a promotion it lists none; `switchover` returns
/// once one is listed again, so losing the new leader at once (every process of its node,
/// by its cgroup, as `node-loss` does) still ends with a new leader, and every order a
/// buyer writing all along saw acknowledged exists exactly once.
#[test]
fn level_3_fails_over_when_the_new_leader_is_lost_right_after_a_switchover() {
    let home = Home::new();
    let env = home.env("twice");
    let up = home.json(&["up", "--level", "3", "--env", &env, "-q"]);
    let candidates = up["failover_candidates"].as_array().cloned().unwrap_or_default();
    assert_eq!(candidates.len(), 2, "both standbys may take over once `up` returns: {up}");
    let s = Shopper::new(up["endpoints"]["shop"].as_str().unwrap(), 1000);
    let mut acknowledged: Vec<(String, i64)> = (0..10).map(|i| (format!("before-{i}"), s.order(&format!("before-{i}")))).collect();

    // A buyer orders all along; an order counts once the shop acknowledged it (a key whose
    // answer was lost is retried with the same key, which is safe).
    let writing = std::sync::atomic::AtomicBool::new(true);
    let (report, killed, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut done = Vec::new();
            for i in 0.. {
                let key = format!("during-{i}");
                loop {
                    if !writing.load(std::sync::atomic::Ordering::Relaxed) {
                        return done;
                    }
                    match s.try_order(&key) {
                        Ok(id) => break done.push((key.clone(), id)),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
            done
        });
        let report: Value = home.json(&["switchover", "--env", &env, "-q"]);
        let killed = home.json(&["chaos", "inject", "--env", &env, "--fault", "node-loss", "--target", "leader", "-q"]);
        let first = first_order_after(&s, "after-second-fault", level_3_rto() + Duration::from_secs(5));
        eprintln!("switchover then leader loss: first acknowledged order {:.1} s after the new leader was killed", first.1.as_secs_f64());
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut written = writer.join().unwrap();
        written.push(first.0);
        (report, killed, written)
    });
    let new_leader = report["to"].as_str().unwrap().to_string();
    let standby = report["synchronous_standby"].as_str().unwrap();
    assert!(!standby.is_empty() && standby != new_leader, "switchover returns with a synchronous standby beside {new_leader}: {report}");
    assert!(killed["did"].to_string().contains(new_leader.trim_start_matches("postgres/")), "node-loss hit the new leader: {killed}");
    let third = leader(&home, &env).expect("a leader after the second fault");
    assert_ne!(third, new_leader, "another node took over from the lost one");
    // Without waiting for its lock to expire: the leader watch saw the node die.
    let watch = std::fs::read_to_string(home.env_dir(&env).join("nodes/leader-watch-r1/log")).unwrap_or_default();
    let lost = new_leader.trim_start_matches("postgres/");
    assert!(watch.contains(&format!("released the leader lock of {lost}")), "the watch did not release {lost}'s lock:\n{watch}");
    assert!(written.len() > 1, "orders were acknowledged around the faults ({})", written.len());
    acknowledged.extend(written);
    acknowledged.extend((0..10).map(|i| (format!("after-{i}"), s.order(&format!("after-{i}")))));
    assert_orders_intact(&home, &env, &s, &acknowledged, 1000);

    // With the last standby gone too, status says plainly that nothing could take over.
    home.expect(0, &["chaos", "inject", "--env", &env, "--fault", "node-loss", "--target", "replicas", "-q"]);
    let why = eventually(Duration::from_secs(30), "status naming the missing failover candidate", || {
        home.status(&env)["insights"]["database"]["no_failover_candidate"].as_str().map(str::to_string)
    });
    assert!(why.contains(third.trim_start_matches("postgres/")), "{why}");
    let text = support::text(&home.run(&["status", "--env", &env]).stdout);
    assert!(text.contains("no failover candidate:"), "{text}");

    // `up` brings both lost nodes back and returns once they may take over again.
    let back = home.json(&["up", "--env", &env, "-q"]);
    assert!(back["failover_candidates"].as_array().is_some_and(|c| !c.is_empty()), "{back}");
    assert_orders_intact(&home, &env, &s, &acknowledged, 1000);

    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(support::processes_mentioning(&dir).is_empty(), "no Patroni, PostgreSQL or etcd process outlives `down`");
}
