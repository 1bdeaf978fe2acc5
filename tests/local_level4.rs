//! System test: level 4 on the local target. The shop split into pools by role (auth,
//! catalog, cart, orders, flash) behind the edge HAProxy, which routes each path to the
//! pool that serves it; four PostgreSQL nodes (two synchronous standbys and an
//! asynchronous replica); Redis with a replica kept in sync; rate limits at the edge.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::shop::Shopper;
use support::{Home, alive, eventually, processes_mentioning};

/// Requests the edge sent to each backend, from HAProxy's Prometheus endpoint.
fn backend_requests(metrics: &str, backend: &str) -> f64 {
    let prefix = format!("haproxy_backend_http_requests_total{{proxy=\"{backend}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
}

/// One Redis command as a client of the environment (with its generated password); the
/// replies, or `None` when Redis cannot be reached.
fn redis(home: &Home, env: &str, address: &str, command: &str) -> Option<String> {
    let password = std::fs::read_to_string(home.env_dir(env).join("secrets/redis.password")).ok()?;
    let mut s = std::net::TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "AUTH {}\r\n{command}\r\nQUIT\r\n", password.trim()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A child process killed when dropped, so that a failing test leaves no load running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// This environment's cgroup v1 groups (CPU weights, memory limits) on this machine.
fn limit_groups(env: &str) -> Vec<String> {
    let mut found = Vec::new();
    for root in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"] {
        for entry in walkdir(std::path::Path::new(root), 3) {
            if entry.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("scalectl.{env}."))) {
                found.push(entry.display().to_string());
            }
        }
    }
    found
}

/// Directories under `dir`, `depth` levels down at most.
fn walkdir(dir: &std::path::Path, depth: u32) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let dirs: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    let deeper = if depth > 1 { dirs.iter().flat_map(|d| walkdir(d, depth - 1)).collect() } else { Vec::new() };
    dirs.into_iter().chain(deeper).collect()
}

