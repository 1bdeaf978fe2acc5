//! The commands that read manifests and the machine, run through the real binary.

mod support;

use std::time::Instant;

use serde_json::Value;
use support::{Home, text};

#[test]
fn plan_of_level_6_shows_the_whole_topology_without_an_environment() {
    let home = Home::new();
    let started = Instant::now();
    let plan = home.json(&["plan", "--level", "6"]);
    let elapsed = started.elapsed();
    let steps = plan["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for want in [
        "postgres/r1-pg-1",
        "etcd/r1",
        "citus-worker/r1-1",
        "pgbouncer/r1",
        "haproxy/r2",
        "redis/r3",
        "redis/r3-replica-2",
        "shop/r1-auth-1",
        "prometheus/main",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert!(steps.iter().all(|s| s["action"] == "create"));
    assert_eq!(plan["changed"], true);
    // Generous bound: this is a smoke check, the goal lives in BENCHMARKS.md.
    assert!(elapsed.as_secs() < 10, "{elapsed:?}");
    let unused: Vec<&str> = plan["unused"].as_array().unwrap().iter().map(|u| u["path"].as_str().unwrap()).collect();
    for want in ["spec.edge.geoRouting", "spec.postgres.citus"] {
        assert!(unused.contains(&want), "{want} should be reported as not used on local: {unused:?}");
    }
    let text_plan = home.expect(1, &["plan", "--level", "6", "--exit-code"]);
    let out = text(&text_plan.stdout);
    assert!(out.contains("+ postgres/r1-pg-1") && out.contains("to create"), "{out}");
    assert!(out.contains("Not used on the local target:\n") && out.contains("  spec.edge.geoRouting (true): "), "{out}");
}

#[test]
fn a_postgres_version_that_is_not_installed_is_refused_before_anything_starts() {
    let home = Home::new();
    let env = home.env("v99");
    let out = home.expect(2, &["up", "--level", "1", "--env", &env, "--set", "spec.postgres.version=99"]);
    let err = text(&out.stderr);
    assert!(err.contains("PostgreSQL 99 (spec.postgres.version) is not installed; found "), "{err}");
    assert!(err.contains("Install postgresql-99, or set spec.postgres.version to \""), "{err}");
    assert!(!home.env_dir(&env).exists(), "nothing was created");
}

#[test]
fn up_of_a_level_the_local_target_cannot_run_yet_fails_early_and_clearly() {
    let home = Home::new();
    let env = home.env("l6");
    let out = home.expect(2, &["up", "--level", "6", "--env", &env]);
    let err = text(&out.stderr);
    assert!(err.contains("level 6 does not run on the local target") && err.contains("Citus"), "{err}");
    assert!(!home.env_dir(&env).exists(), "nothing was created");
}

#[test]
fn validate_reports_each_file_and_schema_is_json_schema() {
    let home = Home::new();
    let dir = home.root.parent().unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, scalectl_level(1)).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, scalectl_level(1).replace("kind: Environment", "kind: Enviroment")).unwrap();
    let out = home.expect(1, &["validate", good.to_str().unwrap(), bad.to_str().unwrap()]);
    let report = text(&out.stdout);
    assert!(report.contains(&format!("{}: valid", good.display())), "{report}");
    assert!(report.contains(&format!("{}:", bad.display())) && report.contains("did you mean `Environment`?"), "{report}");
    home.expect(0, &["validate", "--level", "4", "--set", "spec.shop.workers=3"]);

    let schema: Value = serde_json::from_slice(&home.expect(0, &["schema"]).stdout).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn levels_explain_doctor_render_and_completions_answer() {
    let home = Home::new();
    let levels = home.json(&["levels"]);
    assert_eq!(levels["levels"].as_array().unwrap().len(), 6);
    let explain = text(&home.expect(0, &["explain", "--level", "3"]).stdout);
    assert!(explain.contains("over level 2") && explain.contains("Patroni"), "{explain}");
    home.expect(2, &["explain", "--level", "7"]);

    let doctor = home.run(&["doctor", "--level", "1", "-o", "json"]);
    let d: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(doctor.status.code(), Some(if d["ok"] == true { 0 } else { 1 }));
    assert!(d["programs"].as_array().unwrap().iter().any(|p| p["program"] == "initdb"));

    let out = home.root.parent().unwrap().join("rendered");
    home.expect(0, &["render", "--level", "2", "--out", out.to_str().unwrap(), "-q"]);
    let conf = std::fs::read_to_string(out.join("postgres-r1-pg-1/postgresql.conf")).unwrap();
    assert!(conf.contains("shared_preload_libraries = 'pg_stat_statements'"), "{conf}");
    let prom = std::fs::read_to_string(out.join("prometheus-main/prometheus.yml")).unwrap();
    assert!(prom.contains("job_name: shop"), "{prom}");

    let comp = home.expect(0, &["completions", "bash"]);
    assert!(text(&comp.stdout).contains("scalectl"));
    home.expect(2, &["status", "--env", "no-such-env"]);
}

