//! The configuration files the local target writes, rendered from a manifest through
//! `expand`: each consumer gets durations and sizes in its own spelling, whatever the
//! manifest wrote (`5m` is `5min` to PostgreSQL and `5m` to Prometheus).

use scalectl_core::levels::level;
use scalectl_core::{Graph, Provider, Sources, Topology};
use scalectl_local::{LocalProvider, Placement, expand};

fn files(n: u8, sets: &[&str]) -> (Graph, tempfile::TempDir, LocalProvider) {
    let l = level(n).unwrap();
    let mut s = Sources::new(l.file, l.manifest);
    for a in sets {
        s.set(a);
    }
    let m = s.load().unwrap_or_else(|e| panic!("{e:?}"));
    let placement = Placement { slot: 9 };
    let graph = expand(&Topology::from_manifest(&m), placement).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = LocalProvider::new("cfg", dir.path(), placement, graph.clone()).unwrap();
    (graph, dir, provider)
}

fn file(provider: &LocalProvider, graph: &Graph, id: &str, name: &str) -> String {
    let r = graph.get(id).unwrap_or_else(|| panic!("no {id}"));
    let files = provider.config_files(r).unwrap();
    files.into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{id} has no {name}")).1
}

/// promtool, where Prometheus is installed.
fn promtool() -> Option<&'static str> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"].into_iter().find(|p| std::path::Path::new(p).exists())
}

/// Runs `promtool test rules` with unit tests `tests` against the rule file `rules`.
fn promtool_test(promtool: &str, rules: &str, tests: &str) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("rules.yml"), rules).unwrap();
    std::fs::write(work.path().join("tests.yml"), tests).unwrap();
    let out = std::process::Command::new(promtool).args(["test", "rules", "tests.yml"]).current_dir(work.path()).output().unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\nrules:\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn postgresql_conf_gets_postgres_units() {
    let (g, _dir, p) =
        files(1, &["spec.postgres.wal.checkpointTimeout=5m", "spec.postgres.wal.maxWalSize=2gb", "spec.postgres.settings.workMem=16384kB"]);
    let conf = file(&p, &g, "postgres/r1-pg-1", "postgresql.conf");
    assert!(conf.contains("checkpoint_timeout = 5min"), "{conf}");
    assert!(conf.contains("max_wal_size = 2GB"), "{conf}");
    assert!(conf.contains("work_mem = 16MB"), "{conf}");
}

#[test]
fn patroni_redis_and_prometheus_get_their_own_units() {
    let (g, _dir, p) = files(
        3,
        &[
            "spec.postgres.wal.checkpointTimeout=1h30m",
            "spec.observability.prometheus.scrapeInterval=1min",
            "spec.observability.prometheus.retention=36h",
            "spec.redis.maxmemory=1GiB",
        ],
    );
    let patroni = file(&p, &g, "postgres/r1-pg-1", "patroni.yml");
    assert!(patroni.contains("checkpoint_timeout: '90min'"), "{patroni}");
    let prom = file(&p, &g, "prometheus/main", "prometheus.yml");
    assert!(prom.contains("scrape_interval: 1m\n"), "{prom}");
    let redis = file(&p, &g, "redis/r1", "redis.conf");
    assert!(redis.contains("maxmemory 1gb\n"), "{redis}");
    let r = g.get("prometheus/main").unwrap();
    let spec = scalectl_local::spec::prometheus(r).unwrap();
    assert_eq!(spec.retention.prometheus(), "36h", "passed to --storage.tsdb.retention.time");
}

#[test]
fn a_redis_replica_follows_its_primary_and_sentinels_watch_them_both() {
    let (g, _dir, p) = files(4, &[]);
    let replica = file(&p, &g, "redis/r1-replica-1", "redis.conf");
    assert!(replica.contains("bind 127.9.1.30\n") && replica.contains("replicaof 127.9.1.22 6379\n"), "{replica}");
    let primary = file(&p, &g, "redis/r1", "redis.conf");
    assert!(!primary.contains("replicaof"), "{primary}");
    // Every node names its own address to the Sentinels: all listen on one port.
    assert!(primary.contains("replica-announce-ip 127.9.1.22\n") && replica.contains("replica-announce-ip 127.9.1.30\n"), "{replica}");
    let sentinel = file(&p, &g, "redis-sentinel/r1-2", "sentinel.conf");
    assert!(sentinel.contains("bind 127.9.1.27\nport 26379\n"), "{sentinel}");
    assert!(sentinel.contains("sentinel monitor shop 127.9.1.22 6379 2\n"), "the primary the manifest starts from, two to agree: {sentinel}");
    assert!(!sentinel.contains("requirepass") && !sentinel.contains("auth-pass"), "no password is rendered: {sentinel}");
    let (g, _dir, p) = files(3, &[]);
    assert!(g.get("redis/r1-replica-1").is_none(), "level 3 asks for no replica");
    assert!(!g.resources.iter().any(|r| r.id.starts_with("redis-sentinel/")), "nor Sentinels to promote one");
    assert!(!file(&p, &g, "redis/r1", "redis.conf").contains("replica-announce-ip"), "a lone Redis renders as before");
}