#[test]
fn level_4_serves_a_checkout_through_every_role_pool_and_keeps_a_redis_replica() {
    let home = Home::new();
    let env = home.env("four");
    let up = home.json(&["up", "--level", "4", "--env", &env, "-q"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();

    let status = home.json(&["status", "--env", &env]);
    let components = status["components"].as_array().unwrap();
    let shops: Vec<&Value> = components.iter().filter(|c| c["kind"] == "shop").collect();
    assert_eq!(shops.len(), 12, "2 auth + 3 catalog + 2 cart + 3 orders + 2 flash: {status}");
    let members: Vec<(&str, &str)> = status["insights"]["database"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(members.iter().filter(|(_, r)| *r == "sync_standby").count(), 2, "{members:?}");
    assert!(members.contains(&("postgres/r1-pg-4", "replica")), "the fourth node replicates asynchronously: {members:?}");

    // Register and log in (auth), open a shop and list a product (catalog), fill a cart
    // (cart), check out and list the orders (orders): every step through the edge.
    let s = Shopper::new(&shop, 100);
    let mut ids: Vec<i64> = (0..5).map(|i| s.order(&format!("four-{i}"))).collect();
    assert_eq!(s.stock(), 95);
    let mut listed = eventually(Duration::from_secs(10), "the orders on the replicas", || {
        let listed = s.order_ids();
        (listed.len() == ids.len()).then_some(listed)
    });
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    // A flash sale (flash), checked by `load` against the database.
    let flash = home.json(&["load", "--env", &env, "--scenario", "flash-sale", "--users", "20", "--units", "5", "-q"]);
    assert_eq!(flash["flash"]["won"], 5, "{}", flash["flash"]);

    // Each pool served its part, and only its part: an auth process has no catalog.
    let edge = shop.trim_start_matches("http://").rsplit_once(':').unwrap().0.to_string();
    let metrics = reqwest::blocking::get(format!("http://{edge}:8405/metrics")).unwrap().text().unwrap();
    for role in ["auth", "catalog", "cart", "orders", "flash"] {
        assert!(backend_requests(&metrics, &format!("shops_{role}")) > 0.0, "the {role} pool served requests");
    }
    let auth = shops.iter().find(|c| c["id"].as_str().unwrap().contains("-auth-")).unwrap()["address"].as_str().unwrap();
    let products = reqwest::blocking::get(format!("http://{auth}/products")).unwrap();
    assert_eq!(products.status(), 404, "an auth process does not serve the catalog");

    // The Redis replica follows its primary and holds what the shop wrote there.
    let replica = &status["insights"]["cache_replicas"]["redis/r1-replica-1"];
    assert_eq!(replica["of"], "redis/r1", "{status}");
    assert_eq!(replica["in_sync"], true, "{status}");
    let address = |id: &str| components.iter().find(|c| c["id"] == id).unwrap()["address"].as_str().unwrap().to_string();
    let (primary, copy) = (address("redis/r1"), address("redis/r1-replica-1"));
    eventually(Duration::from_secs(10), "the replica holding the shop's keys", || {
        let keys = |a: &str| redis(&home, &env, a, "DBSIZE")?.lines().find_map(|l| l.strip_prefix(':')?.parse::<u64>().ok());
        (keys(&primary)? > 0 && keys(&copy)? > 0).then_some(())
    });
    let refused = redis(&home, &env, &copy, "SET scalectl-test 1").expect("the replica answers");
    assert!(refused.contains("READONLY"), "the replica takes no writes: {refused}");

    // Each pool's processes run with the CPU weight and memory limit of their role (where
    // this machine has the controllers: root and cgroup v1 cpu and memory).
    let limits = &status["insights"]["limits"];
    if scalectl_local::limits::available() {
        let mib256 = 256 * 1024 * 1024;
        let auth = serde_json::json!({"cpu_weight": 256, "cpu_limit_millis": 250, "memory_limit_bytes": 2 * mib256});
        assert_eq!(limits["shop/r1-auth-1"], auth, "{limits}");
        assert_eq!(limits["shop/r1-orders-3"], serde_json::json!({"cpu_weight": 512, "memory_limit_bytes": mib256}), "{limits}");
        assert_eq!(limits.as_object().unwrap().len(), 12, "every shop process: {limits}");
        assert_eq!(limit_groups(&env).len(), 24, "a cpu and a memory group per shop process");
    } else {
        let plan = home.json(&["plan", "--env", &env]);
        assert!(plan["unused"].to_string().contains("spec.shop.roles.*.cpu"), "the limits not applied are named: {plan}");
    }

    // A login storm (password hashing at many times what the auth pool can do) leaves
    // checkout answering.
    let mut storm =
        home.cmd(&["load", "--env", &env, "--scenario", "login", "--users", "50", "--rate", "400", "--duration", "8s", "-q", "-o", "json"]);
    let mut storm = KillOnDrop(Some(storm.stdout(std::process::Stdio::piped()).spawn().unwrap()));
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..5 {
        s.order(&format!("during-storm-{i}"));
    }
    let storm = storm.0.take().unwrap().wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&storm.stdout).unwrap_or_else(|e| panic!("{e}: {}", support::text(&storm.stdout)));
    let logins = report["run"]["rows"].as_array().unwrap().iter().find(|r| r["name"] == "POST /login").unwrap().clone();
    assert!(logins["ok"].as_u64().unwrap() > 100, "the storm ran: {logins}");

    // One client flooding registration (20/s, burst 50) is refused at the edge once it
    // has twice the burst accepted in the bucket's window: those 429s never reach the
    // auth pool. (An empty body is refused by the shop at once, without hashing.)
    let auth_before = backend_requests(&reqwest::blocking::get(format!("http://{edge}:8405/metrics")).unwrap().text().unwrap(), "shops_auth");
    let answers: Vec<(u16, bool)> = std::thread::scope(|scope| {
        let flood = || {
            let http = reqwest::blocking::Client::new();
            (0..50)
                .map(|_| {
                    let r =
                        http.post(format!("{shop}/register")).header("x-forwarded-for", "198.51.100.7").json(&serde_json::json!({})).send().unwrap();
                    let status = r.status().as_u16();
                    let at_edge = status == 429 && r.headers().contains_key("retry-after") && r.text().unwrap().contains("at the edge");
                    (status, at_edge)
                })
                .collect::<Vec<_>>()
        };
        let threads: Vec<_> = (0..8).map(|_| scope.spawn(flood)).collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let refused_at_edge = answers.iter().filter(|(_, edge)| *edge).count();
    let auth_after = backend_requests(&reqwest::blocking::get(format!("http://{edge}:8405/metrics")).unwrap().text().unwrap(), "shops_auth");
    assert!(refused_at_edge > 0, "the flood is refused at the edge: {answers:?}");
    let reached = (auth_after - auth_before) as usize;
    assert!(
        reached <= answers.len() - refused_at_edge + 2,
        "{reached} requests reached the auth pool; {refused_at_edge} of {} were refused at the edge",
        answers.len()
    );

    // Three Redis Sentinels watch the primary. It is killed: they promote the replica,
    // and the shop follows it, so what the shop writes to Redis from then on lands on
    // the new primary (the old one is dead, nothing else could have written it).
    assert_eq!(components.iter().filter(|c| c["kind"] == "redis-sentinel").count(), 3, "{status}");
    let pid_of = |id: &str| components.iter().find(|c| c["id"] == id).unwrap()["pid"].as_u64().unwrap();
    std::process::Command::new("kill").args(["-KILL", &pid_of("redis/r1").to_string()]).status().unwrap();
    let keys = |a: &str| redis(&home, &env, a, "DBSIZE")?.lines().find_map(|l| l.strip_prefix(':')?.parse::<u64>().ok());
    eventually(Duration::from_secs(30), "a Sentinel promoting the replica", || {
        redis(&home, &env, &copy, "INFO replication")?.contains("role:master").then_some(())
    });
    let before = keys(&copy).unwrap();
    let mut n = 0;
    eventually(Duration::from_secs(30), "the shop writing to the promoted replica", || {
        n += 1;
        s.order(&format!("after-redis-failover-{n}"));
        (keys(&copy)? > before).then_some(())
    });
    // `up` brings the old primary back as a replica of the new one (never a second
    // primary), and a failover is no change to plan.
    home.expect(0, &["up", "--env", &env, "-q"]);
    let status = home.json(&["status", "--env", &env]);
    let old = &status["insights"]["cache_replicas"]["redis/r1"];
    assert_eq!(old["of"], "redis/r1-replica-1", "the old primary follows the new one: {status}");
    assert_eq!(old["in_sync"], true, "{status}");
    assert!(status["insights"]["caches"].get("redis/r1-replica-1").is_some(), "the new primary is listed as one: {status}");
    home.expect(0, &["plan", "--env", &env, "--exit-code"]);
    // Redis and Sentinel rewrite their config files, password included, with a mode of
    // their choosing: only their user can enter the directories those files are in.
    for node in ["redis-r1", "redis-r1-replica-1", "redis-sentinel-r1-1", "redis-sentinel-r1-3"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.env_dir(&env).join("nodes").join(node)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{node}'s directory");
    }

    let components = status["components"].as_array().unwrap();
    let pids: Vec<u32> = components.iter().filter_map(|c| c["pid"].as_u64()).map(|p| p as u32).collect();
    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(pids.iter().all(|p| !alive(*p)), "every process stopped");
    assert!(processes_mentioning(&dir).is_empty());
    assert_eq!(limit_groups(&env), Vec::<String>::new(), "no cgroup is left behind");
}

/// Moving an environment up a level in place while a buyer keeps ordering: the monolith
/// serves until the role pools are ready and the edge has moved to them, the database
/// router is replaced under a paused pooler, and nothing the buyer sent is refused or
/// lost.
#[test]
fn a_level_3_environment_moves_to_level_4_while_it_takes_orders() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let home = Home::new();
    let env = home.env("move");
    let up = home.json(&["up", "--level", "3", "--env", &env, "-q"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    let s = Shopper::new(&shop, 100_000);
    let mut acknowledged: Vec<i64> = (0..3).map(|i| s.order(&format!("before-{i}"))).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let buyer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acked, mut refused) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match s.try_order(&format!("during-{i}")) {
                    Ok(id) => acked.push(id),
                    Err(e) => refused.push(e),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (s, acked, refused)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let moved = home.run(&["up", "--level", "4", "--env", &env, "-q", "-o", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (s, acked, refused) = buyer.join().unwrap();
    assert!(moved.status.success(), "{}", support::text(&moved.stderr));
    let moved: Value = serde_json::from_slice(&moved.stdout).unwrap();

    assert_eq!(refused, Vec::<String>::new(), "no order is refused while the environment moves");
    assert!(acked.len() >= 10, "the buyer kept ordering: {}", acked.len());
    acknowledged.extend(acked);
    acknowledged.push(s.order("after"));
    let mut listed = eventually(Duration::from_secs(10), "every acknowledged order listed", || {
        let listed = s.order_ids();
        (listed.len() >= acknowledged.len()).then_some(listed)
    });
    listed.sort();
    acknowledged.sort();
    assert_eq!(listed, acknowledged, "every acknowledged order exists exactly once");

    // `up` measured the pause it caused in the orders that were being taken.
    let pause = &moved["write_pause"];
    assert!(pause["orders"].as_u64().unwrap() > 0, "{moved}");
    // A buyer who waited seconds would have noticed the move (bench/move_level.sh
    // measures it: about 0.2 s on a release build).
    let longest = pause["longest_seconds"].as_f64().unwrap();
    assert!(longest > 0.0 && longest < 5.0, "{moved}");
    assert_eq!(moved["summary"]["destroy"], 2, "the monolith's two shops: {moved}");

    let status = home.json(&["status", "--env", &env]);
    let shops: Vec<&str> =
        status["components"].as_array().unwrap().iter().filter(|c| c["kind"] == "shop").map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(shops.len(), 12, "the role pools replaced the monolith: {shops:?}");
    assert!(shops.iter().all(|id| !id.contains("-all-")), "{shops:?}");

    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(processes_mentioning(&dir).is_empty());
    assert_eq!(limit_groups(&env), Vec::<String>::new(), "no cgroup is left behind");
}
