//! The topology: what an environment is made of, derived from a validated manifest with
//! no I/O and no target in mind. Regions; database clusters (one per shard group, each
//! with its members, their roles and its home region); poolers; caches; shop pools per
//! role; workers; edge balancers; observability. Each target expands it into its own
//! resources (`expand` for `local`), and [`unused`] names the manifest fields a target
//! does not act on, so that nothing is silently ignored.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::manifest::{
    Balance, Exporter, Failover, HaMode, Manifest, PartitionScheme, PoolMode, PoolerKind, Rate, RateLimits, RedisUse, RoleName, SynchronousCommit,
};
use crate::target::Target;
use crate::units::{ByteSize, Duration};

/// The name of the one database cluster of levels 1 to 5; its parts keep the ids they
/// had before clusters were named (`postgres/r1-pg-1`, `etcd/r1`, `pgbouncer/r1`).
pub const MAIN_CLUSTER: &str = "main";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    pub level: u8,
    pub regions: Vec<Site>,
    pub clusters: Vec<DbCluster>,
    /// The shop's database, created on every cluster's primary.
    pub database: AppDatabase,
    pub poolers: Vec<DbPooler>,
    pub caches: Vec<Cache>,
    /// The message broker order events travel through, in the primary region, where the
    /// workers run against the writable database; `None` below level 5.
    pub broker: Option<BrokerPlan>,
    pub shop: ShopTier,
    pub edges: Vec<EdgeBalancer>,
    pub observability: Observability,
}

/// A message broker and how every worker process consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerPlan {
    pub region: String,
    pub kind: crate::manifest::BrokerKind,
    pub max_attempts: u8,
    pub concurrency: crate::manifest::BrokerConcurrency,
    pub maxmemory: ByteSize,
}

/// A region and where it sits in the manifest's list (its index places it on `local`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub name: String,
    pub index: usize,
    /// The region that holds the writable primaries.
    pub primary: bool,
    pub zones: u8,
}

/// One PostgreSQL cluster: a primary, its standbys in the home region, and read replicas
/// in the other regions. Sharded levels have several; each has its own consensus scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbCluster {
    pub name: String,
    pub home_region: String,
    /// Patroni-style automatic failover, with its timing; `None` for a single server.
    pub ha: Option<Failover>,
    /// Standbys that confirm each commit (RPO 0 when above zero).
    pub synchronous: u8,
    /// In order: the primary first, then synchronous standbys, asynchronous replicas,
    /// and one replica per other region.
    pub members: Vec<DbMember>,
    pub server: PgServer,
    /// Shards on worker nodes (Citus), when the level distributes tables.
    pub sharding: Option<Sharding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbMember {
    pub region: String,
    /// 1-based within its region.
    pub ordinal: u8,
    pub role: MemberRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberRole {
    Primary,
    SyncStandby,
    AsyncReplica,
    /// An asynchronous replica in another region: serves local reads, never leads, never
    /// confirms a commit.
    RemoteReplica,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "primary",
            MemberRole::SyncStandby => "sync-standby",
            MemberRole::AsyncReplica | MemberRole::RemoteReplica => "async-replica",
        }
    }
}

impl DbCluster {
    /// Standbys in the home region (synchronous and asynchronous).
    pub fn local_standbys(&self) -> usize {
        self.members.iter().filter(|m| matches!(m.role, MemberRole::SyncStandby | MemberRole::AsyncReplica)).count()
    }

    pub fn home_members(&self) -> impl Iterator<Item = &DbMember> {
        self.members.iter().filter(|m| m.role != MemberRole::RemoteReplica)
    }

    pub fn remote_members(&self) -> impl Iterator<Item = &DbMember> {
        self.members.iter().filter(|m| m.role == MemberRole::RemoteReplica)
    }
}