#[test]
fn the_broker_keeps_what_it_acknowledged_and_never_evicts() {
    let (g, _dir, p) = files(5, &[]);
    let conf = file(&p, &g, "broker/r1", "broker.conf");
    assert!(conf.contains("bind 127.9.1.29\nport 6379\n"), "an address of its own: {conf}");
    for line in ["appendonly yes\n", "appendfsync always\n", "maxmemory 512mb\n", "maxmemory-policy noeviction\n", "save \"\"\n"] {
        assert!(conf.contains(line), "{line}: {conf}");
    }
    assert!(conf.contains("/auth.conf\n") && !conf.contains("requirepass"), "the password is included, never rendered: {conf}");
    let (g, _dir, _) = files(4, &[]);
    assert!(g.get("broker/r1").is_none(), "level 4 has no broker");
}

#[test]
fn patroni_reaches_every_member_of_a_consensus_store_that_spans_regions() {
    let (graph, _dir, provider) = files(6, &[]);
    let yml = file(&provider, &graph, "postgres/r2-pg-1", "patroni.yml");
    assert!(yml.contains("hosts: 127.9.1.20:2379,127.9.2.20:2379,127.9.3.20:2379"), "{yml}");
    let (graph, _dir, provider) = files(3, &[]);
    let yml = file(&provider, &graph, "postgres/r1-pg-1", "patroni.yml");
    assert!(yml.contains("hosts: 127.9.1.20:2379\n"), "one region, one member: {yml}");
}

/// The failover-candidate alerts, run by `promtool test rules` against the rules rendered
/// for level 3: a leader whose only synchronous standby stops (or is not running) pages
/// after 30 s; while a running one is listed, nothing fires. Levels without Patroni
/// render no such rules.
#[test]
fn prometheus_alerts_when_a_patroni_cluster_has_no_failover_candidate() {
    let (g, _dir, p) = files(3, &[]);
    let rules = file(&p, &g, "prometheus/main", "rules.yml");
    assert!(rules.contains("alert: PostgresNoFailoverCandidate"), "{rules}");
    let (g2, _dir2, p2) = files(2, &[]);
    assert!(!file(&p2, &g2, "prometheus/main", "rules.yml").contains("patroni_"), "no Patroni alerts without Patroni");

    let Some(promtool) = promtool() else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus), so the alert rules were not evaluated");
        return;
    };
    let summary = "no failover candidate: db has a leader but no running synchronous standby, so losing the leader would leave it without one";
    let action = "see `scalectl status`; bring lost nodes back with `scalectl up`";
    // Node a leads throughout; b is its synchronous standby until 60 s, then is listed
    // as a plain replica (lost and back, not caught up). Node c of a second cluster keeps
    // a synchronous standby d whose PostgreSQL stops at 60 s.
    let tests = format!(
        r#"rule_files: [rules.yml]
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      - {{series: 'patroni_primary{{scope="db",instance="a"}}', values: '1x20'}}
      - {{series: 'patroni_primary{{scope="db",instance="b"}}', values: '0x20'}}
      - {{series: 'patroni_sync_standby{{scope="db",instance="a"}}', values: '0x20'}}
      - {{series: 'patroni_sync_standby{{scope="db",instance="b"}}', values: '1x5 0x15'}}
      - {{series: 'patroni_postgres_running{{scope="db",instance="a"}}', values: '1x20'}}
      - {{series: 'patroni_postgres_running{{scope="db",instance="b"}}', values: '1x20'}}
      - {{series: 'patroni_primary{{scope="other",instance="c"}}', values: '1x20'}}
      - {{series: 'patroni_primary{{scope="other",instance="d"}}', values: '0x20'}}
      - {{series: 'patroni_sync_standby{{scope="other",instance="c"}}', values: '0x20'}}
      - {{series: 'patroni_sync_standby{{scope="other",instance="d"}}', values: '1x20'}}
      - {{series: 'patroni_postgres_running{{scope="other",instance="c"}}', values: '1x20'}}
      - {{series: 'patroni_postgres_running{{scope="other",instance="d"}}', values: '1x5 0x15'}}
    alert_rule_test:
      - {{eval_time: 50s, alertname: PostgresNoFailoverCandidate, exp_alerts: []}}
      - {{eval_time: 80s, alertname: PostgresNoFailoverCandidate, exp_alerts: []}}
      - eval_time: 100s
        alertname: PostgresNoFailoverCandidate
        exp_alerts:
          - exp_labels: {{severity: page, scope: db}}
            exp_annotations: {{summary: "{summary}", action: "{action}"}}
          - exp_labels: {{severity: page, scope: other}}
            exp_annotations: {{summary: "{}", action: "{action}"}}
      - {{eval_time: 100s, alertname: PostgresNoLeader, exp_alerts: []}}
"#,
        summary.replace("db has", "other has"),
    );
    promtool_test(promtool, &rules, &tests);
}

