//! System test: level 5 on the local target. What it adds to level 4 and what this test
//! proves of it: order events travel from the outbox through a message broker (Redis
//! Streams on a Redis server of its own, append-only) to worker pools by priority; a
//! poison event ends in the dead-letter queue and a mended replay is delivered once
//! through the broker; the broker killed under checkout loses no event and duplicates
//! none (the `broker-loss` experiment).

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use support::shop::Shopper;
use support::{Home, alive, eventually, processes_mentioning, text};

/// One command to the environment's broker (with its generated password); the replies.
fn broker(home: &Home, env: &str, address: &str, command: &str) -> String {
    let password = std::fs::read_to_string(home.env_dir(env).join("secrets/broker.password")).unwrap();
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "AUTH {}\r\n{command}\r\nQUIT\r\n", password.trim()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn level_5_carries_order_events_through_the_broker_and_loses_none_when_it_is_killed() {
    let home = Home::new();
    let env = home.env("five");
    let up = home.json(&["up", "--level", "5", "--env", &env, "-q"]);
    let shop = up["endpoints"]["shop"].as_str().unwrap().to_string();
    let status = home.json(&["status", "--env", &env]);
    let components = status["components"].as_array().unwrap();
    let component = |id: &str| components.iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("no {id}: {status}"));
    assert_eq!(component("broker/r1")["healthy"], true, "{status}");
    assert_eq!(components.iter().filter(|c| c["kind"] == "worker").count(), 4, "{status}");
    let broker_address = component("broker/r1")["address"].as_str().unwrap().to_string();
    let sql = |q: &str| support::psql(&home, &env, "postgres/r1-pg-1", "shop", q);

    // Orders' events are relayed to the broker and delivered once each.
    let s = Shopper::new(&shop, 100);
    for i in 0..5 {
        s.order(&format!("five-{i}"));
    }
    eventually(Duration::from_secs(30), "five notifications, each through the broker", || {
        (sql("SELECT count(*) FROM notifications n JOIN outbox o ON o.id = n.outbox_id WHERE o.relayed_at IS NOT NULL") == "5").then_some(())
    });
    let groups = broker(&home, &env, &broker_address, &format!("XINFO GROUPS {env}:events:normal"));
    assert!(groups.contains("workers"), "the workers' consumer group reads order notifications: {groups}");
    let queue = home.json(&["queue", "status", "--env", &env]);
    assert_eq!(queue["pending"], 0, "{queue}");

    // A poison event: retried through the outbox and the broker, then dead-lettered;
    // replayed with its payload mended, delivered once.
    let poison: i64 = sql(
        "INSERT INTO outbox (topic, payload) VALUES ('order.placed', '{\"order_id\": 0, \"email\": \"nobody\", \"total_cents\": 1}') RETURNING id",
    )
    .parse()
    .unwrap();
    let dead = eventually(Duration::from_secs(90), "the poison event dead-lettered", || {
        let d = home.json(&["queue", "dlq", "list", "--env", &env]);
        (d["total"] == 1).then_some(d)
    });
    assert_eq!(dead["letters"][0]["event"], poison, "{dead}");
    assert_eq!(dead["letters"][0]["attempts"], 5, "the manifest's spec.broker.maxAttempts: {dead}");
    sql(&format!("UPDATE dead_letters SET payload = jsonb_set(payload, '{{email}}', '\"buyer@example.com\"') WHERE outbox_id = {poison}"));
    let replayed = home.json(&["queue", "dlq", "replay", "--env", &env, "--all"]);
    assert_eq!(replayed["replayed"], json!([poison]));
    eventually(Duration::from_secs(30), "the replayed event delivered", || {
        (sql(&format!("SELECT count(*) FROM notifications WHERE outbox_id = {poison} AND recipient = 'buyer@example.com'")) == "1").then_some(())
    });

    // The broker killed under checkout: orders go on, and every order's event is
    // delivered exactly once after it is back.
    let out = home.run(&["chaos", "run", "broker-loss", "--env", &env, "-q", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "broker-loss passes: {report:#}");
    let run = &report["runs"][0];
    assert!(run["faults"][0]["target"].to_string().contains("broker/r1"), "the broker was what was killed: {run:#}");
    let outbox = run["checks"].as_array().unwrap().iter().find(|c| c["check"] == "outbox").cloned().unwrap_or_default();
    assert!(outbox["summary"].as_str().is_some_and(|s| s.contains("orders notified") && !s.starts_with("0 of")), "{run:#}");
    assert_eq!(
        sql("SELECT count(*) FROM outbox o WHERE o.topic = 'order.placed' AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.outbox_id = o.id)"),
        "0",
        "every order's event delivered"
    );

    let status = home.json(&["status", "--env", &env]);
    let pids: Vec<u32> = status["components"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_u64()).map(|p| p as u32).collect();
    let dir = home.env_dir(&env);
    home.expect(0, &["down", "--env", &env, "-q"]);
    assert!(pids.iter().all(|p| !alive(*p)), "every process stopped");
    assert!(processes_mentioning(&dir).is_empty());
}