/// How every server of a cluster is configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PgServer {
    pub version: String,
    pub max_connections: u32,
    pub shared_buffers: ByteSize,
    pub work_mem: ByteSize,
    pub effective_cache_size: ByteSize,
    pub wal_compression: bool,
    pub max_wal_size: ByteSize,
    pub checkpoint_timeout: Duration,
    pub synchronous_commit: SynchronousCommit,
    /// In load order.
    pub shared_preload_libraries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sharding {
    pub workers: u8,
    pub shard_count: u32,
    pub distribution_column: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppDatabase {
    pub name: String,
    pub owner: String,
    pub extensions: Vec<String>,
    pub partition_orders: PartitionScheme,
    /// Monthly partitions kept ahead, as the manifest says (used when partitioned).
    pub premake: u8,
}

impl AppDatabase {
    /// Partitions the shop's migration and worker keep ahead: none unless partitioned.
    pub fn partitions_ahead(&self) -> u8 {
        match self.partition_orders {
            PartitionScheme::Monthly => self.premake,
            PartitionScheme::None => 0,
        }
    }
}

/// A connection pooler in front of one cluster, in its home region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbPooler {
    pub cluster: String,
    pub region: String,
    pub mode: PoolMode,
    pub default_pool_size: u32,
    pub max_client_conn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cache {
    pub region: String,
    pub maxmemory: ByteSize,
    pub replicas: u8,
    pub uses: Vec<RedisUse>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShopTier {
    pub pools: Vec<ShopPool>,
    pub workers: Vec<WorkerPool>,
    /// Database connections per shop process.
    pub db_pool_size: u32,
    pub read_from_replicas: bool,
    pub rate_limits: RateLimits,
}

/// `replicas` processes serving `role` in `region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShopPool {
    pub region: String,
    pub role: RoleName,
    pub replicas: u8,
    /// What each process is entitled to and may use (the manifest's role `cpu` and
    /// `memory`); unset, the target's default.
    pub cpu: Option<crate::units::Cpu>,
    pub cpu_limit: Option<crate::units::Cpu>,
    pub memory: Option<ByteSize>,
}

/// Outbox workers in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerPool {
    pub region: String,
    pub replicas: u8,
}

/// The load balancer in front of one region's shops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeBalancer {
    pub region: String,
    pub balance: Balance,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observability {
    pub prometheus: Option<PrometheusPlan>,
    pub exporters: BTreeSet<Exporter>,
    pub slos: Slos,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrometheusPlan {
    /// Prometheus runs in the primary region and scrapes every region.
    pub region: String,
    pub scrape_interval: Duration,
    pub retention: Duration,
    /// Multi-window burn-rate alerts on the SLOs.
    pub burn_rate_alerts: bool,
}

/// The objectives alert rules are written against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slos {
    pub availability: f64,
    pub error_ratio: f64,
    pub latency_p95_ms: u32,
    pub latency_p99_ms: u32,
}