/// Where the manifest asks for burn-rate alerts (level 5), Prometheus sends its alerts to
/// Alertmanager, which delivers every one, resolutions too, to the environment's
/// receiver; below that, Prometheus sends none anywhere.
#[test]
fn burn_rate_alerts_route_prometheus_through_alertmanager_to_the_receiver() {
    let (g, _dir, p) = files(5, &[]);
    let prom = file(&p, &g, "prometheus/main", "prometheus.yml");
    assert!(prom.contains("alertmanagers:\n    - static_configs:\n        - targets: [\"127.9.1.24:9093\"]"), "{prom}");
    assert!(prom.contains("job_name: alertmanager"), "Alertmanager is scraped too: {prom}");
    let manager = file(&p, &g, "alertmanager/main", "alertmanager.yml");
    assert!(manager.contains("url: \"http://127.9.1.24:9095/alerts\"") && manager.contains("send_resolved: true"), "{manager}");
    assert_eq!(g.get("alertmanager/main").unwrap().depends_on, ["alert-receiver/main"]);
    assert!(g.get("prometheus/main").unwrap().depends_on.iter().any(|d| d == "alertmanager/main"));
    let (g2, _dir2, p2) = files(2, &[]);
    assert!(g2.get("alertmanager/main").is_none() && g2.get("alert-receiver/main").is_none());
    assert!(!file(&p2, &g2, "prometheus/main", "prometheus.yml").contains("alerting:"));
}

/// The multi-window burn-rate alerts, run by `promtool test rules` against the rules
/// rendered for level 5 (availability 99.95 %: an error budget of 0.05 %): a ten-minute
/// outage failing a tenth of the requests pages within minutes (the hour's ratio passes
/// 14.4 times the budget after about five) and stops paging once the last five minutes
/// are clean; the slow burn (6 times the budget over 6 h and 30 min, for 15 min) raises a
/// ticket and clears once the outage leaves its 30-minute window. Steady traffic before
/// raises nothing.
#[test]
fn a_burn_rate_alert_fires_during_an_outage_and_resolves_after_it() {
    let (g, _dir, p) = files(5, &[]);
    let rules = file(&p, &g, "prometheus/main", "rules.yml");
    let Some(promtool) = promtool() else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus), so the alert rules were not evaluated");
        return;
    };
    // 600 requests a minute for two hours; from minute 31 to 41, 60 of them fail.
    let tests = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'shop_http_requests_total{status="200"}', values: '0+600x130'}
      - {series: 'shop_http_requests_total{status="500"}', values: '0x30 0+60x10 600x90'}
    alert_rule_test:
      - {eval_time: 30m, alertname: ShopErrorBudgetBurnFast, exp_alerts: []}
      - {eval_time: 34m, alertname: ShopErrorBudgetBurnFast, exp_alerts: []}
      - eval_time: 41m
        alertname: ShopErrorBudgetBurnFast
        exp_alerts:
          - exp_labels: {severity: page}
            exp_annotations: {summary: "Shop is burning its error budget 14.4 times too fast"}
      - {eval_time: 50m, alertname: ShopErrorBudgetBurnFast, exp_alerts: []}
      - {eval_time: 30m, alertname: ShopErrorBudgetBurnSlow, exp_alerts: []}
      - eval_time: 60m
        alertname: ShopErrorBudgetBurnSlow
        exp_alerts:
          - exp_labels: {severity: ticket}
            exp_annotations: {summary: "Shop is burning its error budget 6 times too fast"}
      - {eval_time: 100m, alertname: ShopErrorBudgetBurnSlow, exp_alerts: []}
