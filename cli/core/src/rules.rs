//! Rules that span several fields of a manifest, which a schema cannot express: a level's
//! parts must fit together (replicas need HA, several shop processes need a balancer, …).

use std::collections::BTreeSet;

use crate::manifest::{HaMode, LoadBalancer, Manifest, RoleName, Topology};
use crate::units::Duration;

/// Every rule broken, as (key path, message).
pub fn check(m: &Manifest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |path: &str, msg: String| out.push((path.to_string(), msg));
    let s = &m.spec;

    if !(1..=6).contains(&m.metadata.level) {
        bad("metadata.level", format!("level must be 1 to 6, found {}", m.metadata.level));
    }
    if s.regions.is_empty() {
        bad("spec.regions", "at least one region is needed".into());
    }
    let primaries = s.regions.iter().filter(|r| r.primary).count();
    if !s.regions.is_empty() && primaries != 1 {
        bad("spec.regions", format!("exactly one region must have `primary: true`, found {primaries}"));
    }
    let mut names = BTreeSet::new();
    for (i, r) in s.regions.iter().enumerate() {
        if !is_dns_label(&r.name) {
            bad(&format!("spec.regions.{i}.name"), format!("`{}` must be lowercase letters, digits and `-`", r.name));
        }
        if !names.insert(&r.name) {
            bad(&format!("spec.regions.{i}.name"), format!("region `{}` is listed twice", r.name));
        }
    }
    if s.regions.len() > 4 {
        bad("spec.regions", format!("at most 4 regions are supported, found {}", s.regions.len()));
    }

    let pg = &s.postgres;
    let standbys = pg.replicas.synchronous + pg.replicas.asynchronous;
    if standbys > 0 && pg.ha == HaMode::None {
        bad("spec.postgres.ha", format!("{standbys} replica(s) need `ha: patroni` to follow and replace the primary"));
    }
    if s.regions.len() > 1 && pg.ha == HaMode::None {
        bad(
            "spec.postgres.ha",
            format!(
                "{} regions need `ha: patroni`: the replica each other region reads from is a Patroni member that follows the primary",
                s.regions.len()
            ),
        );
    }
    if pg.ha == HaMode::Patroni && pg.replicas.synchronous == 0 && pg.replicas.asynchronous == 0 {
        bad("spec.postgres.replicas", "`ha: patroni` needs at least one replica to fail over to".into());
    }
    let f = &pg.failover;
    if f.loop_wait + 2 * f.retry_timeout > f.ttl {
        bad(
            "spec.postgres.failover.ttl",
            format!(
                "{} s is too short for loopWait {} + 2 × retryTimeout {} = {} s: a slow Patroni loop could outlive the leader lock",
                f.ttl,
                f.loop_wait,
                f.retry_timeout,
                f.loop_wait + 2 * f.retry_timeout
            ),
        );
    }
    if pg.pooler.default_pool_size > pg.pooler.max_client_conn {
        bad(
            "spec.postgres.pooler.defaultPoolSize",
            format!("{} is more than maxClientConn {}", pg.pooler.default_pool_size, pg.pooler.max_client_conn),
        );
    }
    let checkpoint = pg.wal.checkpoint_timeout;
    if !(Duration::from_secs(30)..=Duration::from_secs(86_400)).contains(&checkpoint) {
        bad("spec.postgres.wal.checkpointTimeout", format!("{checkpoint} is outside PostgreSQL's range for it, 30s to 1d"));
    }
    if pg.citus.enabled && pg.citus.workers == 0 {
        bad("spec.postgres.citus.workers", "citus needs at least one worker".into());
    }
    if !pg.version.chars().all(|c| c.is_ascii_digit()) || pg.version.is_empty() {
        bad("spec.postgres.version", format!("`{}` is not a major version such as 15", pg.version));
    }

    if !s.redis.uses.is_empty() && !s.redis.enabled {
        bad("spec.redis.enabled", "redis is used (`uses` is not empty) but not enabled".into());
    }

    let shop = &s.shop;
    if shop.roles.is_empty() {
        bad("spec.shop.roles", "at least one role is needed, such as `- name: all`".into());
    }
    let mut seen = BTreeSet::new();
    for (i, role) in shop.roles.iter().enumerate() {
        if !seen.insert(role.name) {
            bad(&format!("spec.shop.roles.{i}.name"), format!("role `{}` is listed twice", role.name.as_str()));
        }
        if let (Some(request), Some(limit)) = (role.cpu, role.cpu_limit)
            && limit < request
        {
            bad(
                &format!("spec.shop.roles.{i}.cpuLimit"),
                format!("{limit} is below the role's cpu of {request}: a process could never use what it is entitled to"),
            );
        }
    }
    let has_all = seen.contains(&RoleName::All);
    match shop.topology {
        Topology::Monolith if shop.roles.len() != 1 || !has_all => {
            bad("spec.shop.roles", "a monolith runs exactly one role, `all`".into());
        }
        Topology::Split if has_all => {
            bad("spec.shop.roles", "a split topology names its roles; `all` belongs to a monolith".into());
        }
        Topology::Split => {
            for needed in [RoleName::Auth, RoleName::Catalog, RoleName::Orders] {
                if !seen.contains(&needed) {
                    bad("spec.shop.roles", format!("a split topology needs role `{}`", needed.as_str()));
                }
            }
        }
        Topology::Monolith => {}
    }
    let processes: u32 = shop.roles.iter().map(|r| u32::from(r.replicas)).sum();
    if processes > 1 && s.edge.load_balancer == LoadBalancer::None {
        bad("spec.edge.loadBalancer", format!("{processes} shop processes need a load balancer such as `haproxy`"));
    }
    if shop.read_from_replicas && standbys == 0 && !pg.citus.enabled {
        bad("spec.shop.readFromReplicas", "reads can go to replicas only when spec.postgres.replicas has some".into());
    }
    if shop.db_pool_size * processes > pg.settings.max_connections && pg.pooler.kind == crate::manifest::PoolerKind::None {
        bad(
            "spec.shop.dbPoolSize",
            format!(
                "{processes} shop processes × {} connections exceed max_connections {} without a pooler",
                shop.db_pool_size, pg.settings.max_connections
            ),
        );
    }
    if s.broker.is_some() && shop.workers == 0 {
        bad("spec.broker", "a broker needs workers to consume it: set spec.shop.workers to at least 1".into());
    }

    let prom = &s.observability.prometheus;
    if prom.scrape_interval.is_zero() {
        bad("spec.observability.prometheus.scrapeInterval", "must be longer than 0s, such as 15s".into());
    }
    if prom.retention.is_zero() {
        bad("spec.observability.prometheus.retention", "must be longer than 0s, such as 1d".into());
    }
    if s.slos.latency_p99_ms < s.slos.latency_p95_ms {
        bad("spec.slos.latencyP99Ms", format!("p99 ({} ms) cannot be below p95 ({} ms)", s.slos.latency_p99_ms, s.slos.latency_p95_ms));
    }
    if s.workload.duration.is_zero() {
        bad("spec.workload.duration", "must be longer than 0s, such as 60s".into());
    }
    let total = s.workload.mix.total();
    if total != 100 {
        bad("spec.workload.mix", format!("shares must add up to 100, found {total}"));
    }
    if let Some(k) = &s.targets.kubernetes {
        for region in k.contexts.keys() {
            if !s.regions.iter().any(|r| &r.name == region) {
                bad(&format!("spec.targets.kubernetes.contexts.{region}"), format!("`{region}` is not a region of spec.regions"));
            }
        }
    }
    if let Some(a) = &s.targets.aws {
        for r in &s.regions {
            if !a.regions.contains_key(&r.name) {
                bad("spec.targets.aws.regions", format!("region `{}` has no AWS region", r.name));
            }
        }
    }
    out
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') && !s.starts_with('-')
}