impl Topology {
    /// The topology a validated manifest describes. Pure; `manifest` must have passed
    /// validation (one primary region, at least one role).
    pub fn from_manifest(m: &Manifest) -> Topology {
        let s = &m.spec;
        let regions: Vec<Site> =
            s.regions.iter().enumerate().map(|(index, r)| Site { name: r.name.clone(), index, primary: r.primary, zones: r.zones }).collect();
        let home = regions.iter().find(|r| r.primary).unwrap_or(&regions[0]).name.clone();
        let pg = &s.postgres;

        let mut members = vec![DbMember { region: home.clone(), ordinal: 1, role: MemberRole::Primary }];
        let standbys = std::iter::repeat_n(MemberRole::SyncStandby, pg.replicas.synchronous.into())
            .chain(std::iter::repeat_n(MemberRole::AsyncReplica, pg.replicas.asynchronous.into()));
        for (i, role) in standbys.enumerate() {
            members.push(DbMember { region: home.clone(), ordinal: i as u8 + 2, role });
        }
        for r in regions.iter().filter(|r| r.name != home) {
            members.push(DbMember { region: r.name.clone(), ordinal: 1, role: MemberRole::RemoteReplica });
        }
        let mut preload = Vec::new();
        if pg.citus.enabled {
            preload.push("citus".to_string());
        }
        if pg.extensions.iter().any(|e| e == "pg_stat_statements") {
            preload.push("pg_stat_statements".to_string());
        }
        let server = PgServer {
            version: pg.version.clone(),
            max_connections: pg.settings.max_connections,
            shared_buffers: pg.settings.shared_buffers,
            work_mem: pg.settings.work_mem,
            effective_cache_size: pg.settings.effective_cache_size,
            wal_compression: pg.wal.wal_compression,
            max_wal_size: pg.wal.max_wal_size,
            checkpoint_timeout: pg.wal.checkpoint_timeout,
            synchronous_commit: pg.wal.synchronous_commit,
            shared_preload_libraries: preload,
        };
        let sharding = (pg.citus.enabled || pg.citus.workers > 0).then(|| Sharding {
            workers: pg.citus.workers,
            shard_count: pg.citus.shard_count,
            distribution_column: pg.citus.distribution_column.clone(),
        });
        let cluster = DbCluster {
            name: MAIN_CLUSTER.into(),
            home_region: home.clone(),
            ha: (pg.ha == HaMode::Patroni).then(|| pg.failover.clone()),
            synchronous: pg.replicas.synchronous,
            members,
            server,
            sharding,
        };
        let poolers = match pg.pooler.kind {
            PoolerKind::Pgbouncer => vec![DbPooler {
                cluster: MAIN_CLUSTER.into(),
                region: home.clone(),
                mode: pg.pooler.mode,
                default_pool_size: pg.pooler.default_pool_size,
                max_client_conn: pg.pooler.max_client_conn,
            }],
            PoolerKind::None => Vec::new(),
        };
        let caches = if s.redis.enabled {
            regions
                .iter()
                .map(|r| Cache { region: r.name.clone(), maxmemory: s.redis.maxmemory, replicas: s.redis.replicas, uses: s.redis.uses.clone() })
                .collect()
        } else {
            Vec::new()
        };
        let pools = regions
            .iter()
            .flat_map(|r| {
                s.shop.roles.iter().map(|role| ShopPool {
                    region: r.name.clone(),
                    role: role.name,
                    replicas: role.replicas,
                    cpu: role.cpu,
                    cpu_limit: role.cpu_limit,
                    memory: role.memory,
                })
            })
            .collect();
        let workers = regions.iter().map(|r| WorkerPool { region: r.name.clone(), replicas: s.shop.workers }).collect();
        let edges = match s.edge.load_balancer {
            crate::manifest::LoadBalancer::Haproxy => {
                regions.iter().map(|r| EdgeBalancer { region: r.name.clone(), balance: s.edge.balance }).collect()
            }
            crate::manifest::LoadBalancer::None => Vec::new(),
        };
        let prom = &s.observability.prometheus;
        Topology {
            level: m.metadata.level,
            regions,
            clusters: vec![cluster],
            database: AppDatabase {
                name: "shop".into(),
                owner: "shop".into(),
                extensions: pg.extensions.clone(),
                partition_orders: pg.partitioning.orders,
                premake: pg.partitioning.premake,
            },
            poolers,
            caches,
            broker: s.broker.as_ref().map(|b| BrokerPlan {
                region: home.clone(),
                kind: b.kind,
                max_attempts: b.max_attempts,
                concurrency: b.concurrency,
                maxmemory: b.maxmemory,
            }),
            shop: ShopTier {
                pools,
                workers,
                db_pool_size: s.shop.db_pool_size,
                read_from_replicas: s.shop.read_from_replicas,
                rate_limits: s.edge.rate_limits.clone(),
            },
            edges,
            observability: Observability {
                prometheus: prom.enabled.then(|| PrometheusPlan {
                    region: home.clone(),
                    scrape_interval: prom.scrape_interval,
                    retention: prom.retention,
                    burn_rate_alerts: s.observability.burn_rate_alerts,
                }),
                exporters: s.observability.exporters.iter().copied().collect(),
                slos: Slos {
                    availability: s.slos.availability,
                    error_ratio: s.slos.error_ratio,
                    latency_p95_ms: s.slos.latency_p95_ms,
                    latency_p99_ms: s.slos.latency_p99_ms,
                },
            },
        }
    }