"#;
    promtool_test(promtool, &rules, tests);
}

/// The outbox alerts, run by `promtool test rules` against the rules rendered for level
/// 1 (the shops report the outbox): an event left waiting over a minute for five
/// minutes raises a ticket; an event dead-lettered raises one for the next 15 minutes.
#[test]
fn the_outbox_alerts_when_events_wait_too_long_or_die() {
    let (g, _dir, p) = files(1, &[]);
    let rules = file(&p, &g, "prometheus/main", "rules.yml");
    let Some(promtool) = promtool() else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus), so the alert rules were not evaluated");
        return;
    };
    // Two shops report the same outbox: from minute 11 its oldest event ages (workers
    // stopped); at minute 21 two events are dead-lettered, and 15 minutes later they no
    // longer count as recent.
    let tests = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'shop_outbox_oldest_pending_seconds{instance="a"}', values: '0x10 60+60x30'}
      - {series: 'shop_outbox_oldest_pending_seconds{instance="b"}', values: '0x10 60+60x30'}
      - {series: 'shop_outbox_dead_letters_recent{instance="a"}', values: '0x20 2x15 0x25'}
      - {series: 'shop_outbox_dead_letters_recent{instance="b"}', values: '0x20 2x15 0x25'}
    alert_rule_test:
      - {eval_time: 15m, alertname: OutboxDeliveryLate, exp_alerts: []}
      - eval_time: 20m
        alertname: OutboxDeliveryLate
        exp_alerts:
          - exp_labels: {severity: ticket}
            exp_annotations:
              summary: "the oldest undelivered outbox event has waited 10m 0s; the workers are down or cannot keep up"
              action: "see `scalectl queue status` and `scalectl status` (workers)"
      - {eval_time: 20m, alertname: OutboxEventsDeadLettered, exp_alerts: []}
      - eval_time: 25m
        alertname: OutboxEventsDeadLettered
        exp_alerts:
          - exp_labels: {severity: ticket}
            exp_annotations:
              summary: "outbox events failed every attempt in the last 15 minutes and wait in dead_letters"
              action: "see `scalectl queue dlq list`; correct the cause, then `scalectl queue dlq replay`"
      - {eval_time: 50m, alertname: OutboxEventsDeadLettered, exp_alerts: []}
"#;
    promtool_test(promtool, &rules, tests);
}

