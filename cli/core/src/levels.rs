//! The six built-in levels: their manifests (compiled in from `environments/`) and, for
//! students, what each adds over the one below and why.

/// A built-in level.
pub struct Level {
    pub number: u8,
    /// Where the manifest lives in the repository; used to name it in diagnostics.
    pub file: &'static str,
    pub manifest: &'static str,
    pub title: &'static str,
    pub stage: &'static str,
    /// What the level adds, each with the reason.
    pub adds: &'static [(&'static str, &'static str)],
}

pub const LEVELS: [Level; 6] = [
    Level {
        number: 1,
        file: "environments/level-1.yaml",
        manifest: include_str!("../../../environments/level-1.yaml"),
        title: "MVP on one machine",
        stage: "solo developer, ~1,000 daily users",
        adds: &[
            (
                "one PostgreSQL server",
                "one node keeps every order in one place; at 10 RPS a single server is idle most of the time, and simplicity is worth more than redundancy",
            ),
            ("one shop process serving every role", "nothing to coordinate: a monolith is the cheapest thing that works"),
            ("an outbox worker", "notifications leave through the outbox from day one, so an order is never acknowledged without its event"),
            (
                "Prometheus scraping the shop",
                "you cannot improve what you do not measure; request rate, latency and errors per route are the first three graphs",
            ),
        ],
    },
    Level {
        number: 2,
        file: "environments/level-2.yaml",
        manifest: include_str!("../../../environments/level-2.yaml"),
        title: "small production",
        stage: "seed stage, ~10,000 daily users",
        adds: &[
            (
                "PgBouncer in transaction mode",
                "PostgreSQL spends a process per connection; a pooler lets hundreds of client connections share a few server ones",
            ),
            (
                "two shop instances behind HAProxy",
                "one instance can be restarted or lost without an outage; HAProxy checks /readyz and sends traffic only to ready ones",
            ),
            ("pg_stat_statements and indexes checked by EXPLAIN", "at 100 RPS the first slow query appears; find it by total time, then index it"),
            (
                "exporters, dashboards and SLOs",
                "PostgreSQL, HAProxy and host metrics beside the shop's, and a written promise (p95, error ratio) to check them against",
            ),
        ],
    },
    Level {
        number: 3,
        file: "environments/level-3.yaml",
        manifest: include_str!("../../../environments/level-3.yaml"),
        title: "write scale and high availability",
        stage: "series A-B, ~100,000 daily users",
        adds: &[
            (
                "three PostgreSQL nodes under Patroni with etcd",
                "losing the primary must not lose orders or need a human: Patroni elects a new leader in seconds",
            ),
            (
                "two synchronous standbys",
                "a commit is acknowledged only once both standbys have it, so a failover loses no acknowledged order (RPO 0), and losing one standby leaves the other able to take over",
            ),
            ("reads on the standbys", "catalog and order-history reads move off the primary, which keeps its capacity for writes"),
            ("orders partitioned by month", "old months can be detached and archived, and recent ones stay small and hot in memory"),
            ("WAL and checkpoint tuning", "fewer, larger checkpoints and compressed WAL smooth write bursts"),
            ("Redis for cache, rate limits and the flash-sale gate", "hot product reads and sold-out answers stop reaching PostgreSQL at all"),
        ],
    },
    Level {
        number: 4,
        file: "environments/level-4.yaml",
        manifest: include_str!("../../../environments/level-4.yaml"),
        title: "growth: split by role",
        stage: "post series C, ~1M daily users",
        adds: &[
            (
                "the shop split into auth, catalog, cart, orders and flash processes",
                "a login storm burns CPU on password hashing; in its own processes it cannot stall checkout",
            ),
            ("more replicas and replica-lag and cache-hit metrics", "reads scale out, and you watch how stale they are and how much the cache saves"),
            ("Kubernetes and VPC layouts", "the same topology as objects a platform team runs: namespaces, private subnets, autoscaling"),
        ],
    },
    Level {
        number: 5,
        file: "environments/level-5.yaml",
        manifest: include_str!("../../../environments/level-5.yaml"),
        title: "pre-global scale",
        stage: "~10M daily users",
        adds: &[
            ("read and write paths split end to end", "writes go through the pooler to the leader; reads through their own balancer to replicas"),
            ("token-bucket rate limits in Redis", "limits hold across every instance, not per process"),
            (
                "a broker (Redis Streams) with worker pools by priority and a dead-letter queue",
                "slow side effects leave the request path, each priority has consumers of its own so a backlog of notifications does not hold up payment follow-ups, and a poison message cannot block the rest",
            ),
            (
                "SLO burn-rate alerts and chaos gates",
                "you are paged when the error budget burns too fast, and a level only counts when its chaos experiments pass",
            ),
        ],
    },
    Level {
        number: 6,
        file: "environments/level-6.yaml",
        manifest: include_str!("../../../environments/level-6.yaml"),
        title: "global distribution",
        stage: "~100M+ daily users",
        adds: &[
            ("Citus shards distributed by user", "one primary cannot take every write; sharding by user keeps each user's orders on one node"),
            (
                "several regions with geo-routing and regional failover",
                "users reach the nearest region, and losing a region moves them instead of failing them",
            ),
            ("an asynchronous event log between regions", "cross-region work happens from the log, so a slow ocean link never holds a checkout"),
            ("partition and node-loss chaos", "at this scale something is always broken; experiments prove the guarantees still hold"),
        ],
    },
];

/// The built-in level `n`, if there is one.
pub fn level(n: u8) -> Option<&'static Level> {
    LEVELS.iter().find(|l| l.number == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topology;
    use crate::manifest::Sources;

    #[test]
    fn every_builtin_level_is_valid_and_has_a_topology() {
        for l in &LEVELS {
            let m = Sources::new(l.file, l.manifest)
                .load()
                .unwrap_or_else(|errs| panic!("{}: {}", l.file, errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")));
            assert_eq!(m.metadata.level, l.number, "{}", l.file);
            let t = Topology::from_manifest(&m);
            assert_eq!(t.level, l.number);
            assert!(!t.clusters.is_empty() && !t.shop.pools.is_empty(), "{}", l.file);
        }
    }

    #[test]
    fn each_level_keeps_what_the_one_below_guarantees() {
        let load = |n: u8| Sources::new("x", level(n).unwrap().manifest).load().unwrap();
        for n in 2..=6u8 {
            let (lo, hi) = (load(n - 1), load(n));
            assert!(hi.spec.target_load.rps > lo.spec.target_load.rps, "level {n} serves more");
            let standbys = |m: &crate::Manifest| m.spec.postgres.replicas.synchronous;
            assert!(standbys(&hi) >= standbys(&lo), "level {n} keeps synchronous replication");
            assert!(hi.spec.redis.enabled || !lo.spec.redis.enabled, "level {n} keeps redis");
        }
    }
}