    pub fn primary_region(&self) -> &Site {
        self.regions.iter().find(|r| r.primary).unwrap_or(&self.regions[0])
    }

    pub fn site(&self, name: &str) -> Option<&Site> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn cache_in(&self, region: &str) -> Option<&Cache> {
        self.caches.iter().find(|c| c.region == region)
    }

    pub fn pooler_of(&self, cluster: &str) -> Option<&DbPooler> {
        self.poolers.iter().find(|p| p.cluster == cluster)
    }

    /// Shop processes in every region together.
    pub fn shop_processes(&self) -> u32 {
        self.shop.pools.iter().map(|p| u32::from(p.replicas)).sum()
    }
}

/// A manifest field that the chosen target does not act on, with why; `plan` and `up`
/// show these so that a setting that looks effective but is not is never a surprise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unused {
    /// Key path, as in validation messages (`spec.redis.replicas`).
    pub path: String,
    pub value: String,
    pub why: String,
}

/// The fields of `m` that `target` does not act on. Only fields set to something that
/// would change the result are listed: `zones: 1` on one machine is not a surprise.
pub fn unused(m: &Manifest, target: Target) -> Vec<Unused> {
    let s = &m.spec;
    let mut out = Vec::new();
    let mut note = |path: &str, value: String, why: &str| out.push(Unused { path: path.into(), value, why: why.into() });
    match target {
        Target::Local => {}
        Target::Kubernetes => {
            unused_on_kubernetes(m, &mut note);
            return out;
        }
        Target::Aws => return out,
    }
    for (i, r) in s.regions.iter().enumerate() {
        if r.zones > 1 {
            note(&format!("spec.regions.{i}.zones"), r.zones.to_string(), "one machine is one zone; nodes are spread over loopback addresses");
        }
    }
    if s.network.private_data_tier {
        note(
            "spec.network.privateDataTier",
            "true".into(),
            "the local target does not firewall the data tier yet; every process listens on the environment's loopback block",
        );
    }
    if s.edge.geo_routing {
        note("spec.edge.geoRouting", "true".into(), "the local target has no geo-routing between regions");
    }
    if s.observability.dashboards {
        note(
            "spec.observability.dashboards",
            "true".into(),
            "Grafana is not packaged for this machine; the dashboards in dashboards/ can be imported into one by hand",
        );
    }
    if s.observability.exporters.contains(&Exporter::Pgbouncer) {
        note(
            "spec.observability.exporters",
            "pgbouncer".into(),
            "the packaged pgbouncer exporter cannot read PgBouncer 1.18's SHOW STATS; pool use shows in the shop's metrics and `status`",
        );
    }
    let shop_uses = [RedisUse::Cache, RedisUse::RateLimit, RedisUse::FlashSaleGate];
    if s.redis.enabled && !shop_uses.iter().all(|u| s.redis.uses.contains(u)) {
        note(
            "spec.redis.uses",
            format!("{:?}", s.redis.uses),
            "the shop uses Redis for its cache, rate limits and flash-sale gate whenever Redis is enabled",
        );
    }
    if s.redis.uses.contains(&RedisUse::Queue) {
        note("spec.redis.uses", "queue".into(), "the queue is spec.broker, a Redis server of its own: the cache may evict, a broker must not");
    }
    if s.postgres.citus.enabled {
        note("spec.postgres.citus", "enabled".into(), "Citus is not packaged for this machine");
    }
    out
}