/// The replica-lag and cache-hit rules, run by `promtool test rules` against the rules
/// rendered for level 4: a replica 20 MiB behind its leader for two minutes raises a
/// ticket naming it (one 1 MiB behind does not); Redis finding a fifth of the keys read
/// for fifteen minutes raises one too. Level 2 (no Patroni, no Redis) renders neither.
#[test]
fn prometheus_alerts_on_replica_lag_and_a_low_cache_hit_ratio() {
    let (g, _dir, p) = files(4, &[]);
    let rules = file(&p, &g, "prometheus/main", "rules.yml");
    assert!(rules.contains("alert: PostgresReplicaLagHigh") && rules.contains("alert: RedisCacheHitRatioLow"), "{rules}");
    let (g2, _dir2, p2) = files(2, &[]);
    let level2 = file(&p2, &g2, "prometheus/main", "rules.yml");
    assert!(!level2.contains("replica_lag") && !level2.contains("keyspace"), "{level2}");

    let Some(promtool) = promtool() else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus), so the alert rules were not evaluated");
        return;
    };
    // Leader a writes 1 MiB every 10 s. Replica b replays 1 MiB behind for a minute, then
    // stops replaying (16 MiB behind at 220 s, so the alert fires at 340 s); replica c
    // keeps up; replica d's PostgreSQL is down (Patroni reports 0 replayed): no lag is
    // made up for it. Redis: 10 hits and 40 misses every 10 s.
    let tests = r#"rule_files: [rules.yml]
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      - {series: 'patroni_xlog_location{scope="db",instance="a"}', values: '104857600+1048576x60'}
      - {series: 'patroni_xlog_location{scope="db",instance="b"}', values: '0x60'}
      - {series: 'patroni_xlog_location{scope="db",instance="c"}', values: '0x60'}
      - {series: 'patroni_xlog_replayed_location{scope="db",instance="a"}', values: '0x60'}
      - {series: 'patroni_xlog_replayed_location{scope="db",instance="b"}', values: '103809024+1048576x6 110100480x54'}
      - {series: 'patroni_xlog_replayed_location{scope="db",instance="c"}', values: '104857600+1048576x60'}
      - {series: 'patroni_replica{scope="db",instance="a"}', values: '0x60'}
      - {series: 'patroni_replica{scope="db",instance="b"}', values: '1x60'}
      - {series: 'patroni_replica{scope="db",instance="c"}', values: '1x60'}
      - {series: 'patroni_replica{scope="db",instance="d"}', values: '1x60'}
      - {series: 'patroni_xlog_replayed_location{scope="db",instance="d"}', values: '0x60'}
      - {series: 'patroni_postgres_running{scope="db",instance="b"}', values: '1x60'}
      - {series: 'patroni_postgres_running{scope="db",instance="c"}', values: '1x60'}
      - {series: 'patroni_postgres_running{scope="db",instance="d"}', values: '0x60'}
      - {series: 'redis_keyspace_hits_total{instance="r"}', values: '0+10x200'}
      - {series: 'redis_keyspace_misses_total{instance="r"}', values: '0+40x200'}
    promql_expr_test:
      - expr: postgres:replica_lag_bytes
        eval_time: 30s
        exp_samples:
          - {labels: 'postgres:replica_lag_bytes{scope="db",instance="b"}', value: 1048576}
          - {labels: 'postgres:replica_lag_bytes{scope="db",instance="c"}', value: 0}
      - expr: redis:keyspace_hit_ratio:rate5m
        eval_time: 10m
        exp_samples:
          - {labels: 'redis:keyspace_hit_ratio:rate5m', value: 0.2}
    alert_rule_test:
      - {eval_time: 60s, alertname: PostgresReplicaLagHigh, exp_alerts: []}
      - {eval_time: 5m, alertname: PostgresReplicaLagHigh, exp_alerts: []}
      - eval_time: 8m
        alertname: PostgresReplicaLagHigh
        exp_alerts:
          - exp_labels: {severity: ticket, scope: db, instance: b}
            exp_annotations:
              summary: "b of db replays 43MiB behind its leader; reads there are stale"
              action: "see `scalectl status` (lag per member) and `scalectl db slow-queries` for long writes"
      - {eval_time: 10m, alertname: RedisCacheHitRatioLow, exp_alerts: []}
      - eval_time: 25m
        alertname: RedisCacheHitRatioLow
        exp_alerts:
          - exp_labels: {severity: ticket}
            exp_annotations:
              summary: "Redis finds 20% of the keys the shop reads (alert below 0.5); the rest fall through to PostgreSQL"
              action: "check `spec.redis.maxmemory` against `scalectl status` (evictions) and the Redis exporter's memory use"
"#;
    promtool_test(promtool, &rules, tests);
}

/// Whether HAProxy accepts `config` (`haproxy -c`), where HAProxy is installed.
fn haproxy_accepts(config: &str) -> Option<Result<(), String>> {
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(haproxy).arg("-c").arg("-f").arg(&path).output().unwrap();
    Some(if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) })
}

#[test]
fn the_edge_limits_each_rate_limited_route_per_client_before_a_pool() {
    let (graph, _dir, provider) = files(3, &[]);
    let edge = file(&provider, &graph, "haproxy/r1", "haproxy.cfg");
    // Level 3: login 50/s burst 100, register 20/s burst 50, search 200/s burst 400. The
    // edge accepts twice a bucket's burst in the bucket's refill window.
    for (group, window, max) in [("login", "2000ms", 200), ("register", "2500ms", 100), ("search", "2000ms", 800)] {
        assert!(edge.contains(&format!("backend limit_{group}\n")), "{edge}");
        assert!(edge.contains(&format!("store gpc0_rate({window})")), "{group} over {window}: {edge}");
        assert!(edge.contains(&format!("{{ sc_gpc0_rate(0) ge {max} }}")), "{group} at {max}: {edge}");
    }
    assert!(edge.contains("hdr Retry-After 1"), "{edge}");
    let router = file(&provider, &graph, "haproxy/r1-db", "haproxy.cfg");
    assert!(!router.contains("limit_"), "the database router limits nothing");
    for config in [&edge, &router] {
        if let Some(checked) = haproxy_accepts(config) {
            checked.unwrap_or_else(|e| panic!("haproxy -c: {e}\n{config}"));
        }
    }

    let (graph, _dir, provider) = files(2, &[]);
    let edge = file(&provider, &graph, "haproxy/r1", "haproxy.cfg");
    assert!(!edge.contains("limit_"), "level 2 sets no rate limits: {edge}");
}
