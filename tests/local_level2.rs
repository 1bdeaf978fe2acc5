//! System tests: level 2 on the local target, with PgBouncer in transaction mode, two
//! shop processes behind HAProxy, pg_stat_statements and Prometheus with SLO rules.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::shop::Shopper;
use support::{Home, alive, eventually, processes_mentioning};

/// The requests one shop process has served, from its own /metrics.
fn requests_served(address: &str) -> f64 {
    let text = reqwest::blocking::get(format!("http://{address}/metrics")).unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.starts_with("shop_http_requests_total{") && !l.contains("/readyz") && !l.contains("/metrics"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn level_2_serves_checkouts_through_haproxy_and_pgbouncer_and_finds_slow_queries() {
    let home = Home::new();
    let env = home.env("two");
    let up = home.json(&["up", "--level", "2", "--env", &env, "-q", "--set", "spec.observability.prometheus.scrapeInterval=1s"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    assert!(shop.ends_with(":8000"), "the shop URL is HAProxy's: {shop}");
    assert!(up["endpoints"]["database"].as_str().unwrap().ends_with(":6432/shop"), "clients reach the database through PgBouncer: {up}");

    let s = Shopper::new(&shop, 100);
    let ids: Vec<i64> = (0..20).map(|i| s.order(&format!("order-{i}"))).collect();
    assert_eq!(s.stock(), 80);
    let mut listed = s.order_ids();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want, "every order is listed once");

    let status = home.json(&["status", "--env", &env]);
    assert_eq!(status["healthy"], true, "{status}");
    let shops: Vec<String> =
        status["components"].as_array().unwrap().iter().filter(|c| c["kind"] == "shop").map(|c| c["address"].as_str().unwrap().to_string()).collect();
    assert_eq!(shops.len(), 2, "two shop instances: {status}");
    for a in &shops {
        assert!(requests_served(a) > 0.0, "HAProxy balanced requests to {a} as well");
    }
    let pool = &status["insights"]["pools"]["pgbouncer/r1"][0];
    assert_eq!(pool["database"], "shop", "{status}");
    assert_eq!(pool["pool_size"], 20, "PgBouncer's pool size comes from the manifest: {status}");

    let slow = home.json(&["db", "slow-queries", "--env", &env, "-n", "50"]);
    let statements: Vec<&str> = slow["by_total"].as_array().unwrap().iter().filter_map(|q| q["query"].as_str()).collect();
    assert!(statements.iter().any(|q| q.contains("INSERT INTO orders")), "the checkout's statements are ranked: {statements:?}");
    assert!(!slow["by_mean"].as_array().unwrap().is_empty());

    // `db explain`: the plan with buffers, on the primary here (level 2 has no replica).
    let explained = home.json(&["db", "explain", "--env", &env, "SELECT * FROM orders WHERE user_id = 1;"]);
    assert_eq!(explained["role"], "primary", "{explained}");
    assert!(explained["note"].as_str().is_some_and(|n| n.contains("no replica")), "{explained}");
    let top = &explained["plan"][0];
    assert!(top["Execution Time"].is_number() && top["Plan"]["Shared Hit Blocks"].is_number(), "analyzed, with buffers: {explained}");
    let plan = support::text(&home.expect(0, &["db", "explain", "--env", &env, "--no-analyze", "SELECT * FROM orders"]).stdout);
    assert!(plan.contains("Plan on postgres/r1") && plan.contains("Scan on orders"), "{plan}");
    // A statement that writes is refused (the transaction is read-only) and changes nothing.
    let refused = home.run(&["db", "explain", "--env", &env, "DELETE FROM orders"]);
    assert!(!refused.status.success() && support::text(&refused.stderr).contains("read-only transaction"), "{}", support::text(&refused.stderr));
    let escape = home.run(&["db", "explain", "--env", &env, "SELECT 1; COMMIT; DELETE FROM orders"]);
    assert!(!escape.status.success() && support::text(&escape.stderr).contains("one statement"), "{}", support::text(&escape.stderr));
    assert_eq!(s.order_ids().len(), 20, "nothing was deleted");

    // Prometheus scrapes every shop, PostgreSQL, HAProxy and the host, with SLO rules.
    let prometheus = up["endpoints"]["prometheus"].as_str().unwrap().to_string();
    let jobs = eventually(Duration::from_secs(30), "every scrape target up", || {
        let t: Value = reqwest::blocking::get(format!("{prometheus}/api/v1/targets")).ok()?.json().ok()?;
        let targets = t["data"]["activeTargets"].as_array()?.clone();
        (!targets.is_empty() && targets.iter().all(|t| t["health"] == "up"))
            .then(|| targets.iter().map(|t| t["labels"]["job"].as_str().unwrap().to_string()).collect::<Vec<_>>())
    });
    for job in ["shop", "postgres", "haproxy", "node"] {
        assert!(jobs.iter().any(|j| j == job), "{job} is scraped: {jobs:?}");
    }
    assert_eq!(jobs.iter().filter(|j| *j == "shop").count(), 2);
    let rules: Value = reqwest::blocking::get(format!("{prometheus}/api/v1/rules")).unwrap().json().unwrap();
    let names: Vec<&str> =
        rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).filter_map(|r| r["name"].as_str()).collect();
    for rule in ["shop:errors:ratio_rate5m", "shop:latency_seconds:p95_5m", "ShopLatencyP95AboveSLO", "ShopErrorBudgetBurnFast"] {
        assert!(names.contains(&rule), "{rule} is loaded: {names:?}");
    }

    // Every query of the Grafana dashboard in the repository is valid against this
    // Prometheus, and the shop's panels have data.
    let dashboard: Value = serde_json::from_str(include_str!("../dashboards/shop-overview.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$environment", &env);
            let r: Value =
                reqwest::blocking::Client::new().get(format!("{prometheus}/api/v1/query")).query(&[("query", &expr)]).send().unwrap().json().unwrap();
            assert_eq!(r["status"], "success", "panel {}: {expr}: {r}", panel["title"]);
        }
    }
    let rps = eventually(Duration::from_secs(20), "request rate in Prometheus", || {
        let q = format!("sum(rate(shop_http_requests_total{{environment=\"{env}\"}}[1m]))");
        let r: Value = reqwest::blocking::Client::new().get(format!("{prometheus}/api/v1/query")).query(&[("query", &q)]).send().ok()?.json().ok()?;
        r["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok().filter(|v| *v > 0.0)
    });
    assert!(rps > 0.0);

    let pids: Vec<u32> = status["components"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_u64()).map(|p| p as u32).collect();
    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(pids.iter().all(|p| !alive(*p)), "every process stopped");
    assert!(processes_mentioning(&dir).is_empty());
}