/// What the kubernetes target does not render yet, or cannot.
fn unused_on_kubernetes(m: &Manifest, note: &mut impl FnMut(&str, String, &str)) {
    let s = &m.spec;
    for (i, r) in s.regions.iter().enumerate().filter(|(_, r)| !r.primary) {
        note(
            &format!("spec.regions.{i}"),
            r.name.clone(),
            "only the home region is put on Kubernetes so far; replica clusters in other regions come next",
        );
    }
    if s.postgres.citus.enabled {
        note("spec.postgres.citus", "enabled".into(), "CloudNativePG's images carry no Citus; tables are not distributed");
    }
    if s.redis.replicas > 0 {
        note(
            "spec.redis.replicas",
            s.redis.replicas.to_string(),
            "the kubernetes target runs one Redis per region, without replicas or Sentinel, for now",
        );
    }
    if let Some(b) = &s.broker {
        note("spec.broker", b.kind.as_str().into(), "the kubernetes target renders no broker yet; its workers drain the outbox directly");
    }
    if s.edge.geo_routing {
        note("spec.edge.geoRouting", "true".into(), "geo-routing lives in front of the clusters (DNS), outside what scalectl applies");
    }
    if s.edge.load_balancer != crate::manifest::LoadBalancer::None {
        note(
            "spec.edge.balance",
            format!("{:?}", s.edge.balance).to_lowercase(),
            "the Ingress controller balances; its algorithm is its own setting",
        );
    }
    if s.observability.prometheus.enabled {
        note(
            "spec.observability.prometheus",
            "enabled".into(),
            "no Prometheus is rendered yet; pods carry the prometheus.io/scrape annotations a cluster's Prometheus discovers",
        );
    }
    if s.postgres.ha == HaMode::Patroni {
        note("spec.postgres.failover", "patroni timing".into(), "CloudNativePG's operator fails over on its own timing");
    }
}