fn scalectl_level(n: u8) -> String {
    std::fs::read_to_string(format!("{}/environments/level-{n}.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// From level 4 the shop runs as one pool per role: the edge must send each role's paths
/// to its pool, by the table the shop binary itself reports, and HAProxy must accept it.
#[test]
fn level_4s_edge_routes_each_roles_paths_to_its_pool_by_the_shops_own_table() {
    let home = Home::new();
    let out = home.root.parent().unwrap().join("rendered-4");
    home.expect(0, &["render", "--level", "4", "--out", out.to_str().unwrap(), "-q"]);
    let cfg_path = out.join("haproxy-r1/haproxy.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let shop = std::path::Path::new(support::BIN).with_file_name("shop");
    let routes = std::process::Command::new(&shop).args(["routes", "-o", "json"]).output().expect("running shop routes");
    assert!(routes.status.success(), "{}", text(&routes.stderr));
    let table: Value = serde_json::from_slice(&routes.stdout).unwrap();
    let roles = table["roles"].as_object().unwrap();
    assert_eq!(roles.len(), 5, "{table}");
    for (role, prefixes) in roles {
        let prefixes: Vec<&str> = prefixes.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(cfg.contains(&format!("acl role_{role} path {}\n", prefixes.join(" "))), "{role}: {cfg}");
        let beneath: Vec<String> = prefixes.iter().map(|p| format!("{p}/")).collect();
        assert!(cfg.contains(&format!("acl role_{role} path_beg {}\n", beneath.join(" "))), "{role}: {cfg}");
        assert!(cfg.contains(&format!("use_backend shops_{role} if role_{role}\n")), "{role}: {cfg}");
        // The role's backend holds its pool's shops and no other role's.
        let backend = cfg.split(&format!("backend shops_{role}\n")).nth(1).unwrap().split("\nbackend ").next().unwrap();
        let servers: Vec<&str> = backend.lines().filter_map(|l| l.trim().strip_prefix("server ")).map(|s| s.split(' ').next().unwrap()).collect();
        assert!(!servers.is_empty() && servers.iter().all(|s| s.starts_with(&format!("r1-{role}-"))), "{role}: {servers:?}");
    }
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("haproxy");
    let check = std::process::Command::new(haproxy).arg("-c").arg("-f").arg(&cfg_path).output().expect("running haproxy -c");
    assert!(check.status.success(), "haproxy refuses the edge's config: {}{}", text(&check.stdout), text(&check.stderr));
    // Levels 1 to 3 run the monolith: no routing, and no need for the shop's table.
    home.expect(0, &["render", "--level", "3", "--out", home.root.parent().unwrap().join("rendered-3").to_str().unwrap(), "-q"]);
    let level3 = std::fs::read_to_string(home.root.parent().unwrap().join("rendered-3/haproxy-r1/haproxy.cfg")).unwrap();
    assert!(!level3.contains("use_backend") && level3.contains("default_backend shops"), "{level3}");
}
