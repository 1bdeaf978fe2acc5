//! System tests: level 3 on the local target. Three PostgreSQL nodes under Patroni
//! (leader, synchronous standby, asynchronous replica) behind a router that follows the
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
    let standby = member_with_role(&home, &env, "sync_standby").expect("a synchronous standby");

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

    // Lose the leader abruptly: every process of its node, SIGKILL.
    let killed = kill_everything_in(&home.env_dir(&env).join("nodes/postgres-r1-pg-1"));
    assert!(killed >= 2, "Patroni and PostgreSQL of the leader were killed ({killed})");
    let (first, rto) = first_order_after(&s, "after-failover", Duration::from_secs(90));
    eprintln!("failover: first acknowledged order {:.1} s after the leader was killed", rto.as_secs_f64());
    acknowledged.push(first);
    assert_eq!(leader(&home, &env).as_deref(), Some(standby.as_str()), "Patroni promoted the synchronous standby");
    acknowledged.extend((0..10).map(|i| (format!("after-{i}"), s.order(&format!("after-{i}")))));
    assert_orders_intact(&home, &env, &s, &acknowledged, 1000);

    // `up` brings the lost node back; it rejoins as a replica of the new leader.
    let plan = home.run(&["plan", "--env", &env]);
    assert!(support::text(&plan.stdout).contains("postgres/r1-pg-1"), "plan shows the lost node: {}", support::text(&plan.stdout));
    home.expect(0, &["up", "--env", &env, "-q"]);
    eventually(Duration::from_secs(60), "the old leader back as synchronous standby", || {
        (member_with_role(&home, &env, "sync_standby").as_deref() == Some("postgres/r1-pg-1")).then_some(())
    });

    // A planned switchover back to it loses nothing and says how long writes paused.
    let report: Value = home.json(&["switchover", "--env", &env, "-q"]);
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