/// How a rate limit reads in resource properties and plans: `per_second:burst` or `off`.
pub fn rate_text(r: &Option<Rate>) -> String {
    r.as_ref().map_or("off".to_string(), |r| format!("{}:{}", r.per_second, r.burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::level;
    use crate::manifest::Sources;

    fn topology(n: u8) -> Topology {
        let l = level(n).unwrap();
        Topology::from_manifest(&Sources::new(l.file, l.manifest).load().unwrap())
    }

    fn roles(c: &DbCluster) -> Vec<(&str, u8, MemberRole)> {
        c.members.iter().map(|m| (m.region.as_str(), m.ordinal, m.role)).collect()
    }

    use MemberRole::*;

    #[test]
    fn level_1_is_one_server_one_shop_no_pooler() {
        let t = topology(1);
        assert_eq!(t.regions.len(), 1);
        assert_eq!(t.clusters.len(), 1);
        let c = &t.clusters[0];
        assert_eq!(roles(c), [("r1", 1, Primary)]);
        assert!(c.ha.is_none());
        assert!(t.poolers.is_empty() && t.caches.is_empty() && t.edges.is_empty());
        assert_eq!(t.shop.pools, [ShopPool { region: "r1".into(), role: RoleName::All, replicas: 1, cpu: None, cpu_limit: None, memory: None }]);
        assert_eq!(t.shop_processes(), 1);
        assert!(t.observability.prometheus.is_some());
    }

    #[test]
    fn level_2_adds_a_pooler_and_a_balancer() {
        let t = topology(2);
        assert_eq!(roles(&t.clusters[0]), [("r1", 1, Primary)]);
        assert_eq!(t.poolers.len(), 1);
        assert_eq!(t.poolers[0].cluster, MAIN_CLUSTER);
        assert_eq!(t.edges.len(), 1);
        assert_eq!(t.shop_processes(), 2);
        assert!(t.database.extensions.contains(&"pg_stat_statements".to_string()));
        assert_eq!(t.clusters[0].server.shared_preload_libraries, ["pg_stat_statements"]);
    }

    #[test]
    fn level_3_is_an_ha_cluster_with_two_sync_standbys_and_redis() {
        let t = topology(3);
        let c = &t.clusters[0];
        assert_eq!(roles(c), [("r1", 1, Primary), ("r1", 2, SyncStandby), ("r1", 3, SyncStandby)]);
        assert_eq!(c.synchronous, 2);
        assert_eq!(c.ha.as_ref().map(|f| f.ttl), Some(8));
        assert_eq!(c.server.checkpoint_timeout, Duration::from_secs(900));
        assert_eq!(t.caches.len(), 1);
        assert_eq!(t.caches[0].maxmemory, ByteSize::mib(256));
        assert_eq!(t.database.partitions_ahead(), 3);
        assert!(t.shop.read_from_replicas);
    }

    #[test]
    fn level_4_splits_the_shop_into_role_pools() {
        let t = topology(4);
        let pools: Vec<(RoleName, u8)> = t.shop.pools.iter().map(|p| (p.role, p.replicas)).collect();
        assert_eq!(pools, [(RoleName::Auth, 2), (RoleName::Catalog, 3), (RoleName::Cart, 2), (RoleName::Orders, 3), (RoleName::Flash, 2)]);
        assert_eq!(t.clusters[0].local_standbys(), 3);
    }

    #[test]
    fn level_5_has_more_replicas_and_redis_replicas() {
        let t = topology(5);
        assert_eq!(t.clusters[0].local_standbys(), 4);
        assert_eq!(t.caches[0].replicas, 2);
        assert_eq!(t.shop_processes(), 22);
    }

    #[test]
    fn level_6_spans_three_regions_with_a_replica_and_shops_in_each() {
        let t = topology(6);
        let names: Vec<&str> = t.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["r1", "r2", "r3"]);
        let c = &t.clusters[0];
        assert_eq!(c.home_region, "r1");
        let remote: Vec<&str> = c.remote_members().map(|m| m.region.as_str()).collect();
        assert_eq!(remote, ["r2", "r3"]);
        assert_eq!(c.home_members().count(), 4);
        assert_eq!(c.sharding.as_ref().map(|s| (s.workers, s.shard_count)), Some((4, 64)));
        assert_eq!(c.server.shared_preload_libraries, ["citus", "pg_stat_statements"]);
        assert_eq!(t.caches.len(), 3, "a cache per region");
        assert_eq!(t.edges.len(), 3, "a balancer per region");
        assert_eq!(t.shop.pools.iter().filter(|p| p.region == "r3").count(), 5);
        assert_eq!(t.observability.prometheus.as_ref().unwrap().region, "r1");
    }

    #[test]
    fn fields_local_does_not_act_on_are_named() {
        let l = level(3).unwrap();
        let m = Sources::new(l.file, l.manifest).load().unwrap();
        let paths: Vec<String> = unused(&m, Target::Local).into_iter().map(|u| u.path).collect();
        assert!(paths.contains(&"spec.regions.0.zones".to_string()), "{paths:?}");
        assert!(paths.contains(&"spec.network.privateDataTier".to_string()), "{paths:?}");
        let l = level(1).unwrap();
        let m = Sources::new(l.file, l.manifest).load().unwrap();
        assert_eq!(unused(&m, Target::Local), [], "level 1 sets nothing local ignores");
        let mut s = Sources::new(l.file, l.manifest);
        s.set("spec.redis.enabled=true").set("spec.redis.uses=[cache]");
        let u = unused(&s.load().unwrap(), Target::Local);
        assert_eq!(u.iter().map(|u| u.path.as_str()).collect::<Vec<_>>(), ["spec.redis.uses"], "{u:?}");
        let l = level(6).unwrap();
        let m = Sources::new(l.file, l.manifest).load().unwrap();
        let paths: Vec<String> = unused(&m, Target::Local).into_iter().map(|u| u.path).collect();
        for p in ["spec.edge.geoRouting", "spec.postgres.citus"] {
            assert!(paths.contains(&p.to_string()), "{p} missing from {paths:?}");
        }
        assert!(!paths.iter().any(|p| p == "spec.observability.burnRateAlerts"), "Alertmanager acts on it: {paths:?}");
    }
}
